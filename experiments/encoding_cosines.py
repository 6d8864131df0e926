"""What a LESS gradient sees of an example: the same MMLU question rendered four ways, each one's
per-example LoRA gradient against D_val's (issue 31's table).

    python experiments/encoding_cosines.py model=small pool=less_mix pool.max_per_source=300 \\
        target=mmlu data.root=../shared/data [cache_dir=...] [--checkpoint 1]

The overrides are those of a run whose warmup is in the cache (the `_small` setting above: run
``python run.py <overrides> stages=[prepare,warmup]`` first). With the selector and the warmup's
checkpoint (``--checkpoint``, default the first), each of MMLU's 285 D_val questions is rendered:

1. as D_val is encoded (``The answer is:`` then the answer letter, no EOS): D_val itself;
2. as a pool example encodes an assistant turn that is the letter alone (``C``, EOS labelled);
3. the same with the EOS unlabelled (``datastore.encoding.eos_label=false``);
4. as a pool example whose assistant turn is ``The answer is: C`` (EOS labelled).

Each example's plain gradient (unprojected, every LoRA matrix, unit-normalised) is taken, and the
table is the mean cosine of each rendering with the D_val items (row 1: D_val among itself, pairs
of distinct items), with a 95% bootstrap interval over questions. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def renderings(dval: list[dict]) -> dict[str, tuple[list[dict], bool, dict]]:
    """name -> (examples, completion_eos, encoding options)."""
    def pool(ex, content):
        return {"id": ex["id"], "messages": [ex["messages"][0], {"role": "assistant", "content": content}]}

    letter = [ex["messages"][1]["content"].strip() for ex in dval]
    return {
        "D_val items among themselves (answer \" A\" after \"The answer is:\")": (dval, False, {}),
        "answer encoded as the pool encodes it (assistant turn \"C\", EOS labelled)":
            ([pool(ex, c) for ex, c in zip(dval, letter)], True, {}),
        "the same without the EOS label": ([pool(ex, c) for ex, c in zip(dval, letter)], True, {"eos_label": False}),
        "assistant turn \"The answer is: C\", EOS labelled":
            ([pool(ex, f"The answer is: {c}") for ex, c in zip(dval, letter)], True, {}),
    }


def unit_gradients(model, tok, examples, completion_eos, options, max_length) -> np.ndarray:
    import torch

    from less.data.formats import Encoding, encode_examples
    from less.gradients.features import pad_batch
    from less.gradients.per_example import PerExampleGradients

    enc = encode_examples(examples, tok, max_length, completion_eos=completion_eos, truncation="left",
                          encoding=Encoding(**options))
    if len(enc) != len(examples):
        raise SystemExit(f"{len(examples) - len(enc)} examples lost their labels ({dict(enc.dropped)})")
    grads = PerExampleGradients(model)
    rows = []
    for s in range(0, len(enc), 16):
        idx = list(range(s, min(len(enc), s + 16)))
        out = grads(*pad_batch(enc, idx, tok.pad_token_id, torch.device("cpu")))
        rows.append(torch.cat([out[p].flatten(1) for p in sorted(out)], 1))
    grads.close()
    g = torch.cat(rows).double()
    return (g / g.norm(dim=1, keepdim=True)).numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=int, default=1, help="warmup epoch (default 1, the first)")
    p.add_argument("--bootstrap", type=int, default=1000)
    a, overrides = p.parse_known_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from peft import PeftModel

    from less.api import compose
    from less.data import targets
    from less.models import load_model, load_tokenizer
    from less.runner import Runner
    from less.stages.model import source

    cfg = compose([*overrides, "logger=none"])
    r = Runner(cfg, Path(tempfile.mkdtemp()), check=False)
    warm, sel = r.lookup("warmup"), r.lookup("selector")
    if not (warm.cached and sel.cached):
        raise SystemExit(f"the warmup of these overrides is not in the cache ({warm.dir}): run "
                         f"`python run.py {' '.join(overrides)} stages=[prepare,warmup]` first")
    from less.checkpoints import warmup_checkpoints

    ck = next((warm.dir / c["dir"] for c in warmup_checkpoints(warm.dir, cfg.datastore) if c["epoch"] == a.checkpoint),
              None)
    if ck is None:
        raise SystemExit(f"{warm.dir}: no checkpoint for epoch {a.checkpoint}")
    src = source(r.ctx, {"selector": sel}, "selector")
    tok = load_tokenizer(r.ctx.selector, src)
    import torch

    model = PeftModel.from_pretrained(load_model(r.ctx.selector, src, torch.device("cpu")), str(ck), is_trainable=True)
    model.eval()
    dval = targets.mmlu(Path(cfg.data.root))
    rows = {name: unit_gradients(model, tok, exs, eos, opts, cfg.datastore.max_length)
            for name, (exs, eos, opts) in renderings(dval).items()}
    d = next(iter(rows.values()))
    rng = np.random.default_rng(0)
    n = len(d)
    print(f"small model, warmup checkpoint {ck.name}, {n} MMLU D_val questions, LoRA gradients "
          f"({d.shape[1]:,} parameters, unprojected, unit-normalised); 95% bootstrap over questions\n")
    print("| pool example (same question format as MMLU's D_val) | mean cosine with D_val items | 95% interval |")
    print("|---|---|---|")
    for k, (name, x) in enumerate(rows.items()):
        cos = x @ d.T  # (questions, D_val items)
        if k == 0:
            np.fill_diagonal(cos, np.nan)
        per_q = np.nanmean(cos, axis=1)
        boot = [per_q[rng.integers(0, n, n)].mean() for _ in range(a.bootstrap)]
        lo, hi = np.percentile(boot, [2.5, 97.5])
        print(f"| {name} | {per_q.mean():.2f} | [{lo:.2f}, {hi:.2f}] |")


if __name__ == "__main__":
    main()

"""EK-FAC's cost per pool example against LESS's feature extraction, on the small model, in one run.

    python benchmarks/ekfac_cost.py --cache-dir /path/to/cache --data-root ../shared/data

The same selector (the small model, ``model=small``, looked up in the cache; ``--model tiny`` builds
the tiny one instead) with a fresh LoRA of the run's warmup settings (B drawn so that every
gradient is non-zero), the same N real pool examples (``less_mix``'s sources, encoded as the
datastore encodes them) and D_val (MMLU's 285 dev questions). Timed, interleaved over rounds
(median): LESS's extraction (one checkpoint, Adam features from random moments, projected to the
datastore's largest dim) and EK-FAC's two parts, the factors (covariances, eigendecomposition,
eigenvalue correction: two passes over the pool) and the pairwise scores (D_val's gradients, then
one pass over the pool). Prints seconds per pool example of each and the ratio
``ekfac_vs_less=<x>`` (EK-FAC's factors + scores over LESS's extraction per checkpoint).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch


def setup(a):
    from peft import LoraConfig, get_peft_model

    from less.api import compose
    from less.data import pools, targets
    from less.data.formats import encode_examples
    from less.models import load_model, load_tokenizer
    from less.runner import Runner

    over = [f"model={a.model}", f"data.root={a.data_root}", f"cache_dir={a.cache_dir}", "logger=none"]
    cfg = compose(over)
    art = Runner(cfg, Path(tempfile.mkdtemp()), check=False).get("selector")
    tok = load_tokenizer(cfg.model, str(art.dir))
    torch.manual_seed(0)
    lora = cfg.warmup.lora
    model = get_peft_model(load_model(cfg.model, str(art.dir), torch.device("cpu")),
                           LoraConfig(r=lora.r, lora_alpha=lora.alpha, target_modules=list(lora.target_modules)))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    model.eval()
    rows = []
    for name in ("dolly", "cot", "flan_v2", "oasst1"):
        rows += pools.RAW_SOURCES[name](Path(a.data_root), 0)[: a.n // 4]
    ds = cfg.datastore
    pool = encode_examples(rows, tok, ds.max_length, completion_eos=True, truncation="right")
    target = encode_examples(targets.mmlu(Path(a.data_root)), tok, ds.max_length, completion_eos=False,
                             truncation=ds.target_truncation)
    dim = max(ds.projection.dims)
    return cfg, model, tok, pool, target, dim


def less_extraction(cfg, model, tok, pool, dim) -> float:
    from less.gradients.features import FeatureExtractor

    g = torch.Generator().manual_seed(1)
    moments = {n: (torch.randn(p.shape, generator=g) * 1e-3, torch.rand(p.shape, generator=g) * 1e-6)
               for n, p in model.named_parameters() if p.requires_grad}
    ds = cfg.datastore
    t = time.perf_counter()
    ex = FeatureExtractor(model, pad_id=tok.pad_token_id, dims=[dim], seed=0, device=torch.device("cpu"),
                          moments=moments, token_budget=ds.token_budget, max_batch=ds.max_batch_size,
                          projection_batch=ds.projection.batch_size, cache_bytes=int(ds.projection.cache_gb * 2**30))
    try:
        ex.unscaled(pool, list(range(len(pool))))
    finally:
        ex.close()
    return time.perf_counter() - t


def ekfac(model, tok, pool, target, batch_size: int) -> tuple[float, float]:
    """(seconds fitting the factors, seconds scoring) on a copy of the model wrapped by kronfluence."""
    import copy

    from less.selection.ekfac import EncodedDataset, fit_factors, pairwise_scores, prepare

    wrapped, task = prepare(copy.deepcopy(model))
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        fit_factors(wrapped, task, EncodedDataset(pool, tok.pad_token_id), Path(d) / "f", cpu, batch_size=batch_size,
                    seed=0, max_examples=len(pool))
        t_fit = time.perf_counter() - t
        t = time.perf_counter()
        pairwise_scores(wrapped, task, EncodedDataset(target, tok.pad_token_id), EncodedDataset(pool, tok.pad_token_id),
                        Path(d) / "f", Path(d) / "s", cpu, batch_size=batch_size, damping=None)
        return t_fit, time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache-dir", default=os.environ.get("LESS_CACHE_DIR", "cache"))
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--model", default="small", choices=["small", "tiny"])
    p.add_argument("--n", type=int, default=200, help="pool examples (a quarter from each source)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8, help="EK-FAC's (selection.ekfac.batch_size)")
    a = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cfg, model, tok, pool, target, dim = setup(a)
    n_tok = sum(map(len, pool.input_ids))
    print(f"model={a.model} pool={len(pool)} examples ({n_tok} tokens) target={len(target)} dim={dim} "
          f"lora r={cfg.warmup.lora.r} threads={torch.get_num_threads()}")
    less_t, fit_t, score_t = [], [], []
    for r in range(a.rounds):
        less_t.append(less_extraction(cfg, model, tok, pool, dim))
        f, s = ekfac(model, tok, pool, target, a.batch_size)
        fit_t.append(f)
        score_t.append(s)
        print(f"round {r + 1}: less {less_t[-1]:.2f} s, ekfac factors {f:.2f} s + scores {s:.2f} s", flush=True)
    med = statistics.median
    per = lambda xs: 1e3 * med(xs) / len(pool)  # noqa: E731
    print(f"ms per pool example (median of {a.rounds}): less extraction {per(less_t):.1f} (per checkpoint), "
          f"ekfac factors {per(fit_t):.1f} + scores {per(score_t):.1f} = {per(fit_t) + per(score_t):.1f}")
    print(f"ekfac_vs_less={(med(fit_t) + med(score_t)) / med(less_t):.2f}")


if __name__ == "__main__":
    main()

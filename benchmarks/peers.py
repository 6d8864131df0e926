"""The harness beside its peers on the same work: bergson's gradient store, the reference method
(batch size 1, as the official LESS code) and the floor (a plain batched forward+backward).

    python benchmarks/peers.py                          # CPU preset of extract_features.py, real pool
    python benchmarks/peers.py --model small --cache-dir cache --data-root ../shared/data
    python benchmarks/peers.py --device cuda --preset 1b

One model (the CPU preset of ``extract_features.py``: a locally built Llama with LoRA r=8 on
q/k/v/o; ``--model small``: the small model from the cache with its warmup's LoRA settings), the
same N examples of the real pool under ``--data-root`` (``less_mix``'s four sources in turn, encoded
once as the datastore encodes them: assistant-only labels, the pool's EOS, cut to ``--length``
tokens), the same LoRA modules (every lora_A/lora_B Linear: bergson's default for a PEFT model), the
same projection dimension and the same token budget per micro-batch. Timed, interleaved over
``--rounds`` (median, [min, max]):

- harness: the datastore stage's work per checkpoint (``FeatureExtractor``: per-example gradients
  in one batched backward, the Adam direction, projected to d);
- bergson: its gradient store (``bergson.collect_gradients``, what ``bergson build`` runs on each
  worker: hooks form the per-example gradients, ``projection_target=global`` projects each module's
  flattened gradient to d and sums, the rows are written to its on-disk store); per-example mean
  loss over tokens (``loss_reduction=mean``) as LESS; SGD gradients, since bergson has no Adam
  update direction (its Adam normaliser divides by sqrt(v) only);
- reference: batch size 1, full flat gradient, the Adam direction, projection every 16 examples
  with the matrix regenerated (``extract_features.reference_method``);
- floor: a plain batched forward+backward over the harness's micro-batches.

Also checked once: the harness's unprojected SGD features equal bergson's unprojected gradients on
``--check`` examples (cosine per example, printed). Ends with the line
``vs_bergson=<x> vs_reference=<y> vs_floor=<z>`` (x, y: the harness's examples/s over the peer's,
above 1 = ahead; z: the harness's time over the floor's). Without bergson installed
(``pip install -e ".[peers]"``; on a CPU-only machine ``scripts/setup.sh`` installs it with ``--no-deps``) it says so in one line and
measures the rest (``vs_bergson=n/a``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract_features import PRESETS, PeakMemory, device_name, floor, ours, reference_method, timed  # noqa: E402

from less.data.formats import Encoded  # noqa: E402
from less.gradients.features import token_budget_batches  # noqa: E402


def bergson_missing() -> str | None:
    try:
        import bergson  # noqa: F401
    except ImportError as e:
        return (f"bergson is not installed ({e}); install it with: pip install -e \".[peers]\" (on a CPU-only "
                "machine: bash scripts/setup.sh, which installs it without torchvision/torchaudio/bitsandbytes)")
    return None


def real_pool(data_root: Path, tok, n: int, length: int) -> Encoded:
    """n pool examples encoded as the datastore encodes them, taken from the four sources in turn."""
    from less.data import pools
    from less.data.formats import encode_examples

    sources = [pools.RAW_SOURCES[s](data_root, 0) for s in ("dolly", "cot", "flan_v2", "oasst1")]
    enc, i = Encoded([], [], []), 0
    while len(enc) < n and any(i < len(r) for r in sources):
        part = encode_examples([r[i] for r in sources if i < len(r)], tok, length, completion_eos=True,
                               truncation="right")
        enc = Encoded(enc.ids + part.ids, enc.input_ids + part.input_ids, enc.labels + part.labels)
        i += 1
    if len(enc) < n:
        raise SystemExit(f"--n {n}: only {len(enc)} pool examples under {data_root} keep a label at {length} tokens")
    return Encoded(enc.ids[:n], enc.input_ids[:n], enc.labels[:n])


def setup(a, device):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from less.api import compose
    from less.models import load_model, load_tokenizer
    from less.runner import Runner

    cfg = compose([f"model={'tiny' if a.model == 'cpu' else 'small'}", f"data.root={a.data_root}",
                   f"cache_dir={a.cache_dir}", "logger=none"])
    src = str(Runner(cfg, Path(tempfile.mkdtemp()), check=False).get("selector").dir)
    tok = load_tokenizer(cfg.model, src)
    torch.manual_seed(0)
    if a.model == "cpu":  # extract_features' shapes; the tokenizer (tiny's) only supplies the ids
        base = LlamaForCausalLM(LlamaConfig(
            vocab_size=max(a.vocab, len(tok)), hidden_size=a.hidden, intermediate_size=a.inter,
            num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.heads,
            max_position_embeddings=max(2048, a.length), attn_implementation="sdpa"))
        lora = LoraConfig(r=a.rank, lora_alpha=4 * a.rank, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    else:
        base = load_model(cfg.model, src, torch.device("cpu"))
        w = cfg.warmup.lora
        lora = LoraConfig(r=w.r, lora_alpha=w.alpha, target_modules=list(w.target_modules))
        a.rank = w.r
    model = get_peft_model(base.to(device, torch.float32), lora)
    with torch.no_grad():  # a trained adapter's B is non-zero: so are A's gradients
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    model.eval()
    enc = real_pool(Path(a.data_root), tok, a.n, a.length)
    g = torch.Generator().manual_seed(1)
    moments = {n: (torch.randn(p.shape, generator=g) * 1e-3, torch.rand(p.shape, generator=g) * 1e-6)
               for n, p in model.named_parameters() if p.requires_grad}
    return model, enc, moments, tok.pad_token_id


def bergson_store(model, enc, a, run_path: Path, projection_dim: int) -> torch.Tensor:
    """bergson's per-example gradient store of ``enc`` (rows in enc's order)."""
    from bergson import collect_gradients
    from bergson.config.config import IndexConfig
    from bergson.data import allocate_batches, load_gradients
    from bergson.utils.worker_utils import extract_peft_target_modules, processor_for
    from datasets import Dataset

    cfg = IndexConfig(run_path=str(run_path), projection_dim=projection_dim, projection_target="global",
                      loss_reduction="mean", token_batch_size=a.token_budget, max_batch_size=a.n,
                      precision="fp32")
    cfg.partial_run_path.mkdir(parents=True)
    data = Dataset.from_dict({"input_ids": enc.input_ids, "labels": enc.labels,
                              "length": [len(x) for x in enc.input_ids]})
    batches = allocate_batches(data["length"][:], cfg.token_batch_size, max_batch_size=cfg.max_batch_size)
    for name in ("CollectorComputer", "HookCollectorBase"):  # bergson resets their levels on every call
        logging.getLogger(name).disabled = True
    with contextlib.redirect_stderr(io.StringIO()):  # its progress bars, once per call, would bury the figures
        collect_gradients(model, data, processor_for(cfg), cfg, batches=batches,
                          target_modules=extract_peft_target_modules(model))
    return torch.from_numpy(load_gradients(cfg.partial_run_path).astype("float32"))


def agreement(model, enc, pad_id, a, device, tmp: Path) -> tuple[str, float | None]:
    """Cosine of the harness's unprojected SGD features with bergson's unprojected gradients, per
    example, with the modules matched by name."""
    sub = Encoded(enc.ids[: a.check], enc.input_ids[: a.check], enc.labels[: a.check])
    mine = ours(model, sub, None, a, device, pad_id=pad_id, project=False).double().cpu()
    theirs = bergson_store(model, sub, a, tmp / "flat", 0).double()
    sizes = json.loads((tmp / "flat.part" / "info.json").read_text())["grad_sizes"]
    # the harness's layout: parameters in the model's order, lora_A before lora_B, each flattened
    # row-major; bergson's: one block per module in grad_sizes' order. Rebuild bergson's columns in
    # the harness's order.
    cols, off = {}, 0
    for name, size in sizes.items():
        cols[name] = theirs[:, off: off + size]
        off += size
    parts = []
    for n, p in model.named_parameters():  # base_model.<module>.weight -> bergson's <module>
        if p.requires_grad:
            key = n.removeprefix("base_model.").removesuffix(".weight")
            if key not in cols:
                return f"agreement: no bergson module {key} for {n} (it has {list(cols)[:2]}...)", None
            parts.append(cols[key])
    theirs = torch.cat(parts, dim=1)
    if theirs.shape != mine.shape:
        return f"agreement: shapes differ, harness {tuple(mine.shape)} vs bergson {tuple(theirs.shape)}", None
    cos = torch.nn.functional.cosine_similarity(mine, theirs, dim=1)
    ratio = theirs.norm(dim=1) / mine.norm(dim=1)
    return (f"agreement on {a.check} examples (unprojected SGD gradients, {mine.shape[1]:,} LoRA params): "
            f"cosine min {cos.min():.6f} (all: {', '.join(f'{c:.6f}' for c in cos.tolist())}), "
            f"norm ratio bergson/harness {ratio.min():.4f}..{ratio.max():.4f}"), float(cos.min())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=["cpu", "small"], default="cpu",
                   help="cpu: extract_features' preset shapes (--preset); small: the small model from the cache")
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--cache-dir", default=os.environ.get("LESS_CACHE_DIR", "cache"))
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians reported")
    p.add_argument("--check", type=int, default=4, help="examples in the unprojected agreement check")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    for k in PRESETS["cpu"]:
        p.add_argument(f"--{k.replace('_', '-')}", type=int, default=None)
    args = p.parse_args()
    a = argparse.Namespace(**{**PRESETS[args.preset], **{k: v for k, v in vars(args).items() if v is not None}})
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not Path(a.data_root).is_dir():
        raise SystemExit(f"--data-root {a.data_root}: no such directory (the real pool is read from there)")
    device = torch.device(args.device)
    missing = bergson_missing()
    if missing:
        print(missing + "; measuring the rest", flush=True)
    model, enc, moments, pad_id = setup(a, device)
    lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_tok = sum(map(len, enc.input_ids))
    batches = token_budget_batches([len(x) for x in enc.input_ids], a.token_budget, a.n)
    print(f"workload: {a.n} real pool examples, {n_tok} tokens (max {a.length}), model {a.model}"
          f"{' preset ' + args.preset if a.model == 'cpu' else ''} "
          f"({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params), LoRA r={a.rank} on every "
          f"lora_A/lora_B ({lora:,} params), d={a.dim}, token budget {a.token_budget} per micro-batch, "
          f"device {device}, threads {torch.get_num_threads()}", flush=True)
    systems = {"floor": lambda d: floor(model, enc, batches, device, pad_id),
               "harness": lambda d: ours(model, enc, moments, a, device, pad_id=pad_id),
               "reference": lambda d: reference_method(model, enc, moments, a, device)}
    if not missing:
        systems["bergson"] = lambda d: bergson_store(model, enc, a, d / "store", a.dim)
    with tempfile.TemporaryDirectory() as t:  # warm-up: allocator, kernels, imports
        warm = argparse.Namespace(**{**vars(a), "n": 2})
        two = Encoded(enc.ids[:2], enc.input_ids[:2], enc.labels[:2])
        ours(model, two, moments, warm, device, pad_id=pad_id)
        if not missing:
            bergson_store(model, two, warm, Path(t) / "w", a.dim)
    times = {k: [] for k in systems}
    peaks = {k: [] for k in systems}
    for r in range(args.rounds):  # interleaved, so that a slow spell of the machine hits every system
        for name, fn in systems.items():
            with tempfile.TemporaryDirectory() as d, PeakMemory(device) as mem:
                t, _ = timed(lambda: fn(Path(d)), device)
            times[name].append(t)
            peaks[name].append(mem.peak)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    cos = None
    if not missing:
        with tempfile.TemporaryDirectory() as d:
            text, cos = agreement(model, enc, pad_id, a, device, Path(d))
            print(text)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"medians of {args.rounds} rounds [min, max]; peak memory above the start of each call "
          f"({'CUDA allocator' if device.type == 'cuda' else 'RSS'}), max over rounds:")
    for k, v in times.items():
        print(f"{k:10s} {med[k]:8.2f} s [{min(v):.2f}, {max(v):.2f}]  {a.n / med[k]:8.1f} examples/s  "
              f"peak {max(peaks[k]) / 2**20:8.1f} MiB")
    ratios = {"vs_bergson": med["bergson"] / med["harness"] if "bergson" in med else None,
              "vs_reference": med["reference"] / med["harness"], "vs_floor": med["harness"] / med["floor"]}
    if args.json:
        Path(args.json).write_text(json.dumps({
            "model": a.model, "preset": args.preset, "device": str(device), "device_name": device_name(device),
            "examples": a.n, "tokens": n_tok, "max_length": a.length, "dim": a.dim, "lora_params": lora,
            "rounds": args.rounds, "seconds_median": med, "seconds_all": times, "peak_bytes": peaks,
            "examples_per_s": {k: a.n / v for k, v in med.items()}, "agreement_min_cosine": cos,
            "bergson": None if missing else "2.5.1 collect_gradients, projection_target=global", **ratios}, indent=1))
    print(" ".join(f"{k}={'n/a' if v is None else f'{v:.2f}'}" for k, v in ratios.items()))


if __name__ == "__main__":
    main()

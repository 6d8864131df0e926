"""Feature-extraction benchmark: LESS's batched per-example Adam features vs the floor and vs the
reference implementation's method, on one workload in one run.

    python benchmarks/extract_features.py                 # CPU default (paper proportions, small)
    python benchmarks/extract_features.py --preset 1b --device cuda

Prints examples/s; extraction time / a plain batched forward+backward over the same batches (the
floor: HF's forward with the full logits, and a second floor that computes the logits only from the
first position that predicts a label, as the extraction does); the speedup over the reference method (batch size 1,
full flat gradient, projection every 16 examples with the random matrix regenerated on every call,
as its CPU projector does); projection GFLOP/s vs torch.matmul on the same shapes; the peak memory of each (above
its start); on CUDA the MFU against the card's dense bf16 peak; and last the line
``extract_vs_fwdbwd=<x> extract_vs_labelled_fwdbwd=<x'> speedup_vs_bs1=<y>``. ``--json`` writes them.

The default keeps the paper's proportion of projection to model compute (LoRA params x d relative
to model params x length: ~0.16 for Llama-2-7B, r=128, d=8192, length 512): Llama hidden 256,
4 layers, vocab 32,000, LoRA r=8 on q/k/v/o, length 128, 64 examples, d=8192.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from pathlib import Path

import torch

from less.data.formats import Encoded
from less.gradients.adam import adam_direction
from less.gradients.features import FeatureExtractor, pad_batch, token_budget_batches
from less.gradients.per_example import labelled_loss
from less.gradients.projection import RademacherProjector

PRESETS = {
    "cpu": dict(hidden=256, layers=4, heads=4, inter=688, vocab=32000, rank=8, length=128, n=64, dim=8192,
                token_budget=2048, projection_batch=64),
    "1b": dict(hidden=2048, layers=16, heads=16, inter=5504, vocab=32000, rank=64, length=512, n=256, dim=8192,
               token_budget=16384, projection_batch=64),
}


def build(a, device):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.inter,
                      num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.heads,
                      max_position_embeddings=max(2048, a.length), attn_implementation="sdpa")
    model = get_peft_model(LlamaForCausalLM(cfg).to(device, torch.float32),
                           LoraConfig(r=a.rank, lora_alpha=4 * a.rank, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    model.eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, a.vocab, (a.n, a.length), generator=g)
    prompt = a.length // 4  # loss on the last three quarters (the "response")
    labels = ids.clone()
    labels[:, :prompt] = -100
    enc = Encoded([str(i) for i in range(a.n)], ids.tolist(), labels.tolist())
    moments = {n: (torch.randn(p.shape, generator=g) * 1e-3, torch.rand(p.shape, generator=g) * 1e-6)
               for n, p in model.named_parameters() if p.requires_grad}
    return model, enc, moments


REF_ROWS = 65536  # rows of the reference method's matrix generated at a time (the CPU preset's all)
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.1, "A10": 125.0}  # dense


def peak_bf16_tflops(device: torch.device) -> float | None:
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return platform.processor() or platform.machine()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t, out


def floor(model, enc, batches, device, pad_id=0, labelled_logits=False):
    """A plain batched forward+backward (HF's full logits); ``labelled_logits``: the logits only from
    the first position that predicts a label on, as the extraction computes them."""
    for b in batches:
        labelled_loss(model, *pad_batch(enc, b, pad_id, device), labelled_logits).sum().backward()
        model.zero_grad(set_to_none=True)


class PeakMemory:
    """Peak memory above the level at entry: CUDA's allocator peak, or the process's RSS sampled
    every 2 ms on the CPU (ru_maxrss never goes down, so it cannot tell one system from another)."""

    def __init__(self, device: torch.device):
        self.device, self.peak = device, 0

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        self.base, self.top, self.stop = self.rss(), self.rss(), threading.Event()

        def sample():
            while not self.stop.wait(0.002):
                self.top = max(self.top, self.rss())

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self.stop.set()
            self.thread.join()
            self.peak = max(self.top, self.rss()) - self.base


def ours(model, enc, moments, a, device, pad_id=0, project=True):
    """The datastore's extraction of one checkpoint: (n, d) unscaled features (unprojected, flat,
    with ``project=False``; SGD gradients with ``moments=None``)."""
    ex = FeatureExtractor(model, pad_id=pad_id, dims=[a.dim] if project else None, seed=0, device=device,
                          moments=moments,
                          token_budget=a.token_budget, max_batch=a.n, projection_batch=a.projection_batch,
                          cache_bytes=0)  # at paper scale no matrix fits: generate per projected batch
    try:
        return ex.unscaled(enc, list(range(len(enc))))
    finally:
        ex.close()


def reference_method(model, enc, moments, a, device):
    """Batch size 1, flat gradient, Adam map, project every 16 examples regenerating the matrix."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p for p in model.parameters() if p.requires_grad]
    m = torch.cat([moments[n][0].flatten() for n in names]).to(device)
    v = torch.cat([moments[n][1].flatten() for n in names]).to(device)
    total = m.numel()
    out, buf = [], []

    def project():
        g = torch.Generator(device=device).manual_seed(0)  # regenerated on every call
        x, y = torch.stack(buf), torch.zeros(len(buf), a.dim, device=device)
        for r0 in range(0, total, REF_ROWS):  # in row blocks: at 1b the whole matrix would be 550 GB
            r1 = min(total, r0 + REF_ROWS)
            mat = torch.randint(0, 2, (r1 - r0, a.dim), generator=g, device=device, dtype=torch.int8)
            y += x[:, r0:r1] @ mat.float().mul_(2).sub_(1)
        out.append(y)
        buf.clear()

    for i in range(len(enc)):
        loss = labelled_loss(model, *pad_batch(enc, [i], 0, device), False).sum()
        g = torch.cat([x.flatten() for x in torch.autograd.grad(loss, params)])
        buf.append(adam_direction(g, m, v))
        if len(buf) == 16:
            project()
    if buf:
        project()
    return torch.cat(out)


def projection_rate(a, device, total):
    total = min(total, REF_ROWS)  # the rate on one block of rows (the 1b preset's whole matrix would not fit)
    x = torch.randn(a.projection_batch, total, device=device)
    proj = RademacherProjector(a.dim, 0, device, cache_bytes=0)
    t_ours, _ = timed(lambda: proj.project(0, x), device)
    mat = torch.ones(total, a.dim, device=device)
    t_mm, _ = timed(lambda: x @ mat, device)
    flops = 2 * a.projection_batch * total * a.dim
    return flops / t_ours / 1e9, flops / t_mm / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians reported")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="the model's weights")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the card's dense bf16 peak for MFU (default: from the CUDA device's name)")
    for k, v in PRESETS["cpu"].items():
        p.add_argument(f"--{k.replace('_', '-')}", type=int, default=None)
    args = p.parse_args()
    a = argparse.Namespace(**{**PRESETS[args.preset], **{k: v for k, v in vars(args).items()
                                                          if v is not None and k in PRESETS["cpu"]}})
    device = torch.device(args.device)
    a.peak_tflops = args.peak_tflops or (peak_bf16_tflops(device) if device.type == "cuda" else None)
    model, enc, moments = build(a, device)
    model.to(getattr(torch, args.dtype))
    lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    base = sum(p.numel() for p in model.parameters())
    batches = token_budget_batches([a.length] * a.n, a.token_budget, a.n)
    print(f"workload: {a.n} examples x {a.length} tokens, model {base / 1e6:.1f}M params, LoRA {lora:,} params, "
          f"d={a.dim}, proportion {lora * a.dim / (base * a.length):.3f}, {len(batches)} micro-batches, "
          f"device {device}, threads {torch.get_num_threads()}")
    warm = Encoded(enc.ids[:2], enc.input_ids[:2], enc.labels[:2])  # warm-up (allocator, kernels)
    floor(model, warm, [[0, 1]], device)
    ours(model, warm, moments, argparse.Namespace(**{**vars(a), "n": 2}), device)
    systems = {"floor": lambda: floor(model, enc, batches, device),
               "floor_labelled": lambda: floor(model, enc, batches, device, labelled_logits=True),
               "ours": lambda: ours(model, enc, moments, a, device),
               "ref": lambda: reference_method(model, enc, moments, a, device)}
    times: dict[str, list[float]] = {k: [] for k in systems}
    peaks: dict[str, int] = {k: 0 for k in systems}
    outs: dict[str, torch.Tensor] = {}
    for r in range(args.rounds):  # interleaved, so that a slow spell of the machine hits every system
        for name, fn in systems.items():
            with PeakMemory(device) as mem:
                t, outs[name] = timed(fn, device)
            times[name].append(t)
            peaks[name] = max(peaks[name], mem.peak)
        print(f"round {r + 1}: floor {times['floor'][-1]:.2f} s, floor (labelled logits) "
              f"{times['floor_labelled'][-1]:.2f} s, extraction {times['ours'][-1]:.2f} s, "
              f"reference {times['ref'][-1]:.2f} s, extraction / floor {times['ours'][-1] / times['floor'][-1]:.3f}",
              flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    t_floor, t_lab, t_ours, t_ref = med["floor"], med["floor_labelled"], med["ours"], med["ref"]
    feats, ref = outs["ours"], outs["ref"]
    gf_ours, gf_mm = projection_rate(a, device, lora)
    spread = lambda k: f"[{min(times[k]):.2f}, {max(times[k]):.2f}]"  # noqa: E731
    mib = lambda k: f"peak {peaks[k] / 2**20:7.0f} MiB"  # noqa: E731
    print(f"medians of {args.rounds} rounds [min, max]; peak memory above the start of each call "
          f"({'CUDA allocator' if device.type == 'cuda' else 'RSS'}), max over rounds:")
    print(f"floor (batched fwd+bwd):        {t_floor:8.2f} s  {spread('floor')}  {' ' * 22}{mib('floor')}")
    print(f"floor, labelled logits only:    {t_lab:8.2f} s  {spread('floor_labelled')}  {' ' * 22}"
          f"{mib('floor_labelled')}")
    print(f"LESS batched extraction:        {t_ours:8.2f} s  {spread('ours')}  {a.n / t_ours:8.1f} examples/s  "
          f"{mib('ours')}")
    print(f"reference method (bs=1):        {t_ref:8.2f} s  {spread('ref')}  {a.n / t_ref:8.1f} examples/s  "
          f"{mib('ref')}")
    print(f"projection: {gf_ours:.1f} GFLOP/s incl. generation vs torch.matmul {gf_mm:.1f} GFLOP/s "
          f"({gf_ours / gf_mm:.2f}x)")
    mfu = {}
    if a.peak_tflops:  # forward 2 N T + backward to the inputs 2 N T (the base weights are frozen)
        flops = 4 * sum(p.numel() for p in model.parameters()) * sum(map(len, enc.input_ids))
        mfu = {k: flops / med[k] / (a.peak_tflops * 1e12) for k in ("floor", "ours")}
        print(f"MFU (4 x params x tokens / time, over the card's {a.peak_tflops} TFLOP/s dense bf16 peak; "
              f"weights {args.dtype}): floor {mfu['floor']:.3f}, extraction {mfu['ours']:.3f}")
    print(f"(features {tuple(feats.shape)}; the reference method's features {tuple(ref.shape)} use its own matrix)")
    print(f"extract_vs_fwdbwd={t_ours / t_floor:.2f} extract_vs_labelled_fwdbwd={t_ours / t_lab:.2f} "
          f"speedup_vs_bs1={t_ref / t_ours:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "preset": args.preset, "device": str(device), "device_name": device_name(device), "dtype": args.dtype,
            "examples": a.n, "length": a.length, "dim": a.dim, "rounds": args.rounds,
            "seconds_median": med, "seconds_all": times, "peak_bytes": peaks,
            "examples_per_s": a.n / t_ours, "extract_vs_fwdbwd": t_ours / t_floor,
            "extract_vs_labelled_fwdbwd": t_ours / t_lab, "speedup_vs_bs1": t_ref / t_ours,
            "projection_vs_matmul": gf_ours / gf_mm, "mfu": mfu, "peak_tflops": a.peak_tflops}, indent=1))

if __name__ == "__main__":
    main()

"""How each cost grows with the work: extraction vs examples and vs length, LESS scoring vs pool rows
(to 2.7M rows at a small d), every selection method vs pool rows (to 270k), with the exponent of
each curve fitted on a log-log scale.

    python benchmarks/scaling.py                      # all of it (~25 min and ~15 GiB of disk here)
    python benchmarks/scaling.py --quick              # tiny sizes: a rehearsal of the whole script (~1 min)
    python benchmarks/scaling.py --parts extraction,scoring --out /tmp/scaling

Extraction: the CPU preset of ``extract_features.py`` (random tokens, loss on the last three
quarters), timed in this process after a warm-up, peak memory above the call's start (RSS sampled).
Scoring: ``score_store.py`` (a child per size: one checkpoint, float16 unit rows, 300 targets in 60
subtasks, top 5%); peak RSS of the child. Selection methods: ``select_methods.py`` (a child per
method and size, its synthetic pool, 4096-dim representations, 8192-dim datastore); its score + rank
seconds and peak RSS. EK-FAC is not among them: it passes over the pool with the model, so it grows
as the extraction does (``ekfac_cost.py``).

Writes ``scaling.json``, ``scaling.md`` (the table: each point, and the fitted exponent b of
time ~ a x size^b and of the peak memory) and ``scaling.png`` (log-log plot) under ``--out``
(default outputs/scaling/; docs/scaling.png is a copy of a full run's plot). The data folders under ``--dir`` are kept for reruns; delete them afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

FULL = {
    "extract_n": [16, 32, 64, 128], "extract_len": [32, 64, 128, 256],
    "score": [(27_000, 8192), (90_000, 8192), (270_000, 8192), (270_000, 1024), (900_000, 1024), (2_700_000, 1024)],
    "select": [27_000, 90_000, 270_000],
}
QUICK = {"extract_n": [4, 8], "extract_len": [16, 32], "score": [(2_000, 256), (6_000, 256)],
         "select": [1_000, 3_000]}
QUICK_SHAPE = dict(hidden=32, layers=1, heads=2, inter=64, vocab=512, rank=4, dim=256, token_budget=512,
                   projection_batch=64)


def fit(xs, ys) -> float | None:
    """Exponent b of y ~ a x^b (least squares on logs); None with fewer than two points."""
    pts = [(x, y) for x, y in zip(xs, ys) if x > 0 and y and y > 0]
    if len({x for x, _ in pts}) < 2:
        return None
    lx, ly = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(lx, ly, 1)[0])


def extraction(sizes_n, sizes_len, quick: bool) -> list[dict]:
    import torch
    from extract_features import PRESETS, PeakMemory, build, ours, timed

    device = torch.device("cpu")
    out = []
    for axis, sizes in (("examples", sizes_n), ("length", sizes_len)):
        for s in sizes:
            a = argparse.Namespace(**{**PRESETS["cpu"], **(QUICK_SHAPE if quick else {})})
            if axis == "examples":
                a.n = s
                a.length = 32 if quick else 128
            else:
                a.n, a.length = (8 if quick else 32), s
            a.token_budget = max(a.token_budget, a.length)
            model, enc, moments = build(a, device)
            ours(model, enc, moments, argparse.Namespace(**{**vars(a), "n": 2}), device)  # warm-up
            with PeakMemory(device) as mem:
                t, _ = timed(lambda: ours(model, enc, moments, a, device), device)
            out.append({"curve": f"extraction vs {axis}", "size": s, "seconds": t, "peak_gib": mem.peak / 2**30,
                        "fixed": f"{'length' if axis == 'examples' else 'examples'} "
                                 f"{a.length if axis == 'examples' else a.n}"})
            print(f"extraction {axis}={s}: {t:.2f} s, peak {mem.peak / 2**30:.2f} GiB", flush=True)
    return out


def scoring(points, d: Path) -> list[dict]:
    out = []
    for rows, dim in points:
        proc = subprocess.run([sys.executable, str(HERE / "score_store.py"), "--rows", str(rows), "--dim", str(dim),
                               "--dir", str(d / "score")], capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        m = re.search(r"score_seconds=([\d.]+) peak_rss_gib=([\d.]+)", proc.stdout)
        if proc.returncode or not m:
            raise SystemExit(f"score_store.py --rows {rows} --dim {dim} failed:\n{proc.stdout[-1500:]}{proc.stderr[-1500:]}")
        out.append({"curve": f"LESS scoring, d={dim}", "size": rows, "seconds": float(m[1]),
                    "peak_gib": float(m[2]), "fixed": "300 targets, 1 checkpoint"})
        print(f"scoring rows={rows} d={dim}: {m[1]} s, peak {m[2]} GiB", flush=True)
        (d / "score" / f"pool_{rows}x{dim}.npy").unlink(missing_ok=True)  # 2.7M x 8192 would not fit the disk
    return out


def selection(sizes, d: Path, quick: bool) -> list[dict]:
    out = []
    from less.selection import registry

    methods = [m for m in registry.names() if m not in ("ekfac", "subset", "full")]
    for rows in sizes:
        dims = ["--dim", "64", "--grad-dim", "256"] if quick else ["--dim", "4096", "--grad-dim", "8192"]
        folder = d / f"select_{rows}"
        records = folder.with_suffix(".json")
        proc = subprocess.run([sys.executable, str(HERE / "select_methods.py"), "--rows", str(rows), *dims,
                               "--dir", str(folder), "--methods", ",".join(methods), "--json", str(records)],
                              capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        if proc.returncode:
            raise SystemExit(f"select_methods.py --rows {rows} failed:\n{proc.stdout[-1500:]}{proc.stderr[-1500:]}")
        for r in json.loads(records.read_text()):
            if "failed" in r:
                print(f"  {r['method']} at {rows}: failed (exit {r['failed']})")
                continue
            out.append({"curve": f"select: {r['method']}", "size": rows, "seconds": r["score_s"],
                        "peak_gib": r["peak_rss_gib"],
                        "fixed": "quick shapes" if quick else "4096-dim representations, d=8192 datastore"})
        print(f"selection methods at {rows:,} rows: done", flush=True)
        if not quick and rows < max(sizes):
            subprocess.run(["rm", "-rf", str(folder)])
    return out


def write(points: list[dict], out: Path, note: str) -> None:
    curves: dict[str, list[dict]] = {}
    for p in points:
        curves.setdefault(p["curve"], []).append(p)
    rows = []
    for name, ps in curves.items():
        ps.sort(key=lambda p: p["size"])
        bt = fit([p["size"] for p in ps], [p["seconds"] for p in ps])
        bm = fit([p["size"] for p in ps], [p["peak_gib"] for p in ps])
        rows.append((name, ps, bt, bm))
    fmt = lambda b: "n/a" if b is None else f"{b:.2f}"  # noqa: E731
    md = [note, "", "| curve | fixed | size: seconds (peak GiB) | time exponent | memory exponent |", "|---|---|---|---|---|"]
    for name, ps, bt, bm in rows:
        pts = ", ".join(f"{p['size']:,}: {p['seconds']:.2f} ({p['peak_gib']:.2f})" for p in ps)
        md.append(f"| {name} | {ps[0]['fixed']} | {pts} | {fmt(bt)} | {fmt(bm)} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "scaling.md").write_text("\n".join(md) + "\n")
    (out / "scaling.json").write_text(json.dumps({"note": note, "points": points,
                                                  "exponents": {n: {"time": bt, "memory": bm} for n, _, bt, bm in rows}},
                                                 indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [("extraction", "size (examples or tokens per example)"), ("scoring", "pool rows"), ("select", "pool rows")]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    for ax, (key, xlabel) in zip(axes, groups):
        for name, ps, bt, _ in rows:
            if key.lower() in name.lower():
                ax.loglog([p["size"] for p in ps], [p["seconds"] for p in ps], "o-",
                          label=f"{name.replace('select: ', '')} (b={fmt(bt)})")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("seconds")
        ax.set_title({"extraction": "extraction", "scoring": "LESS scoring", "select": "selection methods"}[key])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "scaling.png", dpi=110)
    print("\n".join(md))
    print(f"wrote {out / 'scaling.md'}, {out / 'scaling.json'}, {out / 'scaling.png'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, to rehearse the script")
    p.add_argument("--parts", default="extraction,scoring,selection")
    p.add_argument("--dir", default="/tmp/less-scaling", help="data folders (kept for reruns)")
    p.add_argument("--out", default=str(ROOT / "outputs" / "scaling"), help="where scaling.{md,json,png} go")
    a = p.parse_args()
    sizes = QUICK if a.quick else FULL
    parts = a.parts.split(",")
    unknown = set(parts) - {"extraction", "scoring", "selection"}
    if unknown:
        raise SystemExit(f"--parts: unknown {sorted(unknown)}; choose from extraction, scoring, selection")
    d = Path(a.dir)
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    points: list[dict] = []
    if "extraction" in parts:
        points += extraction(sizes["extract_n"], sizes["extract_len"], a.quick)
    if "scoring" in parts:
        points += scoring(sizes["score"], d)
    if "selection" in parts:
        points += selection(sizes["select"], d, a.quick)
    import torch

    note = (f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads{', quick sizes' if a.quick else ''}; "
            f"{time.perf_counter() - t0:.0f} s in all")
    write(points, Path(a.out), note)


if __name__ == "__main__":
    main()

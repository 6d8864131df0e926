"""Scoring benchmark: LESS scores of a synthetic 1,000,000 x 8192 fp16 store (16 GB on disk)
against 300 targets in 60 subtasks, read chunk by chunk, with top-5% selection by partial sort.

    python benchmarks/score_store.py [--rows 1000000] [--dim 8192] [--dir /tmp/less-score-bench]

Prints the store size, scoring seconds, rows/s and peak RSS (which must not grow with the pool).
The store is written once and reused; delete the folder afterwards.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np

from less.gradients.store import FeatureArray
from less.selection.scoring import checkpoint_weights, less_scores, top_k


def write_store(path: Path, rows: int, dim: int, chunk: int = 16384) -> None:
    if path.is_file():
        return
    tmp = path.with_suffix(".tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(rows, dim))
    rng = np.random.default_rng(0)
    for s in range(0, rows, chunk):
        x = rng.standard_normal((min(chunk, rows - s), dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[s: s + len(x)] = x
    out.flush()
    del out
    tmp.rename(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=8192)
    p.add_argument("--targets", type=int, default=300)
    p.add_argument("--subtasks", type=int, default=60)
    p.add_argument("--chunk", type=int, default=16384)
    p.add_argument("--dir", default="/tmp/less-score-bench")
    a = p.parse_args()
    d = Path(a.dir)
    d.mkdir(parents=True, exist_ok=True)
    store = d / f"pool_{a.rows}x{a.dim}.npy"
    t = time.perf_counter()
    if not store.is_file():  # in a child process, so this process's peak RSS is the scoring's alone
        import multiprocessing as mp

        proc = mp.get_context("spawn").Process(target=write_store, args=(store, a.rows, a.dim))
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            raise SystemExit(f"writing {store} failed")
    print(f"store: {store} ({store.stat().st_size / 2**30:.1f} GiB), ready in {time.perf_counter() - t:.0f} s")
    rng = np.random.default_rng(1)
    target = rng.standard_normal((a.targets, a.dim)).astype(np.float32)
    target /= np.linalg.norm(target, axis=1, keepdims=True)
    subtasks = [f"s{i % a.subtasks}" for i in range(a.targets)]
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    t = time.perf_counter()
    scores = less_scores([FeatureArray(store, "float16", a.dim)], [target], checkpoint_weights([1.0]), subtasks,
                         chunk=a.chunk)
    chosen = top_k(scores, int(round(0.05 * a.rows)))
    secs = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"scored {a.rows:,} rows x {a.dim} dims against {a.targets} targets ({a.subtasks} subtasks) "
          f"and selected the top {len(chosen):,} in {secs:.1f} s ({a.rows / secs:,.0f} rows/s)")
    print(f"peak RSS {rss:.2f} GiB (before scoring {rss0:.2f} GiB; score vector {scores.nbytes / 2**20:.1f} MiB)")
    print(f"score_seconds={secs:.1f} peak_rss_gib={rss:.2f}")


if __name__ == "__main__":
    main()

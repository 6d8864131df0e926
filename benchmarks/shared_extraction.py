"""Two jobs that need the same pool features, started together, split the extraction (less.claims).

    python benchmarks/shared_extraction.py [--dir /tmp/less-shared] [--jobs 2] [--threads N]
                                           [run.py overrides, default pool.n_per_skill=1000]

Builds the warmup once (cache ``<dir>/base``), then on fresh caches that link to it:

- ``alone``: one job ``stages=[prepare,warmup,datastore]`` (the pool and target features);
- ``together``: ``--jobs`` identical jobs started at once.

Every job runs with ``--threads`` torch/OpenMP threads (default: the machine's cores / jobs, as the
joblib launcher gives its workers; jobs that share a CPU must split its cores, or their threads
oversubscribe it and everything runs several times slower). Prints each job's wall time, its pool
extraction's time and the pool rows (x checkpoints) it computed, and the ratio of the slowest
shared extraction to the one alone: about 1/jobs if the work is split and each job has its own
device, about 1 on one CPU whose cores the jobs share (the work is done once; before chunk claims
every job did all of it). Take no timing while anything else runs on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = "stages=[prepare,warmup,datastore]"


def launch(cache: Path, out: Path, overrides: list[str], threads: int) -> subprocess.Popen:
    env = {**os.environ, "LESS_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return subprocess.Popen([sys.executable, str(ROOT / "run.py"), "logger=none", STAGES, *overrides,
                             f"hydra.run.dir={out}"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=open(out.with_suffix(".log"), "w"))


def timed(cache: Path, outs: list[Path], overrides: list[str], threads: int) -> list[tuple[float, float, int]]:
    """Start one job per output dir at once; (seconds, pool extraction seconds, pool rows computed)
    of each."""
    t0 = time.time()
    procs = [launch(cache, out, overrides, threads) for out in outs]
    done = []
    for p, out in zip(procs, outs):
        if p.wait() != 0:
            sys.exit(f"job failed: see {out.with_suffix('.log')}")
        done.append(time.time() - t0)
    pool = [json.loads((o / "results.json").read_text())["artifacts"]["pool_features"] for o in outs]
    return [(s, p["seconds"], p.get("rows_computed", 0)) for s, p in zip(done, pool)]


def linked(base: Path, dst: Path) -> Path:
    for kind in ("model", "pool", "target", "warmup"):
        (dst / kind).mkdir(parents=True)
        for d in (base / kind).iterdir():
            if d.is_dir() and not d.name.startswith("."):
                (dst / kind / d.name).symlink_to(d)
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, default=Path("/tmp/less-shared"))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="threads per job (default: cores / jobs)")
    args, overrides = ap.parse_known_args()
    overrides = overrides or ["pool.n_per_skill=1000"]
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.mkdir(parents=True)
    base = args.dir / "base"
    subprocess.run([sys.executable, str(ROOT / "run.py"), "logger=none", "stages=[prepare,warmup]", *overrides,
                    f"hydra.run.dir={args.dir / 'warmup-run'}"], cwd=ROOT, check=True, capture_output=True,
                   env={**os.environ, "LESS_CACHE_DIR": str(base)})
    (alone,) = timed(linked(base, args.dir / "alone"), [args.dir / "alone-run"], overrides, threads)
    together = timed(linked(base, args.dir / "together"), [args.dir / f"job{i}" for i in range(args.jobs)],
                     overrides, threads)
    print(f"{threads} thread(s) per job; {' '.join(overrides)}")
    print(f"one job alone:        {alone[0]:6.1f} s (pool extraction {alone[1]:6.1f} s), "
          f"computed {alone[2]} pool rows x checkpoints")
    for i, (s, e, rows) in enumerate(together):
        print(f"job {i} of {args.jobs} together: {s:6.1f} s (pool extraction {e:6.1f} s), "
              f"computed {rows} pool rows x checkpoints")
    print(f"slowest shared extraction / extraction alone: {max(e for _, e, _ in together) / alone[1]:.2f}; "
          f"rows computed in all: {sum(r for _, _, r in together)} (alone: {alone[2]})")


if __name__ == "__main__":
    main()

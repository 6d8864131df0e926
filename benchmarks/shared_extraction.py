"""Two jobs that need the same pool features, started together, split the extraction (less.claims).

    python benchmarks/shared_extraction.py [--dir /tmp/less-shared] [--jobs 2] [run.py overrides ...]

Builds the warmup once (cache ``<dir>/base``), then on fresh caches that link to it:

- ``alone``: one job ``stages=[prepare,warmup,datastore]`` (the pool and target features);
- ``together``: ``--jobs`` identical jobs started at once.

Prints each job's wall time and the pool rows (x checkpoints) it computed, and the ratio of the
slowest shared job to the job alone. Both extract with every core the machine has: on a machine
with one accelerator per job the shared jobs each take about half the time; on one CPU the jobs
share its cores, so the win is that the work is done once (before claims, each job did all of it).
Take no timing while anything else runs on the machine.
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


def launch(cache: Path, out: Path, overrides: list[str]) -> subprocess.Popen:
    env = {**os.environ, "LESS_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "run.py"), "logger=none", STAGES, *overrides,
                             f"hydra.run.dir={out}"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=open(out.with_suffix(".log"), "w"))


def timed(cache: Path, outs: list[Path], overrides: list[str]) -> list[tuple[float, int]]:
    """Start one job per output dir at once; (seconds, pool rows computed) of each."""
    t0 = time.time()
    procs = [launch(cache, out, overrides) for out in outs]
    done = []
    for p, out in zip(procs, outs):
        if p.wait() != 0:
            sys.exit(f"job failed: see {out.with_suffix('.log')}")
        done.append(time.time() - t0)
    rows = [json.loads((o / "results.json").read_text())["artifacts"]["pool_features"].get("rows_computed", 0)
            for o in outs]
    return list(zip(done, rows))


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
    args, overrides = ap.parse_known_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.mkdir(parents=True)
    base = args.dir / "base"
    subprocess.run([sys.executable, str(ROOT / "run.py"), "logger=none", "stages=[prepare,warmup]", *overrides,
                    f"hydra.run.dir={args.dir / 'warmup-run'}"], cwd=ROOT, check=True, capture_output=True,
                   env={**os.environ, "LESS_CACHE_DIR": str(base)})
    (alone,) = timed(linked(base, args.dir / "alone"), [args.dir / "alone-run"], overrides)
    together = timed(linked(base, args.dir / "together"), [args.dir / f"job{i}" for i in range(args.jobs)], overrides)
    print(f"one job alone:        {alone[0]:6.1f} s, computed {alone[1]} pool rows x checkpoints")
    for i, (s, rows) in enumerate(together):
        print(f"job {i} of {args.jobs} together: {s:6.1f} s, computed {rows} pool rows x checkpoints")
    print(f"slowest shared job / job alone: {max(s for s, _ in together) / alone[0]:.2f}; "
          f"rows computed in all: {sum(r for _, r in together)} (alone: {alone[1]})")


if __name__ == "__main__":
    main()

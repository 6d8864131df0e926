"""Fault injection: kill the default run at random points of every stage, rerun, and check that the
final ranking, selection, adapters and eval metrics equal a clean run's.

    python benchmarks/fault_injection.py [--kills-per-stage 2] [--seed 0] [--dir /tmp/less-faults]
                                         [--only pool,select] [run.py overrides ...]

A kill point is an *event* inside the build of one stage (a node of the pipeline graph: pool,
target, the tiny model, warmup, pool and target features, datastore, select, train, eval, token
counts): a file opened for writing, an ``os.replace``/``os.rename`` (the kill comes just before
it: an atomic write or a cache rename cut short), or a forward pass of the model (training steps,
feature batches, pretraining the tiny model, lm-eval's requests). Events are counted per stage by
hooks in the run's own process (``--child``), so a kill lands inside the stage it aims at however
fast the stage is.

1. A clean run (``python run.py <overrides>``) on an empty cache ``<dir>/clean`` counts each
   stage's events.
2. On another empty cache ``<dir>/faulty``, for each stage in the order the clean run built them,
   ``--kills-per-stage`` times: the same run is started and SIGKILLed at event n of that stage, n
   uniform in [1, the clean run's count] (or at the end of the stage's build if this build has
   fewer events: resumed pool features skip finished chunks); the script then kills what is left
   of its process group (W&B's service), as a scheduler or a crash would. No run gets past the
   stage it aims at, so every kill lands in its stage. ``--only`` aims at the stages named.
3. A final rerun to the end on the faulty cache; then the comparison with the clean run:
   ``ranking.csv`` and ``selected.jsonl`` byte for byte, every adapter file (``*.safetensors``) of
   the warmup checkpoints and the trained model byte for byte, the eval metrics exactly; and no
   ``.tmp-*`` / ``.work-*`` leftovers in the cache.

Prints one line per kill and a summary (also ``<dir>/summary.json``); exit code 1 if anything
differs. Takes about (2 + kills / 2) x a default run's time.
"""

from __future__ import annotations

import argparse
import atexit
import builtins
import json
import os
import random
import runpy
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(spec: str, argv: list[str]) -> None:
    """Run run.py in this process with event hooks: ``count:<file>`` writes each stage's event
    count to <file> at exit; ``<stage>:<n>`` SIGKILLs this process at event n of <stage>."""
    import transformers.models.llama.modeling_llama as llama

    import less.runner as runner

    counts: Counter = Counter()
    current: list[str] = []
    where, arg = spec.split(":", 1)

    def event() -> None:
        if not current:
            return
        stage = current[-1]
        counts[stage] += 1
        if where == stage and counts[stage] == int(arg):
            os.kill(os.getpid(), signal.SIGKILL)

    make = runner.Runner.make

    def tracked_make(self, name, inputs):
        current.append(name)
        try:
            return make(self, name, inputs)
        finally:
            if current.pop() == where:  # fewer events than counted (resumed features): kill at its end
                os.kill(os.getpid(), signal.SIGKILL)
    runner.Runner.make = tracked_make

    real_open = builtins.open

    def counted_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            event()
        return real_open(file, mode, *args, **kwargs)
    builtins.open = counted_open
    for name in ("replace", "rename"):
        real = getattr(os, name)

        def counted(src, dst, *args, _real=real, **kwargs):
            event()
            return _real(src, dst, *args, **kwargs)
        setattr(os, name, counted)
    forward = llama.LlamaForCausalLM.forward

    def counted_forward(self, *args, **kwargs):
        event()
        return forward(self, *args, **kwargs)
    llama.LlamaForCausalLM.forward = counted_forward
    if where == "count":
        atexit.register(lambda: Path(arg).write_text(json.dumps(counts)))
    sys.argv = [str(ROOT / "run.py"), *argv]
    runpy.run_path(str(ROOT / "run.py"), run_name="__main__")


def start(spec: str, cache: Path, out: Path, overrides: list[str]) -> subprocess.Popen:
    env = {**os.environ, "LESS_CACHE_DIR": str(cache), "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    log = open(out.with_suffix(".log"), "w")
    return subprocess.Popen([sys.executable, __file__, "--child", spec, *overrides, f"hydra.run.dir={out}"], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc: subprocess.Popen) -> int:
    rc = proc.wait()
    try:  # what the run started (W&B's service) goes with it
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return rc



def leftovers(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for pat in ("*/.tmp-*", "*/.work-*") for p in cache.glob(pat))


def compare(clean: dict, faulty: dict) -> list[str]:
    """What differs between the two runs' results (empty: nothing)."""
    bad = []
    from less.graph import STEPS

    steps = lambda r: set(r["stages"]) & set(STEPS)  # noqa: E731  (a tiny model built has its own entry)
    if steps(clean) != steps(faulty):
        return ["the steps run"]
    sel = [Path(r["selection"]["ranking"]).parent for r in (clean, faulty)] if "select" in clean["stages"] else []
    for name in ("ranking.csv", "selected.jsonl") if sel else ():
        if (sel[0] / name).read_bytes() != (sel[1] / name).read_bytes():
            bad.append(name)
    for step in ("warmup", "train"):
        if step not in clean["stages"]:
            continue
        dirs = [Path(r["stages"][step]["dir"]) for r in (clean, faulty)]
        files = sorted(p.relative_to(dirs[0]) for p in dirs[0].rglob("*.safetensors"))
        if not files or files != sorted(p.relative_to(dirs[1]) for p in dirs[1].rglob("*.safetensors")):
            bad.append(f"{step}: adapter files")
        bad += [f"{step}/{f}" for f in files if (dirs[0] / f).read_bytes() != (dirs[1] / f).read_bytes()]
    if clean.get("eval") != faulty.get("eval"):
        bad.append("eval metrics")
    return bad


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        return child(sys.argv[2], sys.argv[3:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills-per-stage", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/less-faults"))
    ap.add_argument("--only", default=None, help="comma-separated stages to kill (default: every stage)")
    args, overrides = ap.parse_known_args()
    rng = random.Random(args.seed)
    shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.mkdir(parents=True)
    t = time.time()
    proc = start(f"count:{args.dir / 'events.json'}", args.dir / "clean", args.dir / "clean-run", overrides)
    if finish(proc) != 0:
        sys.exit(f"the clean run failed: see {args.dir / 'clean-run.log'}")
    clean_s = time.time() - t
    clean = json.loads((args.dir / "clean-run" / "results.json").read_text())
    events = json.loads((args.dir / "events.json").read_text())
    print(f"clean run: {clean_s:.0f} s; events per stage: {events}", flush=True)
    cache, kills = args.dir / "faulty", []
    aimed = [s for s in events if args.only is None or s in args.only.split(",")]
    for stage in aimed:  # in the order the clean run built them
        for _ in range(args.kills_per_stage):
            n = rng.randint(1, events[stage])
            out = args.dir / f"kill-{len(kills) + 1:02d}-{stage}-{n}"
            t = time.time()
            rc = finish(start(f"{stage}:{n}", cache, out, overrides))
            kills.append({"stage": stage, "event": n, "of": events[stage], "rc": rc, "seconds": round(time.time() - t, 1),
                          "left_in_cache": leftovers(cache)})
            print(f"kill {len(kills):2d}: {stage:15s} event {n:5d} of {events[stage]:5d}  "
                  f"{'SIGKILL' if rc == -signal.SIGKILL else f'NOT KILLED (rc {rc})'}  after {kills[-1]['seconds']:5.1f} s;"
                  f"  left in cache: {', '.join(kills[-1]['left_in_cache']) or '-'}", flush=True)
    t = time.time()
    if finish(start("none:0", cache, args.dir / "final-run", overrides)) != 0:
        sys.exit(f"the final rerun failed: see {args.dir / 'final-run.log'}")
    final_s = time.time() - t
    final = json.loads((args.dir / "final-run" / "results.json").read_text())
    bad = compare(clean, final)
    summary = {"kills": sum(k["rc"] == -signal.SIGKILL for k in kills), "attempts": len(kills),
               "stages": list(dict.fromkeys(k["stage"] for k in kills)), "clean_seconds": round(clean_s, 1),
               "final_rerun_seconds": round(final_s, 1),
               "final_rerun_built": sorted(s for s, r in final["stages"].items() if not r["cached"]),
               "leftovers_after_final_rerun": leftovers(cache), "differences": bad}
    (args.dir / "summary.json").write_text(json.dumps({"summary": summary, "kills": kills}, indent=2))
    print(json.dumps(summary, indent=2))
    ok = not bad and not summary["leftovers_after_final_rerun"] and summary["kills"] == len(kills)
    print("EQUAL to the clean run: ranking, selection, adapters, eval metrics" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

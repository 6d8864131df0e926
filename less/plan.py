"""The dry run (``plan=true``): which stages of this job are cached, which would run and which are
missing, asked of the walk's own decision (``Runner.fate``) without building anything, and what the
stages that would run cost (their ``cost`` estimates, with the ``params`` of the models they name;
their ``plan`` parts, such as the estimate the costs start from). Writes ``plan.json`` and prints
one line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from less.cache import write_json_atomic
from less.graph import STEPS
from less.results import estimate

if TYPE_CHECKING:
    from pathlib import Path

    from omegaconf import DictConfig

    from less.runner import Runner


def job_name(cfg: DictConfig, out_dir: Path) -> str:
    """The job's label in plans: the run name plus its overrides (``default:selection.fraction=0.1``)."""
    from hydra.core.hydra_config import HydraConfig

    overrides = HydraConfig.get().job.override_dirname if HydraConfig.initialized() else ""
    return f"{cfg.name}:{overrides or out_dir.name}"


def status(r: Runner, name: str, seen: dict[str, str]) -> str:
    """The walk's ``fate`` of stage ``name``, "missing" too when an input it needs is missing (the
    run would stop there). Every stage visited lands in ``seen``."""
    if name not in seen:
        fate = r.fate(name, r.lookup(name))
        if fate == "to run" and "missing" in [status(r, d, seen) for d in r.inputs(name).values()]:
            fate = "missing"
        seen[name] = fate
    return seen[name]


def plan(r: Runner) -> dict[str, Any]:
    """Which stages of this job are cached, which would run, and their estimated cost."""
    c, ctx = r.cfg, r.ctx
    steps: dict[str, str] = {}
    artifacts: dict[str, str] = {}
    for step in STEPS:
        names = r.stages_of(step) if step in c.stages else []
        if names:
            st = {status(r, n, artifacts) for n in names}
            steps[step] = "missing" if "missing" in st else ("to run" if "to run" in st else "cached")
    parts: dict[str, Any] = {k: v for s in r.graph.values() if s.plan is not None for k, v in s.plan(ctx).items()}
    params = {n: s.params(ctx) for n, s in r.graph.items() if s.params is not None}
    est = estimate({n: s.cost(ctx, None) if artifacts.get(n) == "to run" else None
                    for n, s in r.graph.items() if s.cost is not None}, params)
    out = {"job": job_name(c, r.out_dir), "stages": steps, "artifacts": artifacts, **parts, **est}
    write_json_atomic(r.out_dir / "plan.json", out)
    cost = ", ".join(f"{k} {v:.2g}" for k, v in est["flops"].items() if v)
    print(f"plan {out['job']}: " + ", ".join(f"{k} {v}" for k, v in steps.items())
          + (f" | remaining FLOPs: {cost}" if cost else "") + (
              f" (~{est['gpu_hours_h100_at_40pct_mfu']:.2g} H100-hours)" if est["gpu_hours_h100_at_40pct_mfu"] else ""))
    return out

"""What a run tells W&B (less.tracking) about the graph it walked: the job's identity and its artifacts.

The run id hashes the keys of what the job's steps make, plus what a stage of those steps declares
(``Stage.wandb_id``, e.g. the datastore's shard); the job type is the selection method for a job
running a step that uses the selection (``less.graph.SELECTION_STEPS``), else its stage set; the
name is the job's overrides (``less.tracking.run_name``). Every artifact the run got of a stage
with a ``wandb_type`` is logged: an output when this run built it, else (taken from the cache) an
input, with metadata (key, config, the nearest logged artifacts it is made from, its report).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from less import tracking
from less.cache import to_plain
from less.graph import SELECTION_STEPS, STEPS
from less.paths import conf_dir
from less.tracking import NullTracker, run_id, run_name, uniform_config

if TYPE_CHECKING:
    from less.runner import Runner


def job_overrides() -> list[str]:
    """The command-line overrides of this Hydra job (none outside a Hydra run)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def job_type(cfg: DictConfig) -> str:
    """The selection method for a job that selects, trains or evaluates; else its stage set."""
    if cfg.logger.get("job_type"):
        return str(cfg.logger.job_type)
    if set(SELECTION_STEPS) & set(cfg.stages):
        return str(cfg.selection.method)
    return "+".join(cfg.stages)


def job_keys(r: Runner) -> dict[str, str]:
    """{stage: key} of what this job's steps make: the job's identity."""
    return {n: r.key(n) for step in STEPS if step in r.cfg.stages for n in r.stages_of(step)}


def make_tracker(r: Runner) -> NullTracker:
    c = r.cfg
    if c.logger.name == "none":
        return tracking.make_tracker(c.logger, {}, r.out_dir, name="")
    extra = {k: v for s in r.graph.values() if s.wandb_id is not None and s.step in c.stages
             for k, v in s.wandb_id(r.ctx).items()}
    rid = run_id(c.logger, list(c.stages), job_keys(r), extra)
    config = uniform_config(OmegaConf.to_container(c, resolve=True), conf_dir())
    return tracking.make_tracker(c.logger, config, r.out_dir, name=run_name(job_overrides(), c.name), rid=rid,
                       job_type=job_type(c), cache_root=r.cache.root)


def lineage_inputs(r: Runner, name: str) -> dict[str, str]:
    """{role: W&B artifact name} of the nearest logged artifacts ``name`` is made from (through
    stages that are not logged as artifacts, such as the feature stages)."""
    out: dict[str, str] = {}
    for role, dep in r.inputs(name).items():
        if r.graph[dep].wandb_type is not None:
            out[role] = f"{dep}-{r.key(dep)}"
        else:
            out.update({f"{role}.{k}": v for k, v in lineage_inputs(r, dep).items()})
    return out


def log_artifacts(r: Runner) -> None:
    """Every artifact the run got of a stage with a ``wandb_type``, with its small files."""
    if r.tracker.mode is None:  # no W&B run (logger=none, or a rerun that is not logged)
        return
    names = {}
    for name, s in r.graph.items():
        art = r.got.get(name)
        if s.wandb_type is None or art is None:
            continue
        meta = {"stage": name, "kind": art.kind, "key": art.key, "dir": str(art.dir),
                "config": to_plain(r.spec(name)["config"]), "inputs": lineage_inputs(r, name),
                "report": r.reports.get(name, {}), "built_seconds": r.results["artifacts"][name]["seconds"]}
        parts = s.wandb_files + (s.wandb_model if r.cfg.logger.get("log_model") else ())
        paths = [art.dir / p for p in parts if (art.dir / p).exists()]
        r.tracker.artifact(f"{name}-{art.key}", s.wandb_type, meta, [art.dir / "key.json"] + [p for p in paths if p.is_file()],
                           [p for p in paths if p.is_dir()], use=art.cached)
        names[f"artifacts/{name}"] = f"{name}-{art.key}"
    r.tracker.summary(names)

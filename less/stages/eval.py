"""The ``eval`` step: lm-eval on the trained target model (``eval.model: null``), the untrained
``model`` (``eval.model: base``) or any checkpoint (``eval.model=<path or hub id>``, optional
``eval.adapter``); see less.evaluation and docs/evaluation.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from less.cache import to_plain, write_json_atomic
from less.data.sources import data_spec, file_stamp
from less.graph import Context, Inputs, Stage
from less.models import local_files_stamp, model_spec
from less.results import flatten_metrics
from less.stages.model import source

SYNTHETIC_TASK = "less_synthetic_arithmetic"  # its test data is written by the synthetic target


def build(ctx: Context, inputs: Inputs, out: Path) -> None:
    from less.evaluation.run import evaluate

    base = source(ctx, inputs, "model") if not ctx.cfg.eval.model or ctx.cfg.eval.model == "base" else None
    metrics = evaluate(ctx.cfg, out, ctx.device, base, inputs["target"].dir if "target" in inputs else None,
                       inputs["train"].dir if "train" in inputs else None)
    write_json_atomic(out / "metrics.json", metrics)


def inputs(ctx: Context) -> dict[str, str]:
    e = ctx.cfg.eval
    out = {}
    if not e.model or e.model == "base":
        out["model"] = "model"
    if not e.model:
        out["train"] = "train"
    if SYNTHETIC_TASK in e.tasks:
        out["target"] = "target"
    return out


def config(ctx: Context) -> dict[str, Any]:
    e = ctx.cfg.eval
    spec = {"eval": to_plain(e), "data": data_spec(ctx.cfg.data), "device": ctx.device.type, "seed": ctx.cfg.seed,
            "model": model_spec(ctx.cfg.model)}
    if "tydiqa" in e.tasks and e.tydiqa.train_file:  # its size and mtime, as for the pool's files
        spec["tydiqa_train_file"] = file_stamp(e.tydiqa.train_file)
    if e.model and e.model != "base":  # a checkpoint of the user's: its files' identity
        spec.update(external={"model": str(e.model), "model_files": local_files_stamp(e.model),
                              "adapter_files": local_files_stamp(e.adapter)})
    return spec


def report(ctx: Context, art) -> dict[str, Any]:
    """eval.<task>.<metric>, eval.<task>.subtasks.<name>.<metric>, and strings such as
    eval.tydiqa_shot_source (where the TyDiQA one-shot demos came from)."""
    info = art.dir / "info.json"
    return {"eval": {**json.loads((art.dir / "metrics.json").read_text()),
                     **(json.loads(info.read_text(encoding="utf-8")) if info.is_file() else {})}}


def track(ctx: Context, art, reported: dict[str, Any], tracker) -> None:
    info = {f"eval/{k}": v for k, v in reported["eval"].items() if not isinstance(v, dict)}
    flat = flatten_metrics({k: v for k, v in reported["eval"].items() if isinstance(v, dict)}, "eval")
    tracker.summary({**flat, **info})  # once per run: summary only (no one-point line panels)
    tracker.table("eval/metrics", ["task", "subtask", "metric", "value"], [
        [k.split("/")[1], k.split("/")[3] if "/subtasks/" in k else "", k.rsplit("/", 1)[1], v] for k, v in flat.items()])


EVAL = Stage("eval", step="eval", build=build, inputs=inputs, config=config, report=report, track=track,
             wandb_type="evaluation", wandb_files=("metrics.json", "info.json", "samples"))

"""The ``eval`` step: lm-eval on the trained target model (``eval.model: null``), the untrained
``model`` (``eval.model: base``) or any checkpoint (``eval.model=<path or hub id>``, optional
``eval.adapter``); see less.evaluation and docs/evaluation.md. With ``eval.base: true`` a run that
evaluates its trained model also evaluates the untrained one (``eval_base``: the same artifact as
``eval.model=base``, so it is computed once per model and tasks), and reports both."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from less.cache import to_plain, write_json_atomic
from less.errors import require
from less.evaluation.tasks import SHOT_SOURCES, check_tydiqa_train, reads
from less.graph import Context, Inputs, Stage, always
from less.identity import data_id, file_id, tree_id
from less.models import local_files_id, model_spec
from less.results import flatten_metrics
from less.stages.model import source

SYNTHETIC_TASK = "less_synthetic_color"  # its test data is written by the synthetic target


def _cfg(ctx: Context, base: bool) -> DictConfig:
    """The run's config as this evaluation sees it: ``eval.model: base`` for ``eval_base``."""
    if not base:
        return ctx.cfg
    cfg = ctx.cfg.copy()
    with open_dict(cfg):
        cfg.eval.model = "base"
    return cfg


def _build(base: bool):
    def build(ctx: Context, inputs: Inputs, out: Path) -> None:
        from less.evaluation.run import evaluate

        cfg = _cfg(ctx, base)
        src = source(ctx, inputs, "model") if not cfg.eval.model or cfg.eval.model == "base" else None
        metrics = evaluate(cfg, out, ctx.device, src, inputs["target"].dir if "target" in inputs else None,
                           inputs["train"].dir if "train" in inputs else None)
        write_json_atomic(out / "metrics.json", metrics)
    return build


def _inputs(base: bool):
    def inputs(ctx: Context) -> dict[str, str]:
        e = _cfg(ctx, base).eval
        out = {}
        if not e.model or e.model == "base":
            out["model"] = "model"
        if not e.model:
            out["train"] = "train"
        if SYNTHETIC_TASK in e.tasks:
            out["target"] = "target"
        return out
    return inputs


def _config(base: bool):
    def config(ctx: Context) -> dict[str, Any]:
        e = _cfg(ctx, base).eval
        # `base` (whether to evaluate the base model too) is not part of what an evaluation is;
        # files are named by content (less.identity), never by path
        ev = {k: v for k, v in to_plain(e).items() if k != "base"}
        spec = {"eval": ev, "data": data_id(ctx.cfg.data, reads(e)),
                "device": ctx.device.type, "seed": ctx.cfg.seed, "model": model_spec(ctx.cfg.model)}
        if e.get("include_paths"):
            ev["include_paths"] = [tree_id(p) for p in e.include_paths]
        if "tydiqa" in e.tasks and e.tydiqa.train_file:
            ev["tydiqa"]["train_file"] = True
            spec["tydiqa_train_file"] = file_id(e.tydiqa.train_file)
        if e.model and e.model != "base":  # a checkpoint of the user's: a hub id, or its files' content
            model_files, adapter_files = local_files_id(e.model), local_files_id(e.adapter)
            ev["model"] = None if model_files is not None else str(e.model)
            ev["adapter"] = None if adapter_files is not None else e.adapter
            spec.update(external={"model": ev["model"], "model_files": model_files, "adapter_files": adapter_files})
        return spec
    return config


def _report(key: str):
    def report(ctx: Context, art) -> dict[str, Any]:
        """<key>.<task>.<metric>, <key>.<task>.subtasks.<name>.<metric>, and strings such as
        <key>.tydiqa_shot_source (where the TyDiQA one-shot demos came from); key: eval or eval_base."""
        info, examples = art.dir / "info.json", art.dir / "examples.jsonl"
        return {key: {**json.loads((art.dir / "metrics.json").read_text()),
                      **(json.loads(info.read_text(encoding="utf-8")) if info.is_file() else {})},
                **({"examples": {key: str(examples)}} if examples.is_file() else {})}
    return report


def _track(key: str):
    def track(ctx: Context, art, reported: dict[str, Any], tracker) -> None:
        info = {f"{key}/{k}": v for k, v in reported[key].items() if not isinstance(v, dict)}
        flat = flatten_metrics({k: v for k, v in reported[key].items() if isinstance(v, dict)}, key)
        tracker.summary({**flat, **info})  # once per run: summary only (no one-point line panels)
        tracker.table(f"{key}/metrics", ["task", "subtask", "metric", "value"], [
            [k.split("/")[1], k.split("/")[3] if "/subtasks/" in k else "", k.rsplit("/", 1)[1], v]
            for k, v in flat.items()])
    return track


def _summary(key: str, label: str):
    def summary(r: dict[str, Any]) -> list[str]:
        lines = []
        for task, ms in r.get(key, {}).items():
            if not isinstance(ms, dict):  # e.g. tydiqa_shot_source
                lines.append(f"eval {task}{label}: {ms}")
                continue
            subs = ms.get("subtasks", {})
            lines.append(f"eval {task}{label}: " + ", ".join(
                f"{m}={v:.4f}" + (f" ± {ms[m + '_stderr']:.4f}" if isinstance(ms.get(m + "_stderr"), float) else "")
                for m, v in ms.items() if m != "subtasks" and not m.endswith("stderr"))
                + (f" ({len(subs)} subtasks in results.json)" if subs else ""))
        return lines
    return summary


def check(cfg: DictConfig) -> None:
    """``eval.*``; with eval in ``stages``, what it will read (before hours of training, not at the end)."""
    e = cfg.eval
    require(bool(e.accuracy) or bool(e.target_loss), "eval.accuracy and eval.target_loss are both false: nothing to evaluate")
    require(e.protocol in ("paper", "lm_eval"), f"eval.protocol must be paper or lm_eval, got {e.protocol!r}")
    require(e.backend in ("hf", "vllm"), f"eval.backend must be hf or vllm, got {e.backend!r}")
    require(not e.adapter or (e.model and e.model != "base"), "eval.adapter needs eval.model (the adapter's base)")
    require(e.tydiqa.shot_source in SHOT_SOURCES,
            f"eval.tydiqa.shot_source must be train or dval, got {e.tydiqa.shot_source!r}")
    for key, n in (("eval.tydiqa.per_language", e.tydiqa.per_language), ("eval.bbh.per_task", e.bbh.per_task),
                   ("eval.mmlu.max_prompt_tokens", e.mmlu.max_prompt_tokens)):
        require(n is None or (isinstance(n, int) and not isinstance(n, bool) and n >= 1),
                f"{key} must be a positive integer or null (all), got {n!r}")
    if "eval" in cfg.stages:
        check_tydiqa_train(e, cfg.data)
        require(SYNTHETIC_TASK not in e.tasks or cfg.target.kind == "synthetic",
                f"eval.tasks: {SYNTHETIC_TASK} needs target=synthetic (got target={cfg.target.name}); "
                "set eval.tasks or leave eval out of stages")


def _stage(name: str, base: bool, applies=always, check=None) -> Stage:
    return Stage(name, kind="eval", step="eval", build=_build(base), inputs=_inputs(base), config=_config(base),
                 report=_report(name), track=_track(name), applies=applies, wandb_type="evaluation",
                 summary=_summary(name, " (base model)" if base else ""),
                 wandb_files=("metrics.json", "info.json", "examples.jsonl", "samples"), check=check)


EVAL = _stage("eval", base=False, check=check)
EVAL_BASE = _stage("eval_base", base=True, applies=lambda ctx: not ctx.cfg.eval.model and bool(ctx.cfg.eval.get("base")))

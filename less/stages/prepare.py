"""The ``prepare`` step: the pool and the target set (D_val) as JSONL. Two artifacts, so that what
depends only on the pool (warmup, pool features, target-free selections) is shared by every target."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from less.cache import write_json_atomic
from less.data import planted, sources
from less.data.kinds import POOLS, TARGETS
from less.data.formats import write_jsonl
from less.graph import Context, Inputs, Stage


def build_pool(ctx: Context, inputs: Inputs, out: Path) -> None:
    pool = sources.load_pool(ctx.cfg.pool, ctx.cfg.data)
    if planted.spec(ctx.cfg) is not None:  # held-out target items in the pool (plant.*)
        pool = planted.plant(pool, ctx.cfg)
    write_jsonl(out / "pool.jsonl", pool)
    write_json_atomic(out / "pool.json", {"n": len(pool), "by_source": sources.counts(pool, "dataset")})


def build_target(ctx: Context, inputs: Inputs, out: Path) -> None:
    target = sources.load_target(ctx.cfg.target, ctx.cfg.data)
    write_jsonl(out / "target.jsonl", target)
    (out / "eval_data").mkdir()
    for task, rows in sources.eval_data(ctx.cfg.target).items():
        write_jsonl(out / "eval_data" / f"{task}.jsonl", rows)
    write_json_atomic(out / "target.json", {"name": ctx.cfg.target.name, "n": len(target),
                                            "by_subtask": sources.counts(target, "subtask")})


def _dropped(d: dict[str, Any]) -> str:
    return f"; dropped {d['dropped']}" if d.get("dropped") else ""


def pool_summary(r: dict[str, Any]) -> list[str]:
    d = r.get("data", {}).get("pool")
    return [f"pool: {d['n']} examples from {len(d['by_source'])} sources{_dropped(d)}"] if d and "n" in d else []


def target_summary(r: dict[str, Any]) -> list[str]:
    d = r.get("data", {}).get("target")
    if not d or "n" not in d:
        return []
    return [f"target: {d['name']}, {d['n']} examples in {len(d['by_subtask'])} subtasks{_dropped(d)}"]


def pool_config(ctx: Context) -> dict[str, Any]:
    """The pool's source, and what is planted in it (only when something is: plant.n > 0)."""
    spec, plant = sources.pool_spec(ctx.cfg.pool, ctx.cfg.data), planted.spec(ctx.cfg)
    return {**spec, "plant": plant} if plant is not None else spec


def check_pool(cfg) -> None:
    POOLS.get(cfg.pool.kind).check(cfg.pool)
    planted.check(cfg)


POOL = Stage(
    "pool", step="prepare", build=build_pool, wandb_type="dataset", wandb_files=("pool.json",), summary=pool_summary,
    config=pool_config, check=check_pool,
    report=lambda ctx, art: {"data": {"pool": json.loads((art.dir / "pool.json").read_text())}})

TARGET = Stage(
    "target", step="prepare", build=build_target, wandb_type="dataset", wandb_files=("target.json", "target.jsonl"),
    summary=target_summary,
    config=lambda ctx: sources.target_spec(ctx.cfg.target, ctx.cfg.data),
    check=lambda cfg: TARGETS.get(cfg.target.kind).check(cfg.target),
    report=lambda ctx, art: {"data": {"target": json.loads((art.dir / "target.json").read_text())}})

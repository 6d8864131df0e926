"""Materialise the configured pool and target as JSONL in the messages (or prompt/completion)
format, through the registered kinds (less.data.kinds), and what their cache keys depend on."""

from __future__ import annotations

from collections import Counter
from typing import Any

from omegaconf import DictConfig

from less.cache import to_plain
from less.data.kinds import POOLS, TARGETS
from less.errors import DataError


def pool_spec(pool_cfg: DictConfig, data_cfg: DictConfig) -> dict[str, Any]:
    """What the pool's content depends on: its config, with what the kind reads (files, data under
    ``data.root``) named by content in place of any path."""
    return {**to_plain(pool_cfg), **POOLS.get(pool_cfg.kind).reads(pool_cfg, data_cfg)}


def target_spec(target_cfg: DictConfig, data_cfg: DictConfig) -> dict[str, Any]:
    return {**to_plain(target_cfg), **TARGETS.get(target_cfg.kind).reads(target_cfg, data_cfg)}


def load_pool(pool_cfg: DictConfig, data_cfg: DictConfig) -> list[dict[str, Any]]:
    rows = POOLS.get(pool_cfg.kind).load(pool_cfg, data_cfg)
    if not rows:
        raise DataError(f"pool {pool_cfg.name!r} has no examples")
    seen: set[str] = set()
    for r in rows:
        if str(r["id"]) in seen:
            raise DataError(f"pool {pool_cfg.name!r}: duplicate id {r['id']!r} across sources")
        seen.add(str(r["id"]))
    return rows


def load_target(target_cfg: DictConfig, data_cfg: DictConfig) -> list[dict[str, Any]]:
    rows = TARGETS.get(target_cfg.kind).load(target_cfg, data_cfg)
    if not rows:
        raise DataError(f"target {target_cfg.name!r} has no examples")
    for r in rows:
        r.setdefault("subtask", target_cfg.name)
    # D_val grouped by subtask (stable), so mean-within-subtask is well defined and files read simply
    order = {s: i for i, s in enumerate(dict.fromkeys(str(r["subtask"]) for r in rows))}
    return sorted(rows, key=lambda r: order[str(r["subtask"])])


def eval_data(target_cfg: DictConfig) -> dict[str, list[dict[str, Any]]]:
    """Test sets the target ships for its own lm-eval tasks: {task name: rows}."""
    ship = TARGETS.get(target_cfg.kind).eval_data
    return ship(target_cfg) if ship is not None else {}


def counts(rows: list[dict[str, Any]], field: str) -> dict[str, int]:
    return dict(sorted(Counter(str(r.get(field)) for r in rows).items()))

"""Materialise the configured pool and target as JSONL in the messages (or prompt/completion) format."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from less.cache import to_plain
from less.data import pools, synthetic, targets
from less.data.formats import read_examples
from less.errors import ConfigError, DataError


def file_stamp(path: str) -> dict[str, Any]:
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        return {"path": str(p), "missing": True}
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


PAPER_TARGETS = ("mmlu", "tydiqa", "bbh")


def data_spec(data_cfg: DictConfig) -> dict[str, Any]:
    root = data_cfg.get("root")
    return {"root": str(Path(str(root)).expanduser().resolve()) if root else None,
            "hub_repo": data_cfg.hub_repo}


def pool_spec(pool_cfg: DictConfig, data_cfg: DictConfig) -> dict[str, Any]:
    """What the pool's content depends on: its config, where the data comes from and, for custom
    files, their size and mtime."""
    spec = to_plain(pool_cfg)
    if pool_cfg.kind == "jsonl":
        spec["files"] = [file_stamp(f) for f in pool_cfg.files]
    if pool_cfg.kind in ("raw", "less_data"):
        spec["data"] = data_spec(data_cfg)
    if pool_cfg.kind == "less_data" and pool_cfg.get("path"):
        spec["path"] = str(Path(str(pool_cfg.path)).expanduser().resolve())
    return spec


def target_spec(target_cfg: DictConfig, data_cfg: DictConfig) -> dict[str, Any]:
    spec = to_plain(target_cfg)
    if target_cfg.kind == "jsonl":
        spec["file"] = file_stamp(target_cfg.file)
    if target_cfg.kind in PAPER_TARGETS:
        spec["data"] = data_spec(data_cfg)
    return spec


def load_pool(pool_cfg: DictConfig, data_cfg: DictConfig) -> list[dict[str, Any]]:
    if pool_cfg.kind == "raw":
        rows = pools.raw_pool(pool_cfg, data_cfg)
    elif pool_cfg.kind == "less_data":
        rows = pools.less_data(pool_cfg, data_cfg)
    elif pool_cfg.kind == "synthetic":
        try:
            rows = synthetic.make_pool(pool_cfg.n_per_skill, pool_cfg.seed, list(pool_cfg.skills))
        except ValueError as e:
            raise ConfigError(f"pool.skills: {e}") from None
    elif pool_cfg.kind == "jsonl":
        files = list(pool_cfg.files) if not isinstance(pool_cfg.files, str) else [pool_cfg.files]
        if not files:
            raise ConfigError("pool.files is empty")
        rows, first_seen = [], {}
        for f in files:
            if not Path(f).is_file():
                raise DataError(f"{f}: pool file not found (set by pool.files)")
            for i, row in enumerate(read_examples(f), 1):
                rid = str(row["id"])
                if rid in first_seen:
                    raise DataError(f"{f}:{i}: duplicate id {rid!r} (also in {first_seen[rid]})")
                first_seen[rid] = f
                row.setdefault("dataset", Path(f).stem)
                rows.append(row)
    else:
        raise ConfigError(f"pool.kind must be synthetic, jsonl, raw or less_data, got {pool_cfg.kind!r}")
    if not rows:
        raise DataError(f"pool {pool_cfg.name!r} has no examples")
    seen: set[str] = set()
    for r in rows:
        if str(r["id"]) in seen:
            raise DataError(f"pool {pool_cfg.name!r}: duplicate id {r['id']!r} across sources")
        seen.add(str(r["id"]))
    return rows


def load_target(target_cfg: DictConfig, data_cfg: DictConfig) -> list[dict[str, Any]]:
    if target_cfg.kind in PAPER_TARGETS:
        rows = targets.paper_target(target_cfg, data_cfg)
    elif target_cfg.kind == "synthetic":
        rows = synthetic.make_target(target_cfg.n_per_subtask, target_cfg.seed)
    elif target_cfg.kind == "jsonl":
        if not Path(target_cfg.file).is_file():
            raise DataError(f"{target_cfg.file}: target file not found (set by target.file)")
        rows = read_examples(target_cfg.file)
    else:
        raise ConfigError(f"target.kind must be synthetic, jsonl, mmlu, tydiqa or bbh, got {target_cfg.kind!r}")
    if not rows:
        raise DataError(f"target {target_cfg.name!r} has no examples")
    for r in rows:
        r.setdefault("subtask", target_cfg.name)
    # D_val grouped by subtask (stable), so mean-within-subtask is well defined and files read simply
    order = {s: i for i, s in enumerate(dict.fromkeys(str(r["subtask"]) for r in rows))}
    return sorted(rows, key=lambda r: order[str(r["subtask"])])


def eval_data(target_cfg: DictConfig) -> dict[str, list[dict[str, Any]]]:
    """Test sets the target ships for its own lm-eval tasks: {task name: rows}."""
    if target_cfg.kind == "synthetic":
        return {"less_synthetic_color": synthetic.make_eval_mc(target_cfg.n_eval, target_cfg.seed)}
    return {}


def counts(rows: list[dict[str, Any]], field: str) -> dict[str, int]:
    return dict(sorted(Counter(str(r.get(field)) for r in rows).items()))

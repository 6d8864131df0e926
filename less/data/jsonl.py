"""``pool.kind: jsonl`` and ``target.kind: jsonl``: the user's own JSONL files (chat ``messages`` or
prompt/completion, each example with a unique ``id``), named in keys by their content."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from less.data.formats import read_examples
from less.data.kinds import pool_kind, target_kind
from less.errors import ConfigError, DataError
from less.identity import file_id


def pool_files(pool_cfg: DictConfig) -> list[str]:
    return [str(pool_cfg.files)] if isinstance(pool_cfg.files, str) else [str(f) for f in pool_cfg.files]


@pool_kind("jsonl", reads=lambda pool_cfg, data_cfg: {"files": [file_id(f) for f in pool_files(pool_cfg)]})
def jsonl_pool(pool_cfg: DictConfig, data_cfg: DictConfig) -> list[dict[str, Any]]:
    files = pool_files(pool_cfg)
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
    return rows


@target_kind("jsonl", reads=lambda target_cfg, data_cfg: {"file": file_id(target_cfg.file)})
def jsonl_target(target_cfg: DictConfig, data_cfg: DictConfig) -> list[dict[str, Any]]:
    if not Path(target_cfg.file).is_file():
        raise DataError(f"{target_cfg.file}: target file not found (set by target.file)")
    return read_examples(target_cfg.file)

"""Warmup checkpoints as the datastore reads them: ours (``warmup.json``), a fresh LoRA
(``init_adapter``) or an external run (``datastore.warmup_dir``, e.g. the reference LESS code's)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from less.cache import to_plain
from less.errors import ConfigError, DataError
from less.identity import tree_id

# Written beside each Trainer checkpoint by less.training: epoch, average LR, optimizer param names.
CHECKPOINT_META = "less_checkpoint.json"


def external_warmup_spec(ds: DictConfig) -> dict[str, Any]:
    """Identity of an external warmup run: its checkpoints' files by content (less.identity,
    named relative to ``datastore.warmup_dir``) and the given LRs."""
    return {"external": True, "files": tree_id(Path(ds.warmup_dir).expanduser(), ["checkpoint-*"]),
            "lr_weights": to_plain(ds.lr_weights)}


def warmup_checkpoints(warmup_dir: Path, ds: DictConfig) -> list[dict[str, Any]]:
    """The checkpoints features are taken from, with their epoch's average learning rate.

    Our warmup records them in ``warmup.json``; an external run (``datastore.warmup_dir``: a
    Trainer / reference-LESS output dir with ``checkpoint-*/``) gets them from each checkpoint's
    ``less_checkpoint.json``, else its ``trainer_state.json`` log, else ``datastore.lr_weights``.
    """
    if (warmup_dir / "warmup.json").is_file():
        entries = json.loads((warmup_dir / "warmup.json").read_text())["checkpoints"]
    else:
        dirs = sorted(warmup_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
        if not dirs:
            raise DataError(f"{warmup_dir}: no checkpoint-* directories (set by datastore.warmup_dir)")
        lrs = list(ds.lr_weights) if ds.get("lr_weights") else None
        if lrs is not None and len(lrs) != len(dirs):
            raise ConfigError(f"datastore.lr_weights has {len(lrs)} values for {len(dirs)} checkpoints in {warmup_dir}")
        entries = []
        for e, d in enumerate(dirs, 1):
            lr = lrs[e - 1] if lrs is not None else _recorded_lr(d, e)
            if lr is None:
                raise DataError(f"{d}: no learning rate recorded for epoch {e}; set datastore.lr_weights")
            entries.append({"epoch": e, "step": int(d.name.split("-")[-1]), "avg_lr": lr, "dir": str(d)})
    wanted = list(ds.checkpoints) if ds.checkpoints else None
    if wanted is None:
        return entries
    have = {e["epoch"]: e for e in entries}
    missing = [e for e in wanted if e not in have]
    if missing:
        raise ConfigError(f"datastore.checkpoints: epochs {missing} not among the warmup checkpoints {sorted(have)}")
    return [have[e] for e in wanted]


def external_warmup_dir(ds: DictConfig) -> Path | None:
    """``datastore.warmup_dir`` (an external warmup run), which must exist, or None (ours)."""
    if not ds.warmup_dir:
        return None
    root = Path(ds.warmup_dir).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"{root}: warmup run not found (set by datastore.warmup_dir)")
    return root


def last_checkpoint(warmup_dir: Path) -> Path:
    """The directory of a warmup run's last checkpoint (highest epoch in ``warmup.json``, else the
    highest-numbered ``checkpoint-*/`` of an external run)."""
    if (warmup_dir / "warmup.json").is_file():
        entries = json.loads((warmup_dir / "warmup.json").read_text())["checkpoints"]
        return warmup_dir / max(entries, key=lambda e: e["epoch"])["dir"]
    dirs = sorted(warmup_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    if not dirs:
        raise DataError(f"{warmup_dir}: no checkpoint-* directories (set by datastore.warmup_dir)")
    return dirs[-1]


def _recorded_lr(ckpt: Path, epoch: int) -> float | None:
    if (ckpt / CHECKPOINT_META).is_file():
        return json.loads((ckpt / CHECKPOINT_META).read_text())["avg_lr"]
    if (ckpt / "trainer_state.json").is_file():
        hist = json.loads((ckpt / "trainer_state.json").read_text()).get("log_history", [])
        lrs = [h["learning_rate"] for h in hist if "learning_rate" in h and epoch - 1 < h.get("epoch", 0) <= epoch]
        return sum(lrs) / len(lrs) if lrs else None
    return None

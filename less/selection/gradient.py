"""LESS: the LR-weighted cosine of gradient features (pool: Adam direction, target: plain gradient)
summed over warmup checkpoints, mean within each target subtask, max over subtasks
(``less.selection.scoring.less_scores``), read chunk by chunk from the datastore.

``load_features`` reads a datastore for any gradient method (LESS, TRAK, TracIn): the pool and
target arrays of the chosen dim and checkpoints, checked to cover the pool."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from less.errors import ConfigError, DataError
from less.selection.registry import FeatureKind, Request, Scored, method


def check(cfg: DictConfig) -> None:
    s = cfg.selection
    if s.checkpoint_weights not in ("lr", "uniform"):
        raise ConfigError(f"selection.checkpoint_weights must be lr or uniform, got {s.checkpoint_weights!r}")


@dataclass
class Features:
    """One datastore's pool and target features at one dim, one array per checkpoint used."""

    pool: list  # FeatureArray per checkpoint, rows in pool_ids order
    target: list
    pool_ids: list[str]
    target_ids: list[str]
    lrs: list[float]  # each checkpoint's average learning rate
    dim: int
    checkpoints: list[int]
    gradient_type: str  # of the pool features (the target's are plain gradients)
    normalized: bool
    meta: dict[str, Any] = field(default_factory=dict)  # the pool's features.json (dropped examples)

    def extra(self, store: Path, **own: Any) -> dict[str, Any]:
        """What selection.json records of the features (the method's own settings after the checkpoints)."""
        return {"proj_dim": self.dim, "checkpoints": self.checkpoints, **own,
                "n_dropped": len(self.meta["dropped_ids"]), "dropped": self.meta["dropped"], "datastore": str(store)}


def load_features(req: Request) -> Features:
    """The datastore's features at ``selection.proj_dim`` (null: the largest) and
    ``selection.checkpoints`` (null: all), checked to cover the pool: every pool example is
    featurised or dropped with a reason, never skipped."""
    from less.gradients.store import FeatureArray, read_manifest

    s, store = req.selection, req.datastore
    man = read_manifest(store)
    dims = sorted({f["dim"] for f in man["files"]})
    flat = all(f.get("projection") == "none" for f in man["files"])
    proj_dim = s.get("proj_dim")
    dim = int(proj_dim) if proj_dim is not None and not flat else max(dims)
    if dim not in dims:
        raise ConfigError(f"selection.proj_dim={dim} is not in the datastore's dims {dims}")
    epochs = sorted({f["checkpoint"] for f in man["files"] if f["split"] == "pool"})
    use = list(s.checkpoints) if s.get("checkpoints") else epochs
    if set(use) - set(epochs):
        raise ConfigError(f"selection.checkpoints {use} not all in the datastore's {epochs}")

    def arrays(split):
        fs = sorted((f for f in man["files"] if f["split"] == split and f["dim"] == dim
                     and f["checkpoint"] in use), key=lambda f: f["checkpoint"])
        ids = [json.loads(line)["id"] for line in open(fs[0]["idspath"])]
        return [FeatureArray(f["abspath"], f["dtype"], f["dim"]) for f in fs], ids, fs

    pool_x, pool_ids, pool_files = arrays("pool")
    target_x, target_ids, _ = arrays("target")
    meta = json.loads((Path(store) / man["pool"] / "features.json").read_text())
    if (set(pool_ids) | set(meta["dropped_ids"]) != {str(r["id"]) for r in req.pool}
            or len(pool_ids) != len(set(pool_ids))):
        raise DataError(f"{store}: datastore rows do not cover the pool")
    return Features(pool_x, target_x, pool_ids, target_ids, [f["avg_lr"] for f in pool_files], dim, use,
                    pool_files[0]["gradient_type"], bool(pool_files[0]["normalized"]), meta)


def target_subtasks(req: Request, ids: list[str]) -> list[str]:
    subtask = {str(r["id"]): r["subtask"] for r in req.target}
    return [subtask[t] for t in ids]


@method("less", needs="gradients", check=check)
def less_method(req: Request) -> Scored:
    from less.selection.scoring import checkpoint_weights, less_scores

    s = req.selection
    f = load_features(req)
    weights = checkpoint_weights([1.0] * len(f.lrs) if s.checkpoint_weights == "uniform" else f.lrs)
    scores = less_scores(f.pool, [np.asarray(t) for t in f.target], weights, target_subtasks(req, f.target_ids),
                         reduce=s.subtask_reduce)
    return Scored(scores, f.pool_ids, f.extra(req.datastore, checkpoint_weights=weights.tolist()))


PLAIN = FeatureKind("sgd", False, "the pool's plain gradients, not normalised")  # TRAK, TracIn
PRECOND = FeatureKind("precond", True, "second-moment-preconditioned, unit-normalised gradients on both sides")


def require_features(cfg: DictConfig, name: str, kind: FeatureKind) -> None:
    """A method whose formula needs one kind of features (``Method.features``): the run's config
    must ask for them, else one line naming the options to set (checked before any work; the
    datastore's key holds both options, so the datastore the method then gets has them)."""
    gt, norm = cfg.datastore.gradient_type, bool(cfg.datastore.normalize)
    if (gt, norm) != (kind.gradient_type, kind.normalize):
        raise ConfigError(f"selection={name} needs {kind.what}: set datastore.gradient_type={kind.gradient_type} "
                          f"datastore.normalize={str(kind.normalize).lower()} (the config asks for "
                          f"gradient_type={gt}, normalize={str(norm).lower()})")

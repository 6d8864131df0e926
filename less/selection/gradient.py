"""LESS: the LR-weighted cosine of gradient features (pool: Adam direction, target: plain gradient)
summed over warmup checkpoints, mean within each target subtask, max over subtasks
(``less.selection.scoring.less_scores``), read chunk by chunk from the datastore."""

from __future__ import annotations

import json

import numpy as np
from omegaconf import DictConfig

from less.errors import ConfigError, DataError
from less.selection.registry import Request, Scored, method


def check(cfg: DictConfig) -> None:
    s = cfg.selection
    if s.checkpoint_weights not in ("lr", "uniform"):
        raise ConfigError(f"selection.checkpoint_weights must be lr or uniform, got {s.checkpoint_weights!r}")


@method("less", needs="gradients", check=check)
def less_method(req: Request) -> Scored:
    from less.gradients.store import FeatureArray, read_manifest
    from less.selection.scoring import checkpoint_weights, less_scores

    s, store = req.selection, req.datastore
    man = read_manifest(store)
    dims = sorted({f["dim"] for f in man["files"]})
    flat = all(f.get("projection") == "none" for f in man["files"])
    dim = int(s.proj_dim) if s.proj_dim is not None and not flat else max(dims)
    if dim not in dims:
        raise ConfigError(f"selection.proj_dim={dim} is not in the datastore's dims {dims}")
    epochs = sorted({f["checkpoint"] for f in man["files"] if f["split"] == "pool"})
    use = list(s.checkpoints) if s.checkpoints else epochs
    if set(use) - set(epochs):
        raise ConfigError(f"selection.checkpoints {use} not all in the datastore's {epochs}")

    def arrays(split):
        fs = sorted((f for f in man["files"] if f["split"] == split and f["dim"] == dim
                     and f["checkpoint"] in use), key=lambda f: f["checkpoint"])
        ids = [json.loads(line)["id"] for line in open(fs[0]["idspath"])]
        return [FeatureArray(f["abspath"], f["dtype"], f["dim"]) for f in fs], ids, fs

    pool_x, pool_ids, pool_files = arrays("pool")
    target_x, target_ids, _ = arrays("target")
    pool_meta = json.loads((store / man["pool"] / "features.json").read_text())
    # Coverage: every pool example is either featurised or dropped with a reason, never skipped.
    if (set(pool_ids) | set(pool_meta["dropped_ids"]) != {str(r["id"]) for r in req.pool}
            or len(pool_ids) != len(set(pool_ids))):
        raise DataError(f"{store}: datastore rows do not cover the pool")
    lrs = [f["avg_lr"] for f in pool_files]
    weights = checkpoint_weights([1.0] * len(lrs) if s.checkpoint_weights == "uniform" else lrs)
    subtask = {str(r["id"]): r["subtask"] for r in req.target}
    scores = less_scores(pool_x, [np.asarray(t) for t in target_x], weights, [subtask[t] for t in target_ids],
                         reduce=s.subtask_reduce)
    return Scored(scores, pool_ids, {"proj_dim": dim, "checkpoints": use, "checkpoint_weights": weights.tolist(),
                                     "n_dropped": len(pool_meta["dropped_ids"]), "dropped": pool_meta["dropped"],
                                     "datastore": str(store)})

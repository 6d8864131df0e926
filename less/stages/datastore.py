"""The datastore: ``manifest.json`` listing every feature array (pool and target) with its checkpoint,
split, gradient type, dim and learning-rate weight. The arrays stay in the features artifacts."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from less.cache import Artifact, write_json_atomic
from less.errors import require
from less.gradients.store import DTYPES
from less.graph import Context, Inputs, Stage
from less.results import Cost
from less.stages.features import encoding_of
from less.stages.token_counts import pool_tokens_estimate
from less.stages.warmup import needs_gradients

log = logging.getLogger(__name__)
# pool features: Adam's update direction (LESS), the plain gradient, or g / sqrt(v + eps) on both
# pool and target (TrackStar); the target's are plain gradients unless precond
GRADIENT_TYPES = ("adam", "sgd", "precond")


def build(ctx: Context, inputs: Inputs, out: Path) -> None:
    """Paths are relative to the datastore's directory; ``out`` is a sibling of the final directory
    (both ``<cache>/datastore/<name>``), so they hold after the rename."""
    def rel(path: Path) -> str:
        return os.path.relpath(path, out)

    files = []
    for split in ("pool", "target"):
        split_dir = inputs[split].dir
        meta = json.loads((split_dir / "features.json").read_text())
        total = sum(c["avg_lr"] for c in meta["checkpoints"])
        for c in meta["checkpoints"]:
            for d, name in c["files"].items():
                entry = {"path": rel(split_dir / name), "checkpoint": c["epoch"], "split": meta["split"],
                         "gradient_type": meta["gradient_type"], "dim": int(d), "projection": meta["projection"],
                         "normalized": meta["normalized"], "dtype": meta["dtype"], "rows": meta["n"],
                         "avg_lr": c["avg_lr"], "lr_weight": c["avg_lr"] / total if total > 0 else None,
                         "ids": rel(split_dir / meta["ids"])}
                if meta["dtype"] == "int8":
                    entry["scale"] = rel(split_dir / name.replace(".npy", ".scale.npy"))
                files.append(entry)
    write_json_atomic(out / "manifest.json", {
        "pool": rel(inputs["pool"].dir), "target": rel(inputs["target"].dir), "files": files})


def features_meta(datastore_dir: Path) -> dict[str, dict[str, Any]]:
    """{split: features.json} of the datastore's pool and target features."""
    man = json.loads((datastore_dir / "manifest.json").read_text())
    return {split: json.loads((datastore_dir / man[split] / "features.json").read_text())
            for split in ("pool", "target")}


def report(ctx: Context, art) -> dict[str, Any]:
    metas = features_meta(art.dir)
    for split, m in metas.items():
        if m["dropped"]:
            log.warning("%s: %d examples dropped %s", split, len(m["dropped_ids"]), m["dropped"])
    return {"data": {split: {"dropped": m["dropped"], "truncated": m.get("truncated", 0)} for split, m in metas.items()}}


def _features(art: Artifact) -> tuple[int | None, int]:
    """(tokens, checkpoints) of the datastore's features."""
    metas = list(features_meta(art.dir).values())
    return (sum(m.get("n_tokens", 0) for m in metas) if metas else None), (len(metas[0]["checkpoints"]) if metas else 0)


def accounting(ctx: Context, art: Artifact | None) -> dict[str, Any]:
    tokens = _features(art)[0] if art is not None else None
    return {"tokens": {"features": tokens}} if tokens is not None else {}


def cost(ctx: Context, art: Artifact | None) -> Cost:
    """4 N per token per checkpoint (forward + backward to the LoRA weights); before it is built,
    on the pool's estimated tokens for the checkpoints the config names."""
    if art is not None:
        return Cost("selector", 4, *_features(art))
    ds = ctx.cfg.datastore
    n_ckpt = len(ds.checkpoints) if ds.checkpoints else (1 if not ds.use_warmup else ctx.cfg.warmup.epochs)
    return Cost("selector", 4, pool_tokens_estimate(ctx), n_ckpt)


def track(ctx: Context, art, reported: dict[str, Any], tracker) -> None:
    for split, rec in reported["data"].items():
        tracker.summary({f"data/{split}/dropped/{k}": v for k, v in rec["dropped"].items()})


def check(cfg: DictConfig) -> None:
    """``datastore.*``: gradient type, projection, shards, chunking, storage dtype, checkpoints."""
    ds, w = cfg.datastore, cfg.warmup
    require(ds.gradient_type in GRADIENT_TYPES,
            f"datastore.gradient_type must be one of {list(GRADIENT_TYPES)}, got {ds.gradient_type!r}")
    if isinstance(ds.projection, str):
        require(ds.projection == "none", f"datastore.projection must be a mapping or 'none', got {ds.projection!r}")
    else:
        dims = list(ds.projection.dims)
        require(bool(dims) and all(isinstance(d, int) and d > 0 for d in dims),
                f"datastore.projection.dims must be a non-empty list of positive integers, got {dims}")
        require(ds.projection.batch_size >= 1, f"datastore.projection.batch_size must be >= 1, got {ds.projection.batch_size}")
        if ds.dtype == "bit":
            require(all(d % 8 == 0 for d in dims), f"datastore.dtype=bit needs dims divisible by 8, got {dims}")
    require(0 <= ds.shard < ds.num_shards, f"datastore.shard must be in [0, num_shards={ds.num_shards}), got {ds.shard}")
    for key in ("chunk_size", "token_budget", "max_batch_size"):
        require(ds[key] >= 1, f"datastore.{key} must be >= 1, got {ds[key]}")
    require(ds.target_truncation in ("left", "right"),
            f"datastore.target_truncation must be left or right, got {ds.target_truncation!r}")
    require(ds.dtype in DTYPES, f"datastore.dtype must be one of {DTYPES}, got {ds.dtype!r}")
    encoding_of(ds)  # datastore.encoding: a one-line error naming the option
    if ds.checkpoints is not None and ds.use_warmup and not ds.warmup_dir:  # epochs 1..warmup.epochs exist
        require(all(1 <= e <= w.epochs for e in ds.checkpoints),
                f"datastore.checkpoints {list(ds.checkpoints)} must be epochs in 1..{w.epochs}")
    require(ds.use_warmup or ds.gradient_type == "sgd" or bool(ds.warmup_dir),
            "datastore.use_warmup=false has no optimizer state: set datastore.gradient_type=sgd")


DATASTORE = Stage(
    "datastore", step="datastore", build=build, applies=needs_gradients, config=lambda ctx: {},
    inputs=lambda ctx: {"pool": "pool_features", "target": "target_features"}, report=report, track=track,
    accounting=accounting, cost=cost, 
    wandb_id=lambda ctx: {"shard": [ctx.cfg.datastore.shard, ctx.cfg.datastore.num_shards]},
    wandb_type="datastore", wandb_files=("manifest.json",), check=check)

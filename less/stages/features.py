"""Gradient features of one split (pool: Adam direction or plain gradient; target: plain gradient)
at every warmup checkpoint: projected, normalised, stored as arrays (see less.gradients).

Extraction is resumable and shardable: rows are computed in chunks written atomically to a work
directory (``<cache>/features/.work-<key>``); a killed job skips the rows on disk (in chunks of any
size), and shard ``i`` of ``n`` computes its contiguous run of chunks. The pool's work directory
is shared by every job with the same key: each claims a chunk before computing it
(less.claims), so concurrent jobs split the work. Whichever job finds every row present
assembles the artifact. Each job extracts the (small) target alone.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from less import distributed
from less.cache import to_plain, write_json_atomic
from less.claims import Claims, uncovered
from less.checkpoints import CHECKPOINT_META, external_warmup_dir, external_warmup_spec, warmup_checkpoints
from less.data.formats import REFERENCE_ENCODING, Encoded, Encoding, encode_examples, read_examples, write_jsonl
from less.errors import ConfigError, DataError
from less.graph import Context, Inputs, Stage
from less.models import load_model, load_tokenizer, model_spec
from less.stages.model import source
from less.stages.warmup import needs_gradients

log = logging.getLogger(__name__)

# Settings that change only how fast or in how many jobs features are made, not what they are
# (beyond float rounding: see README, "What is reproducible"); they stay out of the key.
SPEED_ONLY = ("token_budget", "max_batch_size", "gradient_checkpointing", "chunk_size", "shard", "num_shards")


def datastore_spec(ds: DictConfig) -> dict[str, Any]:
    """The datastore settings features depend on."""
    spec = {k: v for k, v in to_plain(ds).items()
            if k not in SPEED_ONLY and k not in ("warmup_dir", "lr_weights", "encoding")}
    if isinstance(spec["projection"], dict):
        spec["projection"] = {k: v for k, v in spec["projection"].items() if k not in ("batch_size", "cache_gb")}
    return spec


# datastore.encoding options and the split whose encoding each changes (less.data.formats.Encoding)
ENCODING_SPLIT = {"eos_label": "pool", "turns": "pool", "answer_prefix": "target"}


def encoding_of(ds: DictConfig) -> Encoding:
    e = to_plain(ds.get("encoding")) or {}
    unknown = sorted(set(e) - set(ENCODING_SPLIT))
    if unknown:
        raise ConfigError(f"datastore.encoding: unknown option(s) {unknown}; choose from {sorted(ENCODING_SPLIT)}")
    for k in ("eos_label", "answer_prefix"):
        if not isinstance(e.get(k, True), bool):
            raise ConfigError(f"datastore.encoding.{k} must be true or false, got {e[k]!r}")
    return Encoding(**e)


def encoding_spec(ds: DictConfig, split: str) -> dict[str, Any]:
    """The encoding options that differ from the reference's and change ``split``'s encoding: they
    enter that split's keys (so the reference's encoding keeps the keys it always had)."""
    e, ref = encoding_of(ds), REFERENCE_ENCODING
    return {k: getattr(e, k) for k, s in ENCODING_SPLIT.items() if s == split and getattr(e, k) != getattr(ref, k)}


def encode_split(examples: list[dict[str, Any]], tok, cfg: DictConfig, split: str, path: Path) -> Encoded:
    """A split's examples encoded for their gradients (features, EK-FAC): D_val completions carry no
    EOS (as in LESS) and are cut by ``datastore.target_truncation``; pool examples are encoded as in
    training, cut on the right; ``datastore.encoding`` applies. None left with a label: an error."""
    ds = cfg.datastore
    enc = encode_examples(examples, tok, ds.max_length, completion_eos=split == "pool", chat_format=cfg.chat_format,
                          truncation="right" if split == "pool" else ds.target_truncation, encoding=encoding_of(ds))
    if not len(enc):
        raise DataError(f"{path}: no example has a labelled token ({dict(enc.dropped)})")
    return enc


def projection_dims(ds: DictConfig) -> list[int] | None:
    """Sorted projection dims, or None for ``datastore.projection=none`` (flat features)."""
    if isinstance(ds.projection, str):
        return None
    return sorted({int(d) for d in ds.projection.dims})


def chunks_of(n_rows: int, chunk_size: int, shard: int, num_shards: int) -> list[tuple[int, int]]:
    """This shard's chunks: a contiguous run of the split's fixed chunks (shard-independent)."""
    chunks = [(s, min(n_rows, s + chunk_size)) for s in range(0, n_rows, chunk_size)]
    lo, hi = len(chunks) * shard // num_shards, len(chunks) * (shard + 1) // num_shards
    return chunks[lo:hi]


class SplitFeatures:
    """Extraction of one split's features into resumable chunk files under ``work``; a
    :class:`less.graph.Work`."""

    def __init__(self, cfg: DictConfig, selector_cfg: DictConfig, selector_src: str, device, warmup_dir: Path,
                 examples_path: Path, split: str, work: Path):
        self.cfg, self.selector_cfg, self.selector_src = cfg, selector_cfg, selector_src
        self.ds, self.split, self.work, self.device = cfg.datastore, split, work, device
        self.warmup_dir = warmup_dir
        # the target's are plain gradients, except under precond (TrackStar: both sides preconditioned)
        self.gtype = self.ds.gradient_type if split == "pool" or self.ds.gradient_type == "precond" else "sgd"
        self.tok = load_tokenizer(selector_cfg, selector_src)
        self.examples = read_examples(examples_path)
        self.enc = encode_split(self.examples, self.tok, cfg, split, examples_path)
        self.ckpts = warmup_checkpoints(warmup_dir, self.ds)
        self.dims = projection_dims(self.ds)
        self.info: dict[str, Any] = {}

    def _flat_dim(self) -> int | None:
        meta = self.work / "flat_dim.txt"
        return int(meta.read_text()) if meta.is_file() else None

    @property
    def claims(self) -> Claims:
        return Claims(self.work / "claims", self.work.with_name(self.work.name + ".lock"))

    def done(self, epoch: int) -> list[tuple[int, int]]:
        """Row spans of ``epoch``'s finished chunks (of any chunk size)."""
        from less.gradients.store import done_chunks

        dmax = self.dims[-1] if self.dims else self._flat_dim()
        return [] if dmax is None else done_chunks(self.work, epoch, dmax)

    def missing(self, shard: int, num_shards: int) -> dict[int, list[tuple[int, int]]]:
        """{epoch: row spans of this shard's chunks that no finished chunk has}."""
        mine = chunks_of(len(self.enc), self.ds.chunk_size, shard, num_shards)
        return {c["epoch"]: [s for lo, hi in mine for s in uncovered(self.done(c["epoch"]), lo, hi)]
                for c in self.ckpts}

    def extract(self, shard: int = 0, num_shards: int = 1, finished=lambda: False) -> None:
        """Compute every row of this shard that no finished chunk has, sharing the work with any
        other job on the same work directory: each claims a chunk (or the part of one that nobody
        has) before computing it (less.claims), and waits for the others' claims on this shard's
        rows at the end, so that on return this shard's rows are all on disk (a killed job's claims
        are free again). ``finished()`` says the artifact exists (another job assembled it and
        removed the work): then there is nothing to do."""
        from tqdm.auto import tqdm

        from less.gradients.features import finish
        from less.gradients.store import write_chunk

        mine = chunks_of(len(self.enc), self.ds.chunk_size, shard, num_shards)
        claims = self.claims
        self.info["rows_computed"] = 0
        while True:
            for c in self.ckpts:
                epoch, tag = c["epoch"], f"ckpt{c['epoch']}"
                model = ex = bar = None
                try:
                    while True:
                        with claims.locked():
                            if finished():
                                return
                            claim = claims.claim(tag, mine, self.done(epoch))
                        if claim is None:
                            break
                        try:
                            if ex is None:
                                model, ex = self.extractor(self.warmup_dir / c["dir"])
                                if self.dims is None:  # every rank may write it: atomically
                                    tmp = self.work / f".flat_dim.{uuid.uuid4().hex}.tmp"
                                    tmp.write_text(str(ex.total))
                                    os.replace(tmp, self.work / "flat_dim.txt")
                                left = sum(b - a for a, b in self.missing(shard, num_shards)[epoch])
                                bar = tqdm(total=left, desc=f"{self.split} features epoch {epoch}", unit="ex",
                                           leave=False, disable=not distributed.is_main() or None)
                            x = ex.unscaled(self.enc, list(range(claim.start, claim.stop)))
                            feats = {d: finish(x[:, :d], bool(self.ds.normalize)).numpy()
                                     for d in (self.dims or [ex.total])}
                            write_chunk(self.work, epoch, feats, claim.start, claim.stop, self.ds.dtype)
                        finally:
                            claims.release(claim)
                        self.info["rows_computed"] += claim.stop - claim.start
                        bar.update(claim.stop - claim.start)
                finally:
                    if bar is not None:
                        bar.close()
                    if ex is not None:
                        ex.close()
                    del model
            with claims.locked():
                if finished() or not any(self.missing(shard, num_shards).values()):
                    return
                waiting = [(c["epoch"], s) for c in self.ckpts
                           for s in claims.busy(f"ckpt{c['epoch']}", mine, self.done(c["epoch"]))]
            if waiting:  # else a job that claimed rows died: the next round claims them
                e, span = waiting[0]
                log.info("%s features: waiting for rows %d..%d of epoch %d (claimed by another job)",
                         self.split, span[0], span[1], e)
                claims.wait(f"ckpt{e}", span)

    def discard(self) -> None:
        """Remove the work directory and its lock file (after assembly), under that lock: a job
        that takes the lock next (or the new lock file, once removed) finds the artifact first
        (``finished``), never a half-removed directory."""
        claims = self.claims
        with claims.locked():
            shutil.rmtree(self.work, ignore_errors=True)
            claims.lock.unlink(missing_ok=True)

    def extractor(self, ckpt_dir: Path):
        """(model with the checkpoint's adapter, its FeatureExtractor: moments, mapping, projection)."""
        import torch
        from peft import PeftModel

        from less.gradients.adam import load_moments
        from less.gradients.features import FeatureExtractor

        model = PeftModel.from_pretrained(load_model(self.selector_cfg, self.selector_src, self.device),
                                          str(ckpt_dir), is_trainable=True)
        moments, betas, eps = None, (0.9, 0.999), float(self.ds.adam_eps)
        if self.gtype in ("adam", "precond"):
            meta_file = ckpt_dir / CHECKPOINT_META
            names = json.loads(meta_file.read_text())["optimizer_param_names"] if meta_file.is_file() else None
            shapes = {n: tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad}
            mom = load_moments(ckpt_dir, names, shapes)
            moments, betas = mom.by_name, mom.betas or betas
            eps = mom.eps if mom.eps is not None else eps
        proj = self.ds.projection
        ex = FeatureExtractor(
            model, pad_id=self.tok.pad_token_id, dims=self.dims, seed=0 if self.dims is None else proj.seed,
            device=self.device, moments=moments, betas=betas, eps=eps, mapping=self.gtype, token_budget=self.ds.token_budget,
            max_batch=self.ds.max_batch_size,
            projection_batch=self.ds.max_batch_size if self.dims is None else proj.batch_size,
            cache_bytes=0 if self.dims is None else int(proj.cache_gb * 2**30))
        if self.ds.gradient_checkpointing:
            # HF checkpoints only in train mode; dropout modules stay in eval (features need it off)
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.train()
            for m in model.modules():
                if isinstance(m, torch.nn.Dropout):
                    m.eval()
        return model, ex

    @property
    def complete(self) -> bool:
        return (self.dims is not None or bool(self._flat_dim())) and all(not v for v in self.missing(0, 1).values())

    def assemble(self, out: Path) -> None:
        """The final features artifact: one array per (checkpoint, dim), rows in split order."""
        from less.gradients.store import assemble, assembly_plan

        dims = self.dims or [self._flat_dim()]
        entries = []
        for c in self.ckpts:
            plan = assembly_plan(self.work, c["epoch"], dims[-1], len(self.enc))
            files = {str(d): assemble(self.work, out, c["epoch"], d, plan, self.ds.dtype) for d in dims}
            entries.append({"epoch": c["epoch"], "avg_lr": c["avg_lr"], "files": files})
        write_jsonl(out / "ids.jsonl", [{"id": i} for i in self.enc.ids])
        write_json_atomic(out / "features.json", {
            "split": self.split, "gradient_type": self.gtype, "normalized": bool(self.ds.normalize),
            "projection": "none" if self.dims is None else "rademacher", "dims": dims, "dtype": self.ds.dtype,
            "n": len(self.enc), "n_tokens": sum(map(len, self.enc.input_ids)), "n_input": len(self.examples),
            "dropped": dict(self.enc.dropped),
            "truncated": self.enc.truncated, "dropped_ids": self.enc.dropped_ids, "ids": "ids.jsonl",
            "checkpoints": entries})


def checkpoints_dir(ctx: Context, inputs: Inputs) -> Path:
    return external_warmup_dir(ctx.cfg.datastore) or inputs["checkpoints"].dir


def _work(split: str):
    def work(ctx: Context, inputs: Inputs, work_dir: Path) -> SplitFeatures:
        ds = ctx.cfg.datastore
        sf = SplitFeatures(ctx.cfg, ctx.selector, source(ctx, inputs, "selector"), ctx.device,
                           checkpoints_dir(ctx, inputs), inputs["examples"].dir / f"{split}.jsonl", split, work_dir)
        shard, num_shards = (ds.shard, ds.num_shards) if split == "pool" else (0, 1)
        # the ranks of a torchrun job split this job's chunks; then wait for each other
        mine = distributed.subshard(shard, num_shards) if split == "pool" else (0, 1)
        sf.extract(*mine, finished=lambda: ctx.artifact(f"{split}_features").cached)
        if split == "pool" and distributed.started():  # every rank's rows are on disk after this
            by_rank = distributed.gather(sf.info["rows_computed"])
            sf.info.update(rows_computed=sum(by_rank), rows_by_rank=by_rank)
        log.info("%s features: this job computed %d rows (x checkpoints) of %d", split, sf.info["rows_computed"],
                 len(sf.enc) * len(sf.ckpts))
        if not sf.complete:
            left = sum(len(v) for v in sf.missing(0, 1).values())
            sf.info = {"shard": shard, "num_shards": num_shards, "missing_chunks": left,
                       "reason": f"shard {shard} of {num_shards} done, {left} chunks left to the other shards"}
        return sf
    return work


def _config(split: str):
    def config(ctx: Context) -> dict[str, Any]:
        ds = ctx.cfg.datastore
        spec = datastore_spec(ds)
        if split == "pool":
            spec.pop("target_truncation")
        elif spec.get("gradient_type") != "precond":  # plain target gradients whatever the pool's
            spec.pop("gradient_type")
        encoding = encoding_spec(ds, split)
        if encoding:
            spec["encoding"] = encoding
        return {"split": split, "selector": model_spec(ctx.selector), "chat_format": ctx.cfg.chat_format,
                "datastore": spec, "external_warmup": external_warmup_spec(ds) if ds.warmup_dir else None}
    return config


def _features(split: str) -> Stage:
    return Stage(
        f"{split}_features", kind="features", step="datastore", work=_work(split), config=_config(split),
        shared_work=split == "pool", ranks="split" if split == "pool" else "main", applies=needs_gradients,
        inputs=lambda ctx: {"examples": split, "selector": "selector",
                            "checkpoints": "warmup" if ctx.cfg.datastore.use_warmup else "init_adapter"})


POOL_FEATURES = _features("pool")
TARGET_FEATURES = _features("target")

"""EK-FAC influence (``selection=ekfac``, less/selection/ekfac.py): two artifacts of the select step.

- ``ekfac_factors``: kronfluence's EK-FAC factors of the selector with the last warmup checkpoint's
  LoRA adapter (LoRA modules only), fitted on the pool. Keyed by the selector, the warmup, the pool,
  its encoding and the fitting settings, so every damping, fraction and target reuses them.
- ``influence``: the pairwise scores of every target example (rows) against every pool example
  (columns), float32, with the ids of both; the method aggregates them over target subtasks.

Examples are encoded as the datastore encodes them (``datastore.max_length``, the pool with its
EOS labelled and cut on the right, D_val without EOS and cut by ``datastore.target_truncation``),
so the examples left unranked are the ones LESS leaves. kronfluence shows its own progress bars.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from less.cache import to_plain, write_json_atomic
from less.checkpoints import external_warmup_dir, external_warmup_spec, last_checkpoint
from less.data.formats import read_examples, write_jsonl
from less.errors import ConfigError
from less.graph import Context, Inputs, Stage
from less.models import load_model, load_tokenizer, model_spec
from less.stages.features import encode_split, encoding_spec
from less.stages.model import source


def applies(ctx: Context) -> bool:
    return ctx.method.needs == "influence"


def uses_warmup(ctx: Context) -> bool:
    """Whether the factors come from a warmup run of ours (then ``warmup`` is an input)."""
    return applies(ctx) and not ctx.cfg.datastore.warmup_dir


def _encoding(ctx: Context, splits: tuple[str, ...]) -> dict[str, Any]:
    """What the encoding of ``splits`` depends on (datastore.encoding: only the options that
    differ from the reference's and change these splits)."""
    ds = ctx.cfg.datastore
    spec = {"selector": model_spec(ctx.selector), "chat_format": ctx.cfg.chat_format, "max_length": ds.max_length,
            "external_warmup": external_warmup_spec(ds) if ds.warmup_dir else None}
    encoding = {k: v for split in splits for k, v in encoding_spec(ds, split).items()}
    return {**spec, "encoding": encoding} if encoding else spec


def _encode(ctx: Context, tok, inputs: Inputs, split: str):
    path = inputs[split].dir / f"{split}.jsonl"
    return encode_split(read_examples(path), tok, ctx.cfg, split, path)


def _selector(ctx: Context, inputs: Inputs):
    """(kronfluence-wrapped selector with the last warmup adapter, its task, tokenizer, n modules)."""
    from peft import PeftModel

    from less.selection.ekfac import lora_modules, prepare

    src = source(ctx, inputs, "selector")
    tok = load_tokenizer(ctx.selector, src)
    adapter = last_checkpoint(external_warmup_dir(ctx.cfg.datastore) or inputs["warmup"].dir)
    model = PeftModel.from_pretrained(load_model(ctx.selector, src, ctx.device), str(adapter), is_trainable=False)
    modules = lora_modules(model)
    model, task = prepare(model, modules)
    return model, task, tok, len(modules)


def build_factors(ctx: Context, inputs: Inputs, out: Path) -> None:
    from less.selection.ekfac import EncodedDataset, fit_factors, fit_subset

    e = ctx.cfg.selection.ekfac
    model, task, tok, n_modules = _selector(ctx, inputs)
    enc = _encode(ctx, tok, inputs, "pool")
    pool = EncodedDataset(enc, tok.pad_token_id, rows=fit_subset(len(enc), e.max_examples, ctx.cfg.seed))
    fit_factors(model, task, pool, out, ctx.device, batch_size=e.batch_size, seed=ctx.cfg.seed,
                max_examples=e.max_examples, fisher=e.fisher)
    write_json_atomic(out / "factors.json", {"n_fit": len(pool), "n_pool": len(enc), "n_modules": n_modules})


def factors_config(ctx: Context) -> dict[str, Any]:
    e = ctx.cfg.selection.ekfac
    return {**_encoding(ctx, ("pool",)), "fisher": e.fisher, "max_examples": e.max_examples, "batch_size": e.batch_size,
            "seed": ctx.cfg.seed}


def build_influence(ctx: Context, inputs: Inputs, out: Path) -> None:
    from less.selection.ekfac import EncodedDataset, pairwise_scores

    e = ctx.cfg.selection.ekfac
    model, task, tok, n_modules = _selector(ctx, inputs)
    pool_enc, target_enc = _encode(ctx, tok, inputs, "pool"), _encode(ctx, tok, inputs, "target")
    work = out / "kronfluence"
    target, pool = EncodedDataset(target_enc, tok.pad_token_id), EncodedDataset(pool_enc, tok.pad_token_id)
    scores = pairwise_scores(model, task, target, pool, inputs["factors"].dir, work, ctx.device,
                             batch_size=e.batch_size, damping=e.damping, query_gb=e.query_gb)
    scores = pool.in_enc_order(target.in_enc_order(scores, 0), 1)  # rows, columns in the ids' order
    shutil.rmtree(work)  # kronfluence's copy of the scores, and the link to the factors
    if scores.shape != (len(target_enc), len(pool_enc)) or not np.isfinite(scores).all():
        raise RuntimeError(f"ekfac: kronfluence returned scores of shape {scores.shape} (finite: "
                           f"{bool(np.isfinite(scores).all())}) for {len(target_enc)} x {len(pool_enc)} examples")
    np.save(out / "scores.npy", scores.astype(np.float32))
    write_jsonl(out / "pool_ids.jsonl", [{"id": i} for i in pool_enc.ids])
    write_jsonl(out / "target_ids.jsonl", [{"id": i} for i in target_enc.ids])
    write_json_atomic(out / "influence.json", {
        "damping": to_plain(e.damping), "n_modules": n_modules, "n_pool": len(pool_enc), "n_target": len(target_enc),
        "dropped": dict(pool_enc.dropped), "dropped_ids": pool_enc.dropped_ids, "truncated": pool_enc.truncated})


def influence_config(ctx: Context) -> dict[str, Any]:
    e = ctx.cfg.selection.ekfac
    return {**_encoding(ctx, ("pool", "target")), "target_truncation": ctx.cfg.datastore.target_truncation, "damping": e.damping,
            "batch_size": e.batch_size, "query_gb": e.query_gb}


def check(cfg) -> None:
    """kronfluence runs in one process here: its own multi-process mode (accelerate) is not wired
    into a torchrun job's ranks, where it would wait on barriers the other ranks never reach."""
    from less import distributed

    if cfg.selection.method == "ekfac" and distributed.world() > 1:
        raise ConfigError(f"selection=ekfac runs in one process, not under torchrun (WORLD_SIZE={distributed.world()}): "
                          "run its select step as a plain `python run.py` (it reads no datastore to shard)")


def _inputs(ctx: Context, **more: str) -> dict[str, str]:
    out = {"pool": "pool", "selector": "selector", **more}
    if uses_warmup(ctx):
        out["warmup"] = "warmup"
    return out


EKFAC_FACTORS = Stage("ekfac_factors", step="select", build=build_factors, applies=applies, config=factors_config,
                      inputs=lambda ctx: _inputs(ctx), wandb_type="ekfac_factors", check=check)
INFLUENCE = Stage("influence", step="select", build=build_influence, applies=applies, config=influence_config,
                  inputs=lambda ctx: _inputs(ctx, target="target", factors="ekfac_factors"), wandb_type="influence")

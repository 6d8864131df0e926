"""Per-example loss of the pool under the selector with the run's last warmup checkpoint (a fresh
LoRA for the no-warmup ablation, or ``datastore.warmup_dir``'s last checkpoint), one of the
correlates of a selection (less.stages.correlates). Forward passes only, in token-budget batches,
over the pool encoded as the datastore encodes it, so each loss is the mean token cross-entropy over
exactly the labelled tokens whose gradient the features took. Applies when the run has warmup
checkpoints (gradient features, EK-FAC, representations taken with the warmup model) and
``correlates.loss`` is on; a run without (random, BM25, ...) reports no loss correlate rather than
training a warmup for it. At scale it is one forward pass of the selector over the pool, on rank 0
of the select job: ``correlates.loss=false`` turns it off (``_paper`` presets do).

Artifact: ``losses.npy`` (float32, pool rows in encoded order), ``ids.jsonl``, ``losses.json``
(the checkpoint's directory name, what the encoding dropped, the tokens read). Its cost in the
run's accounting: 2 N per token.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from less.cache import write_json_atomic
from less.checkpoints import external_warmup_dir, external_warmup_spec, last_checkpoint
from less.data.formats import read_examples, write_jsonl
from less.graph import Context, Inputs, Stage
from less.models import load_model, load_tokenizer, model_spec
from less.results import Cost
from less.stages.features import encode_split, encoding_spec
from less.stages.model import source


def checkpoints_input(ctx: Context) -> str | None:
    """The stage whose checkpoints this run's selection used (None: external or none)."""
    from less.stages import influence, representations

    ds = ctx.cfg.datastore
    if ds.warmup_dir:
        return None
    if ctx.method.needs == "gradients":
        return "warmup" if ds.use_warmup else "init_adapter"
    return "warmup" if representations.uses_warmup(ctx) or influence.uses_warmup(ctx) else None


def loss_on(cfg) -> bool:
    """``correlates.loss`` (true where a run's saved config predates the setting)."""
    c = cfg.get("correlates")
    return True if c is None else bool(c.loss)


def applies(ctx: Context) -> bool:
    from less.stages import representations

    uses_model = ctx.method.needs in ("gradients", "influence") or (
        representations.applies(ctx) and representations.options(ctx)["model"] == "warmup")
    return loss_on(ctx.cfg) and uses_model and (
        checkpoints_input(ctx) is not None or bool(ctx.cfg.datastore.warmup_dir))


def inputs(ctx: Context) -> dict[str, str]:
    ckpt = checkpoints_input(ctx)
    return {"pool": "pool", "selector": "selector", **({"checkpoints": ckpt} if ckpt else {})}


def config(ctx: Context) -> dict[str, Any]:
    ds = ctx.cfg.datastore
    spec = {"selector": model_spec(ctx.selector), "chat_format": ctx.cfg.chat_format, "max_length": ds.max_length,
            "external_warmup": external_warmup_spec(ds) if ds.warmup_dir else None}
    encoding = encoding_spec(ds, "pool")
    return {**spec, "encoding": encoding} if encoding else spec


def per_example_losses(model, enc, pad_id: int, device, token_budget: int, max_batch: int, desc: str) -> np.ndarray:
    """(len(enc),) mean token cross-entropy over each example's labelled tokens, in ``enc``'s order."""
    import torch
    from tqdm.auto import tqdm

    from less.gradients.features import pad_batch, token_budget_batches
    from less.gradients.per_example import accepts_logits_to_keep, labelled_loss

    out = np.zeros(len(enc), dtype=np.float32)
    cut = accepts_logits_to_keep(model)
    batches = token_budget_batches([len(i) for i in enc.input_ids], token_budget, max_batch)
    model.eval()
    with torch.no_grad(), tqdm(total=len(enc), desc=desc, unit="ex", leave=False) as bar:
        for b in batches:
            out[b] = labelled_loss(model, *pad_batch(enc, b, pad_id, device), cut).cpu().numpy()
            bar.update(len(b))
    return out


def build(ctx: Context, inputs: Inputs, out: Path) -> None:
    from peft import PeftModel

    ds = ctx.cfg.datastore
    src = source(ctx, inputs, "selector")
    tok = load_tokenizer(ctx.selector, src)
    path = inputs["pool"].dir / "pool.jsonl"
    enc = encode_split(read_examples(path), tok, ctx.cfg, "pool", path)
    ckpt = last_checkpoint(external_warmup_dir(ds) or inputs["checkpoints"].dir)
    model = PeftModel.from_pretrained(load_model(ctx.selector, src, ctx.device), str(ckpt))
    losses = per_example_losses(model, enc, tok.pad_token_id, ctx.device, ds.token_budget, ds.max_batch_size,
                                "pool losses")
    np.save(out / "losses.npy", losses)
    write_jsonl(out / "ids.jsonl", [{"id": i} for i in enc.ids])
    write_json_atomic(out / "losses.json", {"checkpoint": ckpt.name, "n": len(enc), "dropped": dict(enc.dropped),
                                            "n_tokens": sum(map(len, enc.input_ids))})


def read(d: Path) -> dict[str, float]:
    """{pool id: loss} of a pool_losses artifact."""
    ids = [json.loads(line)["id"] for line in open(d / "ids.jsonl")]
    return {str(i): float(x) for i, x in zip(ids, np.load(d / "losses.npy"))}


def cost(ctx: Context, art) -> Cost:
    """2 N per token (one forward pass); before it is built, on the pool's estimated tokens."""
    from less.stages.token_counts import pool_tokens_estimate

    tokens = json.loads((art.dir / "losses.json").read_text())["n_tokens"] if art is not None else pool_tokens_estimate(ctx)
    return Cost("selector", 2, tokens, 1)


POOL_LOSSES = Stage("pool_losses", kind="losses", step="select", build=build, applies=applies, inputs=inputs,
                    config=config, cost=cost)

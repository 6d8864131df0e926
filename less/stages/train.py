"""The ``train`` step: LoRA (``train.mode=lora``) or full fine-tuning of the target model M_T on the
selection, with transformers' Trainer (less.training)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from less import distributed
from less.cache import to_plain, write_json_atomic
from less.data.formats import encode_examples, read_examples
from less.errors import DataError, require
from less.graph import Context, Inputs, Stage
from less.models import load_model, load_tokenizer, lora_config, model_spec
from less.stages.model import source
from less.stages.warmup import check_training, track_curve, training_accounting, training_cost, training_spec, training_summary


def build(ctx: Context, inputs: Inputs, out: Path) -> None:
    from peft import get_peft_model

    from less.training import fit

    cfg, t = ctx.cfg, ctx.cfg.train
    src = source(ctx, inputs, "model")
    tok = load_tokenizer(cfg.model, src)
    selected = inputs["selection"].dir / "selected.jsonl"
    enc = encode_examples(read_examples(selected), tok, t.max_length, chat_format=cfg.chat_format)
    if not len(enc):
        raise DataError(f"{selected}: no trainable example ({dict(enc.dropped)})")
    model = load_model(cfg.model, src, ctx.device, dtype=t.dtype)
    if t.mode == "lora":
        model = get_peft_model(model, lora_config(t.lora))
    metrics = fit(model, tok, enc, t, out / "trainer", cfg.seed, save_every_epoch=False, device=ctx.device,
                  stage="train", curve=ctx.curve("train"), save_to=out / ("adapter" if t.mode == "lora" else "model"))
    if not distributed.is_main():  # the other ranks of a torchrun job trained with it; rank 0 writes the rest
        return
    if t.mode == "full":
        tok.save_pretrained(out / "model")
    write_json_atomic(out / "train.json", {
        "mode": t.mode, "n_examples": len(enc), "n_tokens": sum(map(len, enc.input_ids)), "epochs": t.epochs,
        "dropped": dict(enc.dropped), "train_loss": metrics["train_loss"], "steps": metrics["steps"],
        "final_loss": metrics["final_loss"], "history": metrics["history"]})


def report(ctx: Context, art) -> dict[str, Any]:
    t = json.loads((art.dir / "train.json").read_text())
    return {"train": {k: t[k] for k in ("mode", "n_examples", "train_loss", "final_loss", "steps")}}


def selected_share(ctx: Context) -> float:
    """The share of the pool a selection keeps, as the plan assumes it (``selection.k``: 5%)."""
    s = ctx.cfg.selection
    return 1.0 if s.method == "full" else (s.get("fraction") or 0.05)


def check(cfg) -> None:
    require(cfg.train.mode in ("lora", "full"), f"train.mode must be lora or full, got {cfg.train.mode!r}")
    check_training(cfg, "train")


TRAIN = Stage(
    "train", step="train", build=build, ranks="all", report=report, track=track_curve("train", "train.json"),
    summary=training_summary("train"), accounting=training_accounting("train", "train.json"),
    cost=training_cost("model", "train.json", lambda ctx: ctx.cfg.train, selected_share),
    wandb_type="model", wandb_files=("train.json",), wandb_model=("adapter", "model"),
    inputs=lambda ctx: {"selection": "select", "model": "model"},
    config=lambda ctx: {"model": model_spec(ctx.cfg.model), "chat_format": ctx.cfg.chat_format,
                        "train": training_spec(ctx.cfg.train), "seed": ctx.cfg.seed},
    check=check)

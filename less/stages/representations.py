"""Mean-pooled last hidden states of the selector model for the pool and the target (RDS, KCenter)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from less.data.formats import encode_examples, read_examples, write_jsonl
from less.graph import Context, Inputs, Stage
from less.models import load_model, load_tokenizer, model_spec
from less.stages.model import source


def build(ctx: Context, inputs: Inputs, out: Path) -> None:
    from less.selection.embed import mean_pooled

    src = source(ctx, inputs, "selector")
    tok = load_tokenizer(ctx.selector, src)
    model = load_model(ctx.selector, src, ctx.device)
    for split in ("pool", "target"):
        rows = read_examples(inputs[split].dir / f"{split}.jsonl")
        enc = encode_examples(rows, tok, ctx.cfg.selection.max_length, completion_eos=split == "pool",
                              chat_format=ctx.cfg.chat_format, truncation="right" if split == "pool" else "left")
        np.save(out / f"{split}.npy", mean_pooled(model, enc, tok.pad_token_id, ctx.device,
                                                  desc=f"{split} representations"))
        write_jsonl(out / f"{split}_ids.jsonl", [{"id": i} for i in enc.ids])


REPRESENTATIONS = Stage(
    "representations", step="select", build=build,
    applies=lambda ctx: ctx.method.needs == "representations",
    inputs=lambda ctx: {"pool": "pool", "target": "target", "selector": "selector"},
    config=lambda ctx: {"selector": model_spec(ctx.selector), "chat_format": ctx.cfg.chat_format,
                        "max_length": ctx.cfg.selection.get("max_length")})

"""Tokens per pool example with the target model's tokenizer, as training would encode them
(for the run's accounting; built whenever a run has the pool)."""

from __future__ import annotations

from pathlib import Path

from less.cache import write_json_atomic
from less.data.formats import encode_examples, read_examples
from less.graph import Context, Inputs, Stage
from less.models import load_tokenizer, model_spec
from less.stages.model import source


def build(ctx: Context, inputs: Inputs, out: Path) -> None:
    tok = load_tokenizer(ctx.cfg.model, source(ctx, inputs, "model"))
    rows = read_examples(inputs["pool"].dir / "pool.jsonl")
    enc = encode_examples(rows, tok, ctx.cfg.train.max_length, chat_format=ctx.cfg.chat_format)
    write_json_atomic(out / "tokens.json", {"by_id": dict(zip(enc.ids, map(len, enc.input_ids))),
                                            "dropped": dict(enc.dropped)})


TOKEN_COUNTS = Stage(
    "token_counts", build=build, inputs=lambda ctx: {"pool": "pool", "model": "model"},
    config=lambda ctx: {"model": model_spec(ctx.cfg.model), "chat_format": ctx.cfg.chat_format,
                        "max_length": ctx.cfg.train.max_length})

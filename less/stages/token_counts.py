"""Tokens per pool example with the target model's tokenizer, as training would encode them: the
run's accounting of the pool's and the selection's tokens (counted whenever a run has the pool),
and, before they are counted, the plan's estimate of the pool's tokens that costs start from."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from less.cache import Artifact, write_json_atomic
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


def accounting(ctx: Context, art: Artifact | None) -> dict[str, Any]:
    """The pool's tokens and the selection's, when this run has the pool (counted here if need be)."""
    pool = ctx.got("pool")
    if pool is None:
        return {}
    counts = json.loads((ctx.get("token_counts").dir / "tokens.json").read_text())["by_id"]
    tokens = {"pool": sum(counts.values())}
    selection = ctx.got("select")
    if selection is not None:
        ids = [json.loads(line)["id"] for line in open(selection.dir / "selected.jsonl")]
        tokens["selected"] = sum(counts.get(str(i), 0) for i in ids)
    return {"tokens": tokens}


def pool_tokens_estimate(ctx: Context) -> int | None:
    """~4 characters per token of the pool's text, once the pool is in the cache (else None)."""
    pool = ctx.artifact("pool")
    return _characters(pool.dir / "pool.jsonl") // 4 if pool.cached else None


@functools.cache
def _characters(path: Path) -> int:  # a plan's costs all start from it; an artifact never changes
    return sum(len(line) for line in open(path, encoding="utf-8"))


TOKEN_COUNTS = Stage(
    "token_counts", build=build, inputs=lambda ctx: {"pool": "pool", "model": "model"}, own_line=None,
    accounting=accounting, plan=lambda ctx: {"pool_tokens_estimate": pool_tokens_estimate(ctx)},
    config=lambda ctx: {"model": model_spec(ctx.cfg.model), "chat_format": ctx.cfg.chat_format,
                        "max_length": ctx.cfg.train.max_length})

"""Hidden-state representations of the pool and the target (RDS, KCenter): the selector model's last
layer at each example's last non-padding token (``pooling: last``, the reference's ``collect_reps``)
or averaged over its tokens (``mean``); computed by the selector with the last warmup checkpoint's
LoRA adapter loaded (``model: warmup``; an input of this stage, or ``datastore.warmup_dir``'s last
checkpoint) or by the selector alone (``base``). Both options are the method's own settings
(``selection.rds.*``, ``selection.kcenter.*``) and part of this artifact's key, so RDS and KCenter
share one artifact when they agree. Rows are written to disk as they are computed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from less.checkpoints import external_warmup_dir, external_warmup_spec, last_checkpoint
from less.data.formats import encode_examples, read_examples, write_jsonl
from less.errors import DataError
from less.graph import Context, Inputs, Stage
from less.models import load_model, load_tokenizer, model_spec
from less.stages.model import source


def applies(ctx: Context) -> bool:
    return ctx.method.needs == "representations"


def options(ctx: Context) -> dict[str, str]:
    from less.selection.embed import options as method_options

    return method_options(ctx.cfg.selection)


def uses_warmup(ctx: Context) -> bool:
    """Whether this run's representations come from a warmup checkpoint of ours (then the warmup
    stage applies and is this stage's input)."""
    return applies(ctx) and options(ctx)["model"] == "warmup" and not ctx.cfg.datastore.warmup_dir


def _adapter_dir(ctx: Context, inputs: Inputs) -> Path:
    return last_checkpoint(external_warmup_dir(ctx.cfg.datastore) or inputs["warmup"].dir)


def build(ctx: Context, inputs: Inputs, out: Path) -> None:
    from less.gradients.store import NpyRowWriter
    from less.selection.embed import iter_representations

    opts = options(ctx)
    src = source(ctx, inputs, "selector")
    tok = load_tokenizer(ctx.selector, src)
    model = load_model(ctx.selector, src, ctx.device)
    if opts["model"] == "warmup":
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(_adapter_dir(ctx, inputs)), is_trainable=False)
    model.eval()  # LoRA dropout off
    for split in ("pool", "target"):
        rows = read_examples(inputs[split].dir / f"{split}.jsonl")
        enc = encode_examples(rows, tok, ctx.cfg.selection.max_length, completion_eos=split == "pool",
                              chat_format=ctx.cfg.chat_format, truncation="right" if split == "pool" else "left")
        if not len(enc):
            raise DataError(f"{split}: no example has a labelled token ({dict(enc.dropped)})")
        writer = None
        for idx, x in iter_representations(model, enc, tok.pad_token_id, ctx.device, opts["pooling"],
                                           desc=f"{split} representations"):
            if writer is None:
                writer = NpyRowWriter(out / f"{split}.npy", len(enc), x.shape[1])
            writer.write(idx, x)
        writer.close()
        write_jsonl(out / f"{split}_ids.jsonl", [{"id": i} for i in enc.ids])


def inputs(ctx: Context) -> dict[str, str]:
    out = {"pool": "pool", "target": "target", "selector": "selector"}
    if uses_warmup(ctx):
        out["warmup"] = "warmup"
    return out


def config(ctx: Context) -> dict[str, Any]:
    opts = options(ctx)
    ds = ctx.cfg.datastore
    external = None
    if opts["model"] == "warmup" and ds.warmup_dir:
        spec = external_warmup_spec(ds)
        external = {"external": spec["external"], "files": spec["files"]}
    return {"selector": model_spec(ctx.selector), "chat_format": ctx.cfg.chat_format,
            "max_length": ctx.cfg.selection.get("max_length"), **opts, "external_warmup": external}


REPRESENTATIONS = Stage("representations", step="select", build=build, applies=applies, inputs=inputs, config=config,
                        wandb_type="representations")

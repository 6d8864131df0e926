"""The models built here (``model.kind: tiny``, or ``small``: pretrained on the pools under
``data.root``, less.small_model): the selector M_S and the target model M_T.
Hub or local checkpoints (``kind: hf``) are not artifacts; their identity (path and, for a local
directory, its files' sizes and mtimes) enters the keys of the stages that use them."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from omegaconf import DictConfig

from less.data.sources import data_spec
from less.graph import Context, Inputs, Stage
from less.models import BUILT_KINDS, build_tiny, model_source, model_spec


def _built(name: str, pick: Callable[[Context], DictConfig]) -> Stage:
    def build(ctx: Context, inputs: Inputs, out: Path) -> None:
        cfg = pick(ctx)
        if cfg.kind == "small":
            from less.small_model import build_small

            # resumable: its tokenizer and training state live beside the artifact until it is built
            build_small(cfg, ctx.cfg.data, out, out.with_name(".work-" + out.name.removeprefix(".tmp-")))
        else:
            build_tiny(cfg, out)

    def config(ctx: Context) -> dict:
        cfg = pick(ctx)
        return {**model_spec(cfg), **({"data": data_spec(ctx.cfg.data)} if cfg.kind == "small" else {})}

    return Stage(name, kind="model", config=config, applies=lambda ctx: pick(ctx).kind in BUILT_KINDS, build=build)


SELECTOR = _built("selector", lambda ctx: ctx.selector)
MODEL = _built("model", lambda ctx: ctx.cfg.model)


def source(ctx: Context, inputs: Inputs, role: str) -> str:
    """Where the model playing ``role`` ("selector" or "model") loads from."""
    cfg = ctx.selector if role == "selector" else ctx.cfg.model
    return model_source(cfg, inputs[role].dir if role in inputs else None)

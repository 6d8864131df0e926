"""The tiny models built here (``model.kind: tiny``): the selector M_S and the target model M_T.
Hub or local checkpoints (``kind: hf``) are not artifacts; their identity (path and, for a local
directory, its files' sizes and mtimes) enters the keys of the stages that use them."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from omegaconf import DictConfig

from less.graph import Context, Inputs, Stage
from less.models import build_tiny, model_source, model_spec


def _tiny(name: str, pick: Callable[[Context], DictConfig]) -> Stage:
    def build(ctx: Context, inputs: Inputs, out: Path) -> None:
        build_tiny(pick(ctx), out)

    return Stage(name, kind="model", config=lambda ctx: model_spec(pick(ctx)),
                 applies=lambda ctx: pick(ctx).kind == "tiny", build=build)


SELECTOR = _tiny("selector", lambda ctx: ctx.selector)
MODEL = _tiny("model", lambda ctx: ctx.cfg.model)


def source(ctx: Context, inputs: Inputs, role: str) -> str:
    """Where the model playing ``role`` ("selector" or "model") loads from."""
    cfg = ctx.selector if role == "selector" else ctx.cfg.model
    return model_source(cfg, inputs[role].dir if role in inputs else None)

"""The models built here (``model.kind: tiny``, or ``small``: pretrained on the pools under
``data.root``, less.small_model): the selector M_S and the target model M_T.
Hub or local checkpoints (``kind: hf``) are not artifacts; their identity (a hub id, or a local
directory's files by content) enters the keys of the stages that use them."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from omegaconf import DictConfig

from less.data.pools import RAW_PATHS
from less.graph import Context, Inputs, Stage
from less.identity import data_id
from less.models import BUILT_KINDS, build_tiny, model_source, model_spec, param_count


def _built(name: str, pick: Callable[[Context], DictConfig], check: Callable[[DictConfig], None]) -> Stage:
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
        # the small model reads every raw pool source under data.root (less.sp_tokenizer.pool_texts)
        return {**model_spec(cfg), **({"data": data_id(ctx.cfg.data, RAW_PATHS.values())} if cfg.kind == "small" else {})}

    def params(ctx: Context) -> int | None:
        """Its parameters, counted from its config (a model built here: once it is built)."""
        cfg = pick(ctx)
        built = ctx.artifact(name) if cfg.kind in BUILT_KINDS else None
        if built is not None and not built.cached:
            return None
        return param_count(model_source(cfg, built.dir if built else None), bool(cfg.trust_remote_code))

    return Stage(name, kind="model", config=config, applies=lambda ctx: pick(ctx).kind in BUILT_KINDS, build=build,
                 params=params, own_line=lambda ctx: {"built": pick(ctx).kind}, check=check)


def _check(role: str) -> Callable[[DictConfig], None]:
    def check(cfg: DictConfig) -> None:
        m = cfg.get(role)
        if m is not None and m.kind == "small":  # pretrained on data.root: it must be there
            from less.small_model import require_root

            require_root(cfg.data)
    return check


SELECTOR = _built("selector", lambda ctx: ctx.selector, _check("selector"))
MODEL = _built("model", lambda ctx: ctx.cfg.model, _check("model"))


def source(ctx: Context, inputs: Inputs, role: str) -> str:
    """Where the model playing ``role`` ("selector" or "model") loads from."""
    cfg = ctx.selector if role == "selector" else ctx.cfg.model
    return model_source(cfg, inputs[role].dir if role in inputs else None)

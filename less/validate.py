"""Up-front config checks, so a bad value fails before any stage runs (and names its key). Each
stage checks the slice of config it owns (``Stage.check``: warmup and train their Trainer
settings, the datastore ``datastore.*``, select ``selection.*`` and its method, eval ``eval.*``,
the models their data root, prepare its pool and target kinds); this module only composes them,
with the few settings no stage owns."""

from __future__ import annotations

from omegaconf import DictConfig

from less.errors import require
from less.graph import STEPS, Stage


def validate(cfg: DictConfig, graph: tuple[Stage, ...] | None = None) -> None:
    if graph is None:
        from less.stages import GRAPH as graph
    unknown = [s for s in cfg.stages if s not in STEPS]
    require(not unknown, f"stages: unknown stage(s) {unknown}; choose from {list(STEPS)}")
    for stage in graph:  # every stage's, whether this run needs it or not: a sweep fails at once
        if stage.check is not None:
            stage.check(cfg)
    require(cfg.chat_format in ("tulu", "tokenizer"), f"chat_format must be tulu or tokenizer, got {cfg.chat_format!r}")
    require(cfg.logger.name in ("wandb", "none"), f"logger.name must be wandb or none, got {cfg.logger.name!r}")
    if cfg.logger.name == "wandb":
        require(cfg.logger.mode in ("offline", "online", "disabled"),
                f"logger.mode must be offline, online or disabled, got {cfg.logger.mode!r}")

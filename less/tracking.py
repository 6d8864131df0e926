"""Experiment tracking: W&B (offline unless the user asks for online) or nothing.

One W&B run per job, grouped by the experiment name so a sweep's jobs compare on one dashboard.
Offline mode never touches the network; a run is uploaded later with ``wandb sync <dir>``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class NullTracker:
    mode = None
    dir = None
    url = None

    def log(self, metrics: dict[str, Any]) -> None:
        pass

    def summary(self, metrics: dict[str, Any]) -> None:
        pass

    def table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        pass

    def histogram(self, key: str, values: np.ndarray) -> None:
        pass

    def artifact(self, name: str, kind: str, files: list[Path]) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbTracker(NullTracker):
    def __init__(self, cfg: DictConfig, run_config: dict[str, Any], run_dir: Path, name: str):
        import wandb

        self._wandb = wandb
        mode = cfg.mode
        wdir = Path(cfg.dir) if cfg.get("dir") else run_dir
        wdir.mkdir(parents=True, exist_ok=True)
        settings = wandb.Settings(init_timeout=float(cfg.init_timeout), silent=True,
                                  x_disable_stats=True)
        self.run = wandb.init(project=cfg.project, entity=cfg.get("entity") or None,
                              group=cfg.group, name=name, mode=mode, dir=str(wdir),
                              config=run_config, tags=list(cfg.get("tags") or []),
                              job_type=cfg.get("job_type") or "less", settings=settings, reinit="finish_previous")
        self.mode = mode
        self.dir = str(Path(self.run.dir).parent) if mode != "disabled" else None
        self.url = self.run.get_url() if mode == "online" else None

    def log(self, metrics: dict[str, Any]) -> None:
        self.run.log(metrics)

    def summary(self, metrics: dict[str, Any]) -> None:
        self.run.summary.update(metrics)

    def table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        self.run.log({key: self._wandb.Table(columns=columns, data=rows[:10_000])})

    def histogram(self, key: str, values: np.ndarray) -> None:
        self.run.log({key: self._wandb.Histogram(np.asarray(values, dtype=np.float64))})

    def artifact(self, name: str, kind: str, files: list[Path]) -> None:
        art = self._wandb.Artifact(name=name, type=kind)
        for f in files:
            art.add_file(str(f))
        self.run.log_artifact(art)

    def finish(self) -> None:
        self.run.finish()


def make_tracker(cfg: DictConfig, run_config: dict[str, Any], run_dir: Path, name: str) -> NullTracker:
    if cfg.name == "none":
        return NullTracker()
    if cfg.name == "wandb":
        os.environ.setdefault("WANDB_SILENT", "true")
        return WandbTracker(cfg, run_config, run_dir, name)
    raise ValueError(f"logger.name must be wandb or none, got {cfg.name!r}")

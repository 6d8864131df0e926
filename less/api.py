"""The Python API, for notebooks and scripts: the same config and pipeline as ``python run.py``.

    from less.api import compose, run
    cfg = compose(["selection=random", "stages=[prepare,select]"])   # a DictConfig, nothing run
    results = run(["selection=random", "stages=[prepare,select]"])   # results.json's dict

    import analysis
    df = analysis.load("multirun/default/2026-11-22_12-00-00")         # one row per run (pandas)

Outside a Hydra run, ``cache_dir`` defaults to ``$LESS_CACHE_DIR`` or ``./cache`` (as on the
command line) and each run writes to ``outputs/<name>/<date_time>/`` under the current directory
unless ``out_dir`` is given.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from less import resolvers

resolvers.register()


def compose(overrides: list[str] | None = None) -> DictConfig:
    """The composed config for these overrides, as ``python run.py <overrides>`` would see it (the
    ``hydra`` node left out; ``cache_dir`` resolved against the current directory)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from less.paths import conf_dir

    overrides = list(overrides or [])
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=overrides, return_hydra_config=False)
    if not any(o.lstrip("+").startswith("cache_dir=") for o in overrides):
        with open_dict(cfg):  # its default interpolates ${hydra:runtime.cwd}, unset outside a Hydra run
            cfg.cache_dir = os.environ.get("LESS_CACHE_DIR") or str(Path.cwd() / "cache")
    return cfg


def run(overrides: list[str] | None = None, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Run the pipeline for these overrides in this process; returns results.json's dict. Errors of
    the user's config or data raise ``less.errors.LessError`` (one line) instead of exiting."""
    from less.runner import Runner

    cfg = compose(overrides)
    out = Path(out_dir) if out_dir else Path("outputs") / cfg.name / time.strftime("%Y-%m-%d_%H-%M-%S")
    return Runner(cfg, out).run()

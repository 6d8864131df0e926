"""The command-line entrypoints, installed as console scripts (pyproject ``[project.scripts]``):

    less-run [overrides]          the pipeline, as ``python run.py`` (Hydra: ``-m`` sweeps, ``--help``)
    less-analysis <sweep dir>     tables and plots of a sweep, as ``python -m analysis``

Both work from any directory: the config tree is found through ``less.paths.conf_dir()``, and
outputs (``outputs/``, ``multirun/``) and the default ``cache_dir`` are relative to the current
directory.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from less.paths import conf_dir
from less.runner import run


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


def analysis() -> None:
    """``python -m analysis`` (returns None: a console script exits with what its function returns)."""
    from analysis.__main__ import main as analysis_main

    analysis_main(sys.argv[1:])

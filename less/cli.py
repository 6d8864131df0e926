"""The command-line entrypoints, installed as console scripts (pyproject ``[project.scripts]``):

    less-run [overrides]          the pipeline, as ``python run.py`` (Hydra: ``-m`` sweeps, ``--help``)
    less-analysis <sweep dir>     tables and plots of a sweep, as ``python -m analysis``

Both work from any directory: the config tree is found through ``less.paths.conf_dir()``, and
outputs (``outputs/``, ``multirun/``) and the default ``cache_dir`` are relative to the current
directory.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from less import distributed, help, resolvers
from less.errors import LessError
from less.paths import conf_dir
from less.runner import Runner

resolvers.register()
help.register()


def rank_overrides(argv: list[str]) -> list[str]:
    """The command line of one process of a torchrun/accelerate job: rank 0 keeps Hydra's output
    directory (results.json, run.log, .hydra); the other ranks write none (no ``.hydra``, logs to
    stdout, ``hydra.run.dir=.``: a timestamped directory would differ between ranks). A sweep (``-m``) is one launch per job instead."""
    if distributed.world() <= 1:
        return argv
    if any(a in ("-m", "--multirun") for a in argv[1:]):
        print(f"error: -m (a sweep) under a launcher of {distributed.world()} processes: launch each job "
              "with torchrun on its own (see docs/multi-gpu.md)", file=sys.stderr)
        sys.exit(2)
    if distributed.is_main():
        return argv
    return argv + ["hydra.output_subdir=null", "hydra/job_logging=stdout", "hydra.run.dir=."]  # the last value wins


def run(cfg: DictConfig, out_dir: Path | None = None) -> dict[str, Any]:
    """The pipeline for a composed config (``out_dir``: Hydra's output directory unless given).
    User errors become one line on stderr and exit code 2."""
    try:
        return Runner(cfg, out_dir or Path(HydraConfig.get().runtime.output_dir)).run()
    except LessError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
def _main(cfg: DictConfig) -> None:
    run(cfg)


def main() -> None:
    sys.argv = rank_overrides(sys.argv)
    _main()


def analysis() -> None:
    """``python -m analysis`` (returns None: a console script exits with what its function returns)."""
    from analysis.__main__ import main as analysis_main

    analysis_main(sys.argv[1:])

"""Shared fixtures. Everything offline: no test touches the network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ.pop("WANDB_API_KEY", None)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One artifact cache for the session, so the tiny model is built once."""
    return tmp_path_factory.mktemp("less-cache")


def run_cli(args: list[str], cache: Path, out: Path, timeout: int = 600, multirun: bool = False
            ) -> subprocess.CompletedProcess:
    """Run ``python run.py`` in a subprocess with its outputs under ``out``."""
    env = {**os.environ, "LESS_CACHE_DIR": str(cache)}
    dir_args = [f"hydra.sweep.dir={out}"] if multirun else [f"hydra.run.dir={out}"]
    cmd = [sys.executable, str(ROOT / "run.py"), *(["-m"] if multirun else []), *args, *dir_args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def compose(overrides: list[str] | None = None):
    """Compose the Hydra config as run.py would (without running)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides or [], return_hydra_config=True)


@pytest.fixture(scope="session")
def tiny_model_cfg():
    return compose().model


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_cfg, shared_cache):
    from less.cache import Cache
    from less.models import load_tokenizer

    return load_tokenizer(tiny_model_cfg, Cache(shared_cache))

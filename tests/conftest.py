"""Shared fixtures. Everything offline: no test touches the network.

Pipeline runs happen in-process (``run_pipeline``: compose the config as run.py would, run the
runner) against one session cache, so the tiny model, the warmup and the datastore of the default
configuration are built once per test session (``default_run``). Subprocess runs (``run_cli``)
are kept for what only the command line shows: Hydra's own errors, sweeps, launchers, W&B, kills.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from less import resolvers
from less.paths import conf_dir

resolvers.register()  # as run.py and less.api do

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ.pop("WANDB_API_KEY", None)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
CONF = conf_dir()  # the repository's conf/ in a checkout, less/conf/ in an installed copy
DATA = ROOT.parent / "shared" / "data"
SHARED_CACHE = ROOT.parent / "shared" / "cache"  # a read-only cache root (the small model), when present
if SHARED_CACHE.is_dir():
    os.environ["LESS_CACHE_READONLY"] = os.pathsep.join(
        filter(None, [os.environ.get("LESS_CACHE_READONLY"), str(SHARED_CACHE)]))
needs_data = pytest.mark.skipif(not (DATA / "mmlu").is_dir(),
                                reason=f"real data not found at {DATA} (../shared/data beside the checkout)")


def compose(overrides: list[str] | None = None, hydra: bool = True):
    """Compose the Hydra config as run.py would (without running); ``hydra=False`` leaves out the
    ``hydra`` node (whose interpolations only resolve inside a Hydra run)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides or [], return_hydra_config=hydra)


def run_pipeline(overrides: list[str], cache: Path, out: Path) -> dict[str, Any]:
    """``python run.py <overrides>`` in this process (logger=none unless overridden): results.json's dict."""
    from less.runner import Runner

    quiet = [] if any(o.startswith("logger=") for o in overrides) else ["logger=none"]
    cfg = compose([f"cache_dir={cache}", *quiet, *overrides], hydra=False)
    return Runner(cfg, out).run()


def run_expecting_error(overrides: list[str], cache: Path, out: Path, capsys) -> str:
    """The one ``error:`` line an in-process run prints before exiting with code 2."""
    from less.cli import run

    cfg = compose([f"cache_dir={cache}", "logger=none", *overrides], hydra=False)
    with pytest.raises(SystemExit) as exc:
        run(cfg, out)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert exc.value.code == 2 and len(err) == 1, err
    return err[0]


def run_cli(args: list[str], cache: Path, out: Path, timeout: int = 900, multirun: bool = False,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python run.py`` in a subprocess with its outputs under ``out``."""
    env = {**os.environ, "LESS_CACHE_DIR": str(cache), **(env or {})}
    dir_args = [f"hydra.sweep.dir={out}"] if multirun else [f"hydra.run.dir={out}"]
    cmd = [sys.executable, str(ROOT / "run.py"), *(["-m"] if multirun else []), *args, *dir_args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def kill_run(where: str, args: list[str], cache: Path, out: Path) -> subprocess.CompletedProcess:
    """``python run.py <args>`` SIGKILLed at ``where`` (tests/kill_at.py), with ``logger=none``."""
    env = {**os.environ, "LESS_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, "-m", "tests.kill_at", where, "logger=none", *args, f"hydra.run.dir={out}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def run_cli_together(jobs: list[list[str]], cache: Path, out: Path, timeout: int = 900,
                     env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Start ``python run.py <args>`` for each job at once on one cache; their results.json dicts."""
    env = {**os.environ, "LESS_CACHE_DIR": str(cache), **(env or {})}
    procs = [subprocess.Popen([sys.executable, str(ROOT / "run.py"), "logger=none", *args, f"hydra.run.dir={out / str(i)}"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i, args in enumerate(jobs)]
    for p in procs:
        log, _ = p.communicate(timeout=timeout)
        assert p.returncode == 0, log[-3000:]
    return [json.loads((out / str(i) / "results.json").read_text()) for i in range(len(jobs))]


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One artifact cache for the session: the tiny model, warmup and datastore are built once."""
    return tmp_path_factory.mktemp("less-cache")


def with_session_models(shared_cache: Path, cache: Path) -> Path:
    """``cache`` holding the models the session built already (the tiny model: no data in its key),
    so that a test's own cache does not build them again."""
    import shutil

    if (shared_cache / "model").is_dir():
        shutil.copytree(shared_cache / "model", cache / "model", symlinks=True)
    return cache


@pytest.fixture(scope="session")
def default_run(shared_cache, tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    """The embedded default, every stage, built in this process against the session cache (where
    other tests may have built some of its artifacts already, e.g. the tiny model)."""
    out = tmp_path_factory.mktemp("default")
    return out, run_pipeline([], shared_cache, out)


@pytest.fixture(scope="session")
def tiny_model_cfg():
    return compose().model


@pytest.fixture(scope="session")
def tiny_model_dir(shared_cache, tmp_path_factory) -> Path:
    """The tiny model alone (built in the session cache if missing)."""
    from less.runner import Runner

    cfg = compose([f"cache_dir={shared_cache}", "logger=none"], hydra=False)
    return Runner(cfg, tmp_path_factory.mktemp("model")).get("model").dir


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir, tiny_model_cfg):
    from less.models import load_tokenizer

    return load_tokenizer(tiny_model_cfg, str(tiny_model_dir))


def linked_cache(src: Path, dst: Path, kinds=("model", "pool", "target", "warmup")) -> Path:
    """A new cache holding links to ``src``'s artifacts of ``kinds`` (read-only reuse), so a test
    rebuilds only the stages it is about."""
    for kind in kinds:
        if (src / kind).is_dir():
            (dst / kind).mkdir(parents=True, exist_ok=True)
            for d in (src / kind).iterdir():
                if d.is_dir() and not d.name.startswith("."):
                    (dst / kind / d.name).symlink_to(d)
    return dst

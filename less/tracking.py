"""Experiment tracking: W&B (offline unless the user asks for online) or nothing.

One W&B run per job, grouped by the experiment name so a sweep's jobs compare on one dashboard.
Offline mode never touches the network; a run is uploaded later with ``wandb sync <dir>``.

W&B never ends a run: before ``wandb.init`` online the API key is looked up (W&B's own lookup:
WANDB_API_KEY, netrc, settings; never a prompt) and the W&B host is probed with a short TCP
connect (``logger.probe_timeout``); without either, or when ``wandb.init`` online raises anyway,
the run logs offline and says so in one line on stderr (and in results.json ``wandb.fallback``).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def _api_key_problem(base_url: str) -> str | None:
    """Why no W&B API key can be used for ``base_url``, by W&B's own lookup (WANDB_API_KEY, the
    netrc file, W&B's settings) without its interactive prompt; None when one is found."""
    try:
        from wandb.errors import AuthenticationError
        from wandb.sdk.lib import wbauth
    except ImportError:  # another wandb layout: the environment variable alone
        return None if os.environ.get("WANDB_API_KEY") else "no API key (set WANDB_API_KEY or run wandb login)"
    try:
        found = wbauth.authenticate_session(host=base_url, source="less", prompt=False, update_session=False)
    except AuthenticationError as e:
        return f"unusable API key ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    return None if found is not None else "no API key (set WANDB_API_KEY or run wandb login)"


def _unreachable(url: str, timeout: float) -> str | None:
    """Why a TCP connection to ``url``'s host (or the proxy the environment sets for it) does not
    open within ``timeout`` seconds, name resolution included; None when it opens."""
    u = urlsplit(url)
    host, port = u.hostname, u.port or (443 if u.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(u.scheme)
    if proxy and host and not urllib.request.proxy_bypass(host):
        p = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = p.hostname, p.port or (443 if p.scheme == "https" else 80)
    if not host:
        return "no host in the URL"
    result: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(None)
        except OSError as e:
            result.append(e.strerror or str(e) or type(e).__name__)

    t = threading.Thread(target=connect, daemon=True)  # getaddrinfo has no timeout of its own
    t.start()
    t.join(timeout)
    return result[0] if result else f"no answer within {timeout:g}s"


def online_problem(cfg: DictConfig) -> str | None:
    """Why logging online would fail now (no API key, W&B host unreachable), or None."""
    from wandb.sdk import wandb_setup

    base_url = str(wandb_setup.singleton().settings.base_url)  # WANDB_BASE_URL or W&B's settings
    problem = _api_key_problem(base_url)
    if problem is None:
        why = _unreachable(base_url, float(cfg.get("probe_timeout") or 3))
        problem = None if why is None else f"cannot reach {base_url} ({why})"
    return problem


class NullTracker:
    mode = None
    dir = None
    url = None
    requested_mode = None
    fallback = None  # why a requested online run logs offline

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
        mode = self.requested_mode = cfg.mode
        wdir = Path(cfg.dir) if cfg.get("dir") else run_dir
        wdir.mkdir(parents=True, exist_ok=True)

        def init(mode: str):
            settings = wandb.Settings(init_timeout=float(cfg.init_timeout), silent=True, x_disable_stats=True)
            return wandb.init(project=cfg.project, entity=cfg.get("entity") or None,
                              group=cfg.group, name=name, mode=mode, dir=str(wdir),
                              config=run_config, tags=list(cfg.get("tags") or []),
                              job_type=cfg.get("job_type") or "less", settings=settings, reinit="finish_previous")

        self.run = None
        if mode == "online":
            try:
                self.fallback = online_problem(cfg)
            except Exception as e:  # the check itself failed: leave it to wandb.init (and its fallback)
                log.debug("W&B pre-flight check failed: %r", e)
            if self.fallback is None:
                try:
                    self.run = init(mode)
                except Exception as e:  # refused key, server error, timeout: W&B never ends a run
                    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                    self.fallback = f"wandb.init failed ({type(e).__name__}{': ' + first if first else ''})"
            if self.fallback is not None:
                mode = "offline"
        if self.run is None:
            self.run = init(mode)
        self.mode = mode
        self.dir = str(Path(self.run.dir).parent) if mode != "disabled" else None
        self.url = self.run.get_url() if mode == "online" else None
        if self.fallback is not None:
            print(f"W&B: {self.fallback}; logging offline to {self.dir}, upload later with: wandb sync {self.dir}",
                  file=sys.stderr)

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

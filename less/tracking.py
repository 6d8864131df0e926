"""Experiment tracking: W&B (offline unless the user asks for online) or nothing.

One W&B run per job *configuration*: its id is a hash of the job's artifact keys (with the project,
group, stages and datastore shard), so the same job run again is the same run. A ledger in the
cache (``<cache_dir>/_wandb/<id>.json``) records finished runs: a rerun of a finished one is not
logged again (``logger.rerun=skip``, the default; ``resume`` logs into the same run id), a killed
one is resumed. Runs are grouped by ``logger.group`` (the experiment's name); the job type is the
selection method (or the stage set for a job without selection); the name is the job's overrides
without bookkeeping ones (cache_dir, plan, logger.*, device, data.root, experiment, hydra.*).
The config is the composed config with every key any preset of a config group has (null where the
chosen preset has none), so parallel-coordinate axes have no gaps.

History holds only curves (``warmup/*`` and ``train/*`` against ``warmup/step`` and ``train/step``)
and media (tables, histograms); scalars that happen once (eval metrics, selection statistics,
accounting) go to the summary only. Artifacts carry metadata (key, config slice, inputs, report);
less.lineage logs each artifact a job's steps make as an output and, online, each one it took from
an earlier job as an input (``use_artifact``; W&B refuses it offline, where the inputs are in the
metadata), and gives the job its run id, name and type. Offline mode never touches the network; a
run is uploaded later with ``wandb sync <dir>``.

W&B never ends a run: before ``wandb.init`` online the API key is looked up (W&B's own lookup:
WANDB_API_KEY, netrc, settings; never a prompt) and the W&B host is probed with a short TCP
connect (``logger.probe_timeout``); without either, or when ``wandb.init`` online raises anyway,
the run logs offline and says so in one line on stderr (and in results.json ``wandb.fallback``).
"""

from __future__ import annotations

import hashlib
import json
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
from omegaconf import DictConfig, OmegaConf

from less.cache import write_json_atomic

log = logging.getLogger(__name__)

# overrides that say where or how a job runs, not what it computes: left out of W&B run names
NAME_EXCLUDED = ("cache_dir", "plan", "logger", "device", "data.root", "experiment", "hydra")


def run_id(logger: DictConfig, stages: list[str], keys: dict[str, str], extra: dict[str, Any] | None = None) -> str:
    """The W&B run id of a job: a hash of its steps' artifact keys, project, entity and group."""
    blob = json.dumps({"entity": logger.get("entity"), "project": logger.get("project"),
                       "group": logger.get("group"), "stages": list(stages), "keys": keys, **(extra or {})},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_name(overrides: list[str], default: str) -> str:
    """The job's overrides (``selection=random,selection.fraction=0.1``) without bookkeeping ones."""
    kept = []
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if not any(key == x or key.startswith(x + ".") for x in NAME_EXCLUDED):
            kept.append(o.lstrip("+"))
    return ",".join(kept) or default


def _skeleton(node: Any) -> Any:
    """The keys of a nested dict with every leaf None."""
    return {k: _skeleton(v) for k, v in node.items()} if isinstance(node, dict) else None


def _union(a: Any, b: Any) -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        return {**a, **{k: _union(a.get(k), v) for k, v in b.items()}}
    return a if isinstance(a, dict) else b


def _fill(values: Any, skeleton: Any) -> Any:
    """``values`` with every key of ``skeleton`` it lacks added as None (recursively)."""
    if not isinstance(skeleton, dict) or not isinstance(values, (dict, type(None))):
        return values
    values = values or {}
    return {**{k: _fill(values.get(k), v) for k, v in skeleton.items()},
            **{k: v for k, v in values.items() if k not in skeleton}}


def group_skeletons(conf: Path) -> dict[str, Any]:
    """{config group: the union of the keys of its public presets (``conf/<group>/*.yaml``)}."""
    out: dict[str, Any] = {}
    for d in sorted(p for p in conf.iterdir() if p.is_dir() and p.name not in ("experiment", "hydra")):
        sk: Any = {}
        for f in sorted(d.glob("*.yaml")):
            if f.name.startswith("_"):
                continue
            node = OmegaConf.to_container(OmegaConf.load(f), resolve=False)
            if isinstance(node, dict) and f.read_text().lstrip().startswith("# @package _global_"):
                node = node.get(d.name, {})  # a preset that also sets other groups (selection=trak)
            if isinstance(node, dict):
                node.pop("defaults", None)
                sk = _union(sk, _skeleton(node))
        out[d.name] = sk
    return out


def uniform_config(config: dict[str, Any], conf: Path) -> dict[str, Any]:
    """The run config with every key any preset of its config groups has (None where absent), so
    that runs of different methods (or models) have the same config keys."""
    out = dict(config)
    skeletons = group_skeletons(conf)
    if "selector" in skeletons:  # selector presets are model presets (``/model/<x>@_here_``)
        skeletons["selector"] = _union(skeletons["selector"], skeletons.get("model", {}))
    for group, sk in skeletons.items():  # a group set to null (selector) gets its keys too
        out[group] = _fill(out.get(group), sk)
    return out


class Ledger:
    """``<cache_dir>/_wandb/<run id>.json``: which job configurations have a W&B run, and whether
    it finished (a rerun of a finished one is skipped; a killed one is resumed)."""

    def __init__(self, cache_root: Path, rid: str):
        self.path = Path(cache_root) / "_wandb" / f"{rid}.json"

    def read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def finished(self) -> dict[str, Any] | None:
        """The record of a finished run whose offline files still exist (or that ran online)."""
        rec = self.read()
        if not rec or rec.get("status") != "finished":
            return None
        if rec.get("mode") == "offline" and not Path(rec.get("dir") or "").is_dir():
            return None  # its offline files were deleted before any sync: log it again
        return rec

    def write(self, **rec: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, rec)


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
    id = None
    requested_mode = None
    fallback = None  # why a requested online run logs offline
    skipped = None  # the ledger record of the finished run this job would have duplicated

    def curve(self, prefix: str, step: int, metrics: dict[str, float]) -> None:
        pass

    def summary(self, metrics: dict[str, Any]) -> None:
        pass

    def table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        pass

    def histogram(self, key: str, values: np.ndarray) -> None:
        pass

    def image(self, key: str, path: Path) -> None:
        pass

    def artifact(self, name: str, kind: str, metadata: dict[str, Any], files: list[Path] = (),
                 dirs: list[Path] = (), use: bool = False) -> None:
        """Log an artifact (``use=False``: made by this run) or declare one as this run's input."""

    def finish(self, ok: bool = True) -> None:
        pass


class SkippedTracker(NullTracker):
    """A rerun of a job configuration whose W&B run finished: nothing is logged again."""

    def __init__(self, rid: str, record: dict[str, Any]):
        self.id, self.skipped = rid, record


class WandbTracker(NullTracker):
    def __init__(self, cfg: DictConfig, run_config: dict[str, Any], run_dir: Path, name: str,
                 rid: str | None = None, job_type: str = "less", ledger: Ledger | None = None):
        import wandb

        self._wandb = wandb
        self._ledger = ledger
        self._axes: set[str] = set()
        mode = self.requested_mode = cfg.mode
        wdir = Path(cfg.dir) if cfg.get("dir") else run_dir
        wdir.mkdir(parents=True, exist_ok=True)

        def init(mode: str):
            settings = wandb.Settings(init_timeout=float(cfg.init_timeout), silent=True, x_disable_stats=True)
            return wandb.init(project=cfg.project, entity=cfg.get("entity") or None,
                              group=cfg.group, name=name, mode=mode, dir=str(wdir), id=rid,
                              resume="allow" if rid else None,
                              config=run_config, tags=list(cfg.get("tags") or []),
                              job_type=job_type, settings=settings, reinit="finish_previous")

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
        self.id = self.run.id
        self.dir = str(Path(self.run.dir).parent) if mode != "disabled" else None
        self.url = self.run.get_url() if mode == "online" else None
        if self.fallback is not None:
            print(f"W&B: {self.fallback}; logging offline to {self.dir}, upload later with: wandb sync {self.dir}",
                  file=sys.stderr)
        self._record("running")

    def _record(self, status: str) -> None:
        if self._ledger is not None:
            self._ledger.write(id=self.id, status=status, mode=self.mode, dir=self.dir, url=self.url,
                               name=self.run.name, group=self.run.group, project=self.run.project)

    def curve(self, prefix: str, step: int, metrics: dict[str, float]) -> None:
        if prefix not in self._axes:  # the curve's own x axis, not W&B's global _step
            self.run.define_metric(f"{prefix}/step")
            self.run.define_metric(f"{prefix}/*", step_metric=f"{prefix}/step")
            self._axes.add(prefix)
        self.run.log({f"{prefix}/step": step, **{f"{prefix}/{k}": v for k, v in metrics.items()}})

    def summary(self, metrics: dict[str, Any]) -> None:
        self.run.summary.update(metrics)

    def table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        self.run.log({key: self._wandb.Table(columns=columns, data=rows[:10_000])})

    def histogram(self, key: str, values: np.ndarray) -> None:
        self.run.log({key: self._wandb.Histogram(np.asarray(values, dtype=np.float64))})

    def image(self, key: str, path: Path) -> None:
        self.run.log({key: self._wandb.Image(str(path))})

    def artifact(self, name: str, kind: str, metadata: dict[str, Any], files: list[Path] = (),
                 dirs: list[Path] = (), use: bool = False) -> None:
        if use and self.mode != "online":
            return  # wandb refuses use_artifact offline; the metadata of what this run logs names it
        art = self._wandb.Artifact(name=name, type=kind, metadata=metadata)
        for f in files:
            art.add_file(str(f))
        for d in dirs:
            art.add_dir(str(d), name=d.name)
        if use:
            self.run.use_artifact(art)
        else:
            self.run.log_artifact(art)

    def finish(self, ok: bool = True) -> None:
        self.run.finish()
        if ok:
            self._record("finished")


def make_tracker(cfg: DictConfig, run_config: dict[str, Any], run_dir: Path, name: str, rid: str | None = None,
                 job_type: str = "less", cache_root: Path | None = None) -> NullTracker:
    """The run's tracker; with ``rid`` and ``cache_root``, a rerun of a finished job configuration
    gets a :class:`SkippedTracker` (``logger.rerun=skip``) and says so in one line."""
    if cfg.name == "none":
        return NullTracker()
    if cfg.name == "wandb":
        os.environ.setdefault("WANDB_SILENT", "true")
        ledger = Ledger(cache_root, rid) if rid and cache_root is not None else None
        rerun = cfg.get("rerun") or "skip"
        if rerun not in ("skip", "resume"):
            from less.errors import ConfigError

            raise ConfigError(f"logger.rerun must be skip or resume, got {rerun!r}")
        done = ledger.finished() if ledger is not None and rerun == "skip" else None
        if done is not None:
            print(f"W&B: this job configuration was logged already (run {rid} in {done.get('url') or done.get('dir')}); "
                  "not logging it again (logger.rerun=resume logs into the same run)", file=sys.stderr)
            return SkippedTracker(rid, done)
        return WandbTracker(cfg, run_config, run_dir, name, rid, job_type, ledger)
    raise ValueError(f"logger.name must be wandb or none, got {cfg.name!r}")

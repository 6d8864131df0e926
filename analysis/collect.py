"""Collect runs: every ``results.json`` under a sweep (or run) directory, with the overrides Hydra
recorded for its job, or the runs of a W&B project/group (public API, needs network)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from less.results import flatten_metrics

IGNORED = ("hydra.", "logger", "experiment", "plan", "stages", "data.root", "eval.limit", "eval.max_gen_toks")


@dataclass
class Run:
    path: str
    overrides: dict[str, str]
    results: dict[str, Any]
    axes: dict[str, str] = field(default_factory=dict)  # the overrides that vary across the collected runs

    def get(self, dotted: str, default=None):
        d: Any = self.results
        for part in dotted.split("."):
            if not isinstance(d, dict) or part not in d:
                return default
            d = d[part]
        return d


def _overrides(job_dir: Path) -> dict[str, str]:
    f = job_dir / ".hydra" / "overrides.yaml"
    if not f.is_file():
        return {}
    out = {}
    for item in yaml.safe_load(f.read_text()) or []:
        key, _, value = str(item).lstrip("+~").partition("=")
        if not key.startswith(IGNORED):
            out[key] = value
    return out


def set_axes(runs: list[Run]) -> list[Run]:
    keys = sorted({k for r in runs for k in r.overrides})
    varying = [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1]
    for r in runs:
        r.axes = {k: r.overrides.get(k, "") for k in varying}
    return runs


def from_dir(root: str | Path) -> list[Run]:
    root = Path(root)
    files = sorted(root.rglob("results.json"), key=lambda p: (len(p.parts), str(p)))
    if not files:
        raise SystemExit(f"{root}: no results.json found")
    return set_axes([Run(str(f.parent), _overrides(f.parent), json.loads(f.read_text())) for f in files])


def from_wandb(path: str, group: str | None = None) -> list[Run]:
    """Runs of ``entity/project`` (optionally one group) via W&B's public API."""
    import wandb

    filters = {"group": group} if group else None
    runs = []
    for wr in wandb.Api().runs(path, filters=filters):
        raw = dict(getattr(wr.summary, "_json_dict", {}) or {})
        # plain numbers only: logged tables and histograms are {"_type": ...} records
        summary = {k: v for k, v in raw.items() if not k.startswith("_")
                   and not (isinstance(v, dict) and "_type" in v)}
        results: dict[str, Any] = {}
        for k, v in summary.items():
            d = results
            parts = k.split("/")
            for p in parts[:-1]:
                d = d.setdefault(p, {})
            d[parts[-1]] = v
        flat_cfg = flatten_metrics(dict(wr.config), "", sep=".")
        runs.append(Run(wr.url, {k: str(v) for k, v in flat_cfg.items() if not k.startswith(IGNORED)}, results))
    return set_axes(runs)

"""``python -m analysis <sweep> --wandb-log``: the report's tables and plots as one W&B run.

The run is opened the way the harness opens its own (``less.tracking.WandbTracker``): offline
unless ``--wandb-mode online`` (or ``WANDB_MODE=online``), and online without an API key or a
reachable host it goes on offline and says so in one line. It lands in the project the sweep's
runs used (results.json ``wandb.project``/``wandb.entity``, else the job's ``logger`` config, else
``less``), in their group (results.json ``config.name``, the experiment, else the sweep folder's
name), with job type ``analysis``. Tables go under ``analysis/<name>`` (``analysis/table``,
``analysis/paired``, ``analysis/lds``, ``analysis/lds_by_task``, ``analysis/selection_curve``),
plots as images under ``analysis/<plot file name without .png, dots as underscores>``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

DEFAULT_PROJECT = "less"


def image_key(png: str | Path) -> str:
    """The W&B key of a plot file: ``analysis/metric_vs_fraction_arith_acc`` for
    ``metric_vs_fraction.arith.acc.png``."""
    return "analysis/" + Path(png).name.removesuffix(".png").replace(".", "_")


def table_key(name: str) -> str:
    return f"analysis/{name}"


def target(df: pd.DataFrame, sweep: str | None) -> dict[str, Any]:
    """{project, entity, group} of the sweep's runs (the first run that says)."""
    found: dict[str, Any] = {}
    for path in df["path"]:
        run = Path(str(path))
        try:
            res = json.loads((run / "results.json").read_text())
        except (OSError, ValueError):
            res = {}
        cfg_file = run / ".hydra" / "config.yaml"
        try:
            cfg = (yaml.safe_load(cfg_file.read_text()) or {}) if cfg_file.is_file() else {}
        except (OSError, yaml.YAMLError):
            cfg = {}
        logger = cfg.get("logger") if isinstance(cfg.get("logger"), dict) else {}
        w = res.get("wandb") if isinstance(res.get("wandb"), dict) else {}
        for k in ("project", "entity"):
            v = w.get(k) or (logger.get(k) if isinstance(logger.get(k), str) and "${" not in logger.get(k) else None)
            if v and k not in found:
                found[k] = v
        group = (res.get("config") or {}).get("name") or cfg.get("name")
        if group and "group" not in found:
            found["group"] = group
    found.setdefault("project", DEFAULT_PROJECT)
    found.setdefault("entity", None)
    found.setdefault("group", Path(sweep).resolve().name if sweep else "analysis")
    return found


def _rows(t: pd.DataFrame) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of a frame as W&B takes them (plain Python values, None for missing)."""
    t = t.astype(object).where(t.notna(), None)
    rows = [[v.item() if hasattr(v, "item") else v for v in r] for r in t.itertuples(index=False, name=None)]
    return [str(c) for c in t.columns], rows


def log(out: Path, df: pd.DataFrame, sweep: str | None, tables: Mapping[str, pd.DataFrame], images: list[Path],
        config: dict[str, Any], mode: str | None = None, project: str | None = None, group: str | None = None) -> Any:
    """Log ``tables`` and ``images`` to one W&B run (job type ``analysis``); ``project``
    ("entity/project" or "project") and ``group`` override where the runs logged. Returns the tracker."""
    from omegaconf import OmegaConf

    from less.tracking import WandbTracker

    where = target(df, sweep)
    if project:
        entity, _, name = project.rpartition("/")
        where.update(project=name, entity=entity or where["entity"])
    if group:
        where["group"] = group
    os.environ.setdefault("WANDB_SILENT", "true")
    cfg = OmegaConf.create({"name": "wandb", "mode": mode or os.environ.get("WANDB_MODE") or "offline",
                            "project": where["project"], "entity": where["entity"], "group": where["group"],
                            "dir": os.environ.get("WANDB_DIR") or None, "tags": ["analysis"],
                            "init_timeout": 30, "probe_timeout": 3})
    tracker = WandbTracker(cfg, {"analysis": config}, out, name=f"analysis {where['group']}", job_type="analysis")
    ok = False
    try:
        for name, t in tables.items():
            if t is not None and not t.empty:
                tracker.table(table_key(name), *_rows(t))
        import wandb

        tracker.run.log({image_key(p): wandb.Image(str(p)) for p in images})
        tracker.summary({"analysis/runs": len(df), "analysis/reference": config.get("reference")})
        ok = True
    finally:
        tracker.finish(ok)
    return tracker

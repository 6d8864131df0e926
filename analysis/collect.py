"""Finished runs as one pandas DataFrame, one row per run: the notebook entry point.

    import analysis
    df = analysis.load("multirun/main_table_tiny/2026-11-22_10-00-00")   # every results.json under it
    df = analysis.load_wandb("entity/project", group="main_table")        # the same columns from W&B

Columns:

- ``path``: the run directory (W&B: the run's URL).
- The run's configuration: ``method`` (results.json ``selection.method``), ``fraction``
  (``selection.fraction``; None with ``selection.k``), ``seed``, ``proj_dim`` (the dimension the
  LESS selection used; NaN for other methods), ``model``, ``selector``, ``pool``, ``target`` (names,
  from results.json ``config``). ``fraction`` and ``seed`` come from the job's ``.hydra/config.yaml``,
  else from its overrides.
- Every Hydra override of the job (``.hydra/overrides.yaml``) under its own key, e.g.
  ``selection.fraction``, ``selection`` (the preset), ``cache_dir``; numbers parsed, the rest strings.
  From W&B: every config key (dotted) whose value differs between the runs read.
- The results, flattened with dots: ``eval.<task>.<metric>`` (with ``<metric>_stderr``, and
  ``eval.<task>.subtasks.<name>.<metric>``), ``selection.*`` (``target_share``, ``base_share``,
  ``jaccard_vs_less``, ``n_selected``, ``by_source.<source>``, ``selected`` (path of the
  selection), ...), ``train.*`` (``train_loss``, ...), ``warmup.*``, ``data.*``, ``accounting.*``,
  ``eval.<task>.target_loss`` (with ``eval_base.*`` the same for the untrained model),
  ``examples.eval`` / ``examples.eval_base`` (the path of the run's per-example results, which
  ``analysis.paired`` reads) and, for ``experiment=validate``, ``validate.*`` (``lds``, ``ci_low``,
  ``ci_high``, ``subsets``, ``alpha``, ``method``, ``task``, ``by_task.<task>.lds``, ...).
  Lists (e.g. ``selection.checkpoints``) and the bookkeeping sections (``stages``, ``artifacts``,
  ``wandb``, ``config``, ``warnings``) are left out.

``config_columns(df)`` names the configuration columns (the first two groups), the rest are results.
Importing this module imports no torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

CONFIG = ("method", "model", "selector", "pool", "target", "fraction", "proj_dim", "seed")
SKIPPED_SECTIONS = ("config", "stages", "artifacts", "wandb", "warnings")
# bookkeeping overrides: they never make two runs different experiments
BOOKKEEPING = ("hydra", "logger", "experiment", "plan", "stages", "cache_dir", "device", "data.root",
               "eval.limit", "eval.max_gen_toks", "name", "tags")


def is_bookkeeping(key: str) -> bool:
    return any(key == b or key.startswith(b + ".") for b in BOOKKEEPING)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"eval.mmlu.acc": ..} from nested dicts; lists are left out."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten(v, key))
        elif not isinstance(v, (list, tuple)):
            out[key] = v
    return out


def parse_value(text: str) -> Any:
    """An override's value: an int or a float when it reads as one, else the string."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return None if text in ("null", "None") else text


def overrides(job_dir: Path) -> dict[str, Any]:
    f = job_dir / ".hydra" / "overrides.yaml"
    if not f.is_file():
        return {}
    out = {}
    for item in yaml.safe_load(f.read_text()) or []:
        key, _, value = str(item).lstrip("+~").partition("=")
        out[key] = parse_value(value)
    return out


def _get(tree: dict[str, Any], dotted: str, default=None):
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return default
        tree = tree[part]
    return tree


def row(path: str, results: dict[str, Any], composed: dict[str, Any], overridden: dict[str, Any]) -> dict[str, Any]:
    """One run's row: ``composed`` is its full config (nested; may be empty), ``overridden`` its
    overrides or varying config keys (dotted)."""
    def setting(key):
        return overridden[key] if key in overridden else _get(composed, key)

    cfg = results.get("config") or {}
    r: dict[str, Any] = {"path": path, "method": _get(results, "selection.method"),
                         "fraction": setting("selection.fraction"), "seed": setting("seed"),
                         "proj_dim": _get(results, "selection.proj_dim"),
                         **{k: cfg.get(k) for k in ("model", "selector", "pool", "target")}}
    metrics = flatten({k: v for k, v in results.items() if k not in SKIPPED_SECTIONS})
    # an override of a results key (selection.proj_dim) is what was asked; the result is in its column
    r.update({k: v for k, v in metrics.items() if k not in r})
    r.update({k: v for k, v in overridden.items() if k not in CONFIG})
    return r


def frame(rows: list[dict[str, Any]], override_keys: set[str]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for c in CONFIG:  # always present, so code can rely on them
        if c not in df:
            df[c] = None
    front = ["path", *CONFIG, *sorted(k for k in override_keys if k not in CONFIG)]
    df = df[front + [c for c in df.columns if c not in front]]
    df.attrs["config_columns"] = [c for c in front if c != "path"]
    return df


def config_columns(df: pd.DataFrame) -> list[str]:
    """The configuration columns of a :func:`load` frame (``CONFIG`` plus the override keys)."""
    return [c for c in df.attrs.get("config_columns", CONFIG) if c in df]


def load(sweep_dir: str | Path) -> pd.DataFrame:
    """Every run under ``sweep_dir`` (each directory holding a results.json), one row each."""
    root = Path(sweep_dir)
    # Hydra's job folders in job order: 0, 1, .., 10 (numbers compared as numbers)
    files = sorted(root.rglob("results.json"), key=lambda p: (len(p.parts), [
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in p.parts]))
    if not files:
        raise FileNotFoundError(f"{root}: no results.json found")
    rows, keys = [], set()
    for f in files:
        job = f.parent
        composed_file = job / ".hydra" / "config.yaml"
        composed = (yaml.safe_load(composed_file.read_text()) or {}) if composed_file.is_file() else {}
        over = overrides(job)
        keys |= set(over)
        rows.append(row(str(job), json.loads(f.read_text()), composed, over))
    return frame(rows, keys)


def load_wandb(path: str, group: str | None = None) -> pd.DataFrame:
    """The runs of W&B project ``entity/project`` (optionally one group), one row each, with the
    columns of :func:`load` (needs network). The summary holds the results (``eval/mmlu/acc`` ->
    ``eval.mmlu.acc``); the config keys whose values differ between the runs stand for the overrides."""
    import wandb

    filters = {"group": group} if group else None
    runs = []
    for wr in wandb.Api().runs(path, filters=filters):
        raw = dict(getattr(wr.summary, "_json_dict", {}) or {})
        results: dict[str, Any] = {}
        for k, v in raw.items():  # plain values only: tables and histograms are {"_type": ...} records
            if k.startswith("_") or (isinstance(v, dict) and "_type" in v):
                continue
            d = results
            parts = k.split("/")
            for p in parts[:-1]:
                d = d.setdefault(p, {})
            d[parts[-1]] = v
        composed = dict(wr.config)
        results["config"] = {k: _get(composed, f"{k}.name") for k in ("model", "selector", "pool", "target")}
        results["config"]["selector"] = results["config"]["selector"] or results["config"]["model"]
        runs.append((wr.url, results, composed))
    flat = [flatten(c) for _, _, c in runs]
    keys = {k for f in flat for k in f}
    varying = {k for k in keys if not is_bookkeeping(k)
               and len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flat}) > 1}
    rows = [row(url, res, comp, {k: f.get(k) for k in varying}) for (url, res, comp), f in zip(runs, flat)]
    if not rows:
        raise LookupError(f"W&B {path}" + (f" group {group}" if group else "") + ": no runs")
    return frame(rows, varying)

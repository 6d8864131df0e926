"""``python -m analysis wandb-workspace``: a saved W&B workspace for one sweep group (``wandb-workspaces``).

The workspace shows the runs of one group (``Group == <group>``: the experiment's runs and its
``--wandb-log`` analysis run) in five sections, with the keys the runs log (less/stages/*.py
``track``, less/tracking.py) and those ``python -m analysis <sweep> --wandb-log`` adds:

- *Main table*: the analysis run's ``analysis/table`` (mean ± std and Δ vs random) and
  ``analysis/paired``; per metric a bar chart by ``selection.method`` (mean, stderr over seeds).
- *Metric vs selection fraction*: per metric a scatter plot against ``config.selection.fraction``
  (log x), ``analysis/selection_curve`` and the analysis run's plots.
- *Counterfactual validation (LDS)*: ``analysis/lds``, ``analysis/lds_by_task``, the ``lds`` plot,
  and ``validate/lds`` by method.
- *Selection composition*: ``selection/by_source`` and ``selection/top_by_subtask`` (per run),
  ``selection/target_share`` by method, the ``composition_by_source`` plot.
- *Training curves*: ``train/loss``, ``train/lr``, ``train/grad_norm`` against ``train/step`` and
  ``warmup/loss`` against ``warmup/step``, grouped by method (mean, stderr band).

Metrics (``eval/<task>/<metric>`` summary keys) come from ``--metric``, else from a local copy of
the sweep (``--sweep``: its table's headline metrics and target losses), else the paper's tasks and
the synthetic one. Without ``--save`` the workspace is only built (no network) and written as JSON
(the view W&B would store); with ``--save`` it is saved to W&B (needs network and an API key).
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from analysis.wandb_log import image_key, table_key

INSTALL = "pip install wandb-workspaces"
DEFAULT_METRICS = ("eval/mmlu/acc", "eval/mmlu/target_loss", "eval/tydiqa/f1", "eval/tydiqa/target_loss",
                   "eval/bbh/exact_match", "eval/bbh/target_loss", "eval/less_synthetic_color/acc",
                   "eval/less_synthetic_color/target_loss")
METHOD = "selection.method"
FRACTION = "selection.fraction"
TRAIN_CURVES = (("train/step", "train/loss"), ("train/step", "train/lr"), ("train/step", "train/grad_norm"),
                ("warmup/step", "warmup/loss"))
SECTIONS = ("Main table", "Metric vs selection fraction", "Counterfactual validation (LDS)",
            "Selection composition", "Training curves")


class WorkspaceError(Exception):
    """wandb-workspaces is missing, or saving failed: one line for the user."""


def wandb_key(metric: str) -> str:
    """``mmlu.acc`` / ``eval.mmlu.acc`` / ``eval/mmlu/acc`` -> ``eval/mmlu/acc`` (other keys: dots
    become slashes, as results.json keys become W&B summary keys)."""
    m = metric.strip()
    if "/" not in m:
        m = m.replace(".", "/")
    if not m.startswith(("eval/", "eval_base/", "selection/", "train/", "warmup/", "validate/", "data/",
                         "accounting/")):
        m = "eval/" + m
    return m


def sweep_metrics(sweep: str | Path) -> list[str]:
    """The W&B keys of a local sweep's headline metrics (the table's default metrics)."""
    from analysis.collect import load
    from analysis.tables import headline_metrics

    return [wandb_key(c) for c in headline_metrics(load(sweep)) if c.startswith("eval.")]


def _modules():
    try:
        import wandb_workspaces.reports.v2 as wr
        import wandb_workspaces.workspaces as ws
        from wandb_workspaces import expr
    except ImportError as e:
        raise WorkspaceError(f"the W&B workspace needs the wandb-workspaces package ({INSTALL}): {e}") from None
    return ws, wr, expr


def build(entity: str, project: str, group: str, metrics: Sequence[str] = DEFAULT_METRICS,
          name: str | None = None):
    """The ``wandb_workspaces.workspaces.Workspace`` of ``group`` (built offline; ``.save()`` saves it)."""
    ws, wr, expr = _modules()
    metrics = list(dict.fromkeys(wandb_key(m) for m in metrics))
    tasks = list(dict.fromkeys(m.split("/")[1] for m in metrics if m.startswith("eval/") and m.count("/") == 2))
    by_method = wr.Config(METHOD)

    def bars(key: str, title: str):
        return wr.BarPlot(title=title, metrics=[wr.SummaryMetric(key)], groupby=by_method, groupby_aggfunc="mean",
                          groupby_rangefunc="stderr", orientation="v")

    def pretty(key: str) -> str:
        return key.removeprefix("eval/").replace("/", ".")

    main = [wr.WeavePanelSummaryTable(table_name=table_key("table")),
            wr.WeavePanelSummaryTable(table_name=table_key("paired")),
            *(bars(m, f"{pretty(m)} by method (mean ± stderr over seeds)") for m in metrics)]
    fraction = [*(wr.ScatterPlot(title=f"{pretty(m)} vs selection fraction", x=wr.Config(FRACTION),
                                 y=wr.SummaryMetric(m), log_x=True) for m in metrics),
                wr.WeavePanelSummaryTable(table_name=table_key("selection_curve")),
                wr.MediaBrowser(title="analysis plots: metric and target loss vs fraction", media_keys=[
                    *(image_key(f"metric_vs_fraction.{pretty(m)}.png") for m in metrics),
                    *(image_key(f"selection_curve.{t}.png") for t in tasks)])]
    lds = [wr.WeavePanelSummaryTable(table_name=table_key("lds")),
           wr.WeavePanelSummaryTable(table_name=table_key("lds_by_task")),
           wr.MediaBrowser(title="LDS per method (95% bootstrap interval over subsets)", media_keys=[image_key("lds.png")]),
           bars("validate/lds", "LDS by method")]
    composition = [wr.WeavePanelSummaryTable(table_name="selection/by_source"),
                   bars("selection/target_share", "share of the target skill in the selection, by method"),
                   wr.MediaBrowser(title="selection by pool source (mean over seeds)",
                                   media_keys=[image_key("composition_by_source.png")]),
                   wr.WeavePanelSummaryTable(table_name="selection/top_by_subtask")]
    curves = [wr.LinePlot(title=f"{y} (mean, stderr band by method)", x=x, y=[y], groupby=by_method,
                          groupby_aggfunc="mean", groupby_rangefunc="stderr") for x, y in TRAIN_CURVES]
    sections = [ws.Section(name=n, panels=p, is_open=True)
                for n, p in zip(SECTIONS, (main, fraction, lds, composition, curves))]
    def column(name: str) -> str:  # the runs table's column id (config keys as W&B stores them: a.value.b)
        key = expr.groupby_str_to_key(f"config.{name}")
        return f"{key.section}:{key.name}"

    runset = ws.RunsetSettings(filters=[expr.Metric("Group") == group],
                               pinned_columns=[column(c) for c in (METHOD, FRACTION, "seed")]
                               + [f"summary:{m}" for m in metrics])
    return ws.Workspace(entity=entity, project=project, name=name or f"LESS: {group}", sections=sections,
                        runset_settings=runset)


def spec(workspace) -> dict[str, Any]:
    """The view W&B stores for ``workspace`` (what ``--save`` sends), as plain JSON data."""
    return workspace._to_model().model_dump(by_alias=True, exclude_none=True, mode="json")


def panels(view: dict[str, Any]) -> list[dict[str, Any]]:
    """``[{"section", "type", "title", "keys"}]`` of a :func:`spec`: what each panel shows."""
    out = []
    for sec in view["spec"]["section"]["panelBankConfig"]["sections"]:
        for p in sec["panels"]:
            cfg = p.get("config") or {}
            keys = [*(cfg.get("metrics") or []), *([cfg["xAxis"]] if cfg.get("xAxis") else []),
                    *(cfg.get("mediaKeys") or [])]
            for axis in ("xAxis", "yAxis"):
                if p.get("viewType") == "Scatter Plot" and cfg.get(axis):
                    keys.append(cfg[axis])
            weave = json.dumps(cfg.get("panel2Config") or {})
            keys += re.findall(r'"key": \{"nodeType": "const", "type": "string", "val": "([^"]+)"', weave)
            out.append({"section": sec["name"], "type": p.get("viewType"),
                        "title": cfg.get("chartTitle") or cfg.get("title") or "", "keys": list(dict.fromkeys(keys))})
    return out


def main(argv: Sequence[str]) -> Path | str:
    p = argparse.ArgumentParser(
        prog="python -m analysis wandb-workspace",
        description="Build the W&B workspace of a sweep group (main table with Δ vs random, metric vs selection "
                    "fraction, LDS, selection composition, training curves); written as JSON, or saved with --save.")
    p.add_argument("--entity", required=True, help="W&B entity (user or team) that owns the project")
    p.add_argument("--project", required=True, help="W&B project of the runs (the harness's default: less)")
    p.add_argument("--group", required=True, help="the sweep's group: its experiment name (logger.group = name)")
    p.add_argument("--metric", action="append", help="summary metrics to chart (repeatable or comma list; "
                   "eval/mmlu/acc or mmlu.acc); default: --sweep's headline metrics, else mmlu, tydiqa, bbh and "
                   "the synthetic task")
    p.add_argument("--sweep", help="a local copy of the sweep to take the metrics from")
    p.add_argument("--name", help="the workspace's name (default: 'LESS: <group>')")
    p.add_argument("--out", help="where the JSON goes without --save (default: wandb_workspace.<group>.json)")
    p.add_argument("--save", action="store_true", help="save the workspace to W&B (needs network and an API key)")
    a = p.parse_args(list(argv))
    from analysis.tables import split_names

    try:
        metrics = split_names(a.metric) or (sweep_metrics(a.sweep) if a.sweep else list(DEFAULT_METRICS))
    except (FileNotFoundError, LookupError) as e:
        p.exit(2, f"error: {e.args[0]}\n")
    try:
        workspace = build(a.entity, a.project, a.group, metrics, a.name)
        view = spec(workspace)
    except WorkspaceError as e:
        p.exit(2, f"error: {e}\n")
    n = len(panels(view))
    if not a.save:
        out = Path(a.out or f"wandb_workspace.{re.sub(r'[^A-Za-z0-9_.-]+', '_', a.group)}.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(view, indent=1) + "\n")
        print(f"W&B workspace for group {a.group} ({len(SECTIONS)} sections, {n} panels, {len(metrics)} metrics) "
              f"-> {out}; --save saves it to {a.entity}/{a.project}")
        return out
    try:
        workspace.save()
    except Exception as e:  # no network, no key, refused: one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        p.exit(2, f"error: saving the W&B workspace to {a.entity}/{a.project} failed ({first}); it needs network "
                  "and a W&B API key (WANDB_API_KEY or wandb login); without --save it is written as JSON\n")
    url = getattr(workspace, "url", None)
    print(f"W&B workspace for group {a.group} ({n} panels) saved: {url}")
    return str(url)

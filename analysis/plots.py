"""PNG plots of a :func:`analysis.load` frame, one figure per metric where a metric is drawn.

- ``metric_vs_<axis>.<metric>.png`` (axis ``fraction`` or ``proj_dim``, when it takes two values or
  more): one line per group of the other ``by`` columns (method, model, ...), the mean over its
  runs (seeds) at each axis value, error bars ± the sample std over them: the table's numbers.
  Runs without a value on the axis (``proj_dim`` of non-LESS methods) are left out.
- ``transfer_matrix.<metric>.png``: selector model x trained model, mean over the LESS runs.
- ``selection_overlap.png``: Jaccard overlap of the selections of the first seed's runs.
- ``composition_by_source.png``: each group's mean share of its selection per pool source.
- ``lds.png`` (:func:`lds_figure`, from lds.csv): each method's LDS with its 95% bootstrap interval
  over the validation subsets.
- ``selection_curve.<task>.png`` (:func:`selection_curve_figure`, from selection_curve.csv): the
  target loss vs the selection fraction per method (log x; mean ± std over seeds; the reference
  method dashed) and, beside it, the paired Δ vs the reference with its interval over examples.

Each ``*_figure`` function returns the matplotlib Figure (or None when there is nothing to draw);
:func:`curve_data` is what ``metric_vs`` draws. Values are in the table's display units.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import NullLocator  # noqa: E402

from analysis.tables import (fmt_value, groups, in_display_units, label, resolve_by,  # noqa: E402
                             resolve_metrics)

AXES = {"fraction": "selection fraction (of the pool)", "proj_dim": "projection dimension"}


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def line_label(cols: Sequence[str], key: tuple) -> str:
    if len(cols) == 1:
        return fmt_value(key[0])
    return ", ".join(f"{c}={fmt_value(v)}" for c, v in zip(cols, key))


def curve_data(df: pd.DataFrame, metric: str, axis: str, by: Sequence[str] | None = None) -> pd.DataFrame:
    """Columns ``line`` (the legend label), ``axis``, ``mean``, ``std`` (sample std, NaN for one
    run), ``n``: one row per (line, axis value) with a value, lines being the groups of ``by``
    (default: the table's) without ``axis`` and ``seed``."""
    lines = [c for c in resolve_by(df, by) if c not in (axis, "seed")]
    d = in_display_units(df, [metric])
    d = d[d[axis].notna() & d[metric].notna()].assign(**{axis: lambda x: pd.to_numeric(x[axis])})
    if d.empty:
        return pd.DataFrame(columns=["line", axis, "mean", "std", "n"])
    g = groups(d, [*lines, axis])[metric].agg(["mean", "std", "count"]).reset_index()
    keys = g[lines].itertuples(index=False, name=None) if lines else [()] * len(g)
    g.insert(0, "line", [line_label(lines, k) if lines else label(metric) for k in keys])
    return g.rename(columns={"count": "n"})[["line", axis, "mean", "std", "n"]]


def metric_vs_figure(df: pd.DataFrame, metric: str, axis: str, by: Sequence[str] | None = None) -> Figure | None:
    data = curve_data(df, metric, axis, by)
    if data[axis].nunique() < 2:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, line in data.groupby("line", sort=False):
        ax.errorbar(line[axis].to_numpy(float), line["mean"].to_numpy(float), yerr=line["std"].fillna(0).to_numpy(float),
                    marker="o", capsize=3, label=name)
    lo, hi = int(data["n"].min()), int(data["n"].max())
    ax.legend(fontsize=7, title=f"error bars: ± std over seeds (n = {lo}{'' if lo == hi else f'–{hi}'})",
              title_fontsize=7)
    ax.set_xlabel(AXES.get(axis, axis))
    ax.set_ylabel(label(metric))
    if axis == "proj_dim":
        ax.set_xscale("log", base=2)
    ax.set_title(f"{metric.removeprefix('eval.')} vs {AXES.get(axis, axis)}", fontsize=9)
    return fig


def transfer_matrix_figure(df: pd.DataFrame, metric: str) -> Figure | None:
    d = in_display_units(df, [metric])
    d = d[d[metric].notna() & d["selector"].notna() & d["model"].notna()]
    if (d["method"] == "less").any():
        d = d[d["method"] == "less"]
    grid = d.pivot_table(index="selector", columns="model", values=metric, aggfunc="mean")
    if grid.size < 2:
        return None
    fig, ax = plt.subplots(figsize=(2 + 1.3 * grid.shape[1], 1.6 + 0.9 * grid.shape[0]))
    im = ax.imshow(grid.to_numpy(), cmap="viridis")
    ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=30, ha="right")
    ax.set_yticks(range(grid.shape[0]), grid.index)
    ax.set_xlabel("trained model (M_T)")
    ax.set_ylabel("selector model (M_S)")
    for (i, j), v in np.ndenumerate(grid.to_numpy()):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", color="w", fontsize=8)
    fig.colorbar(im, ax=ax, label=label(metric))
    ax.set_title(f"{metric.removeprefix('eval.')}: selector x trained model (mean over seeds)", fontsize=8)
    return fig


def overlap_figure(df: pd.DataFrame, by: Sequence[str] | None = None) -> Figure | None:
    by = resolve_by(df, by)
    d = df[df["selection.selected"].map(lambda p: isinstance(p, str) and Path(p).is_file())] \
        if "selection.selected" in df else df.iloc[:0]
    if d["seed"].notna().any():
        d = d[d["seed"] == d["seed"].min()]  # one seed's selections keep the heatmap readable
    if len(d) < 2:
        return None
    sets = [{json.loads(line)["id"] for line in open(p)} for p in d["selection.selected"]]
    labels = [line_label(by, k) if by else Path(p).name
              for k, p in zip(d[by].itertuples(index=False, name=None), d["path"])]
    jac = np.array([[len(a & b) / len(a | b) if a | b else 1.0 for b in sets] for a in sets])
    n = len(sets)
    fig, ax = plt.subplots(figsize=(2.5 + 0.5 * n, 2 + 0.45 * n))
    im = ax.imshow(jac * 100, vmin=0, vmax=100, cmap="magma")
    ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=6)
    ax.set_yticks(range(n), labels, fontsize=6)
    fig.colorbar(im, ax=ax, label="Jaccard overlap (%)")
    seed = d["seed"].iloc[0]
    ax.set_title("Overlap of the selections" + (f" (seed {fmt_value(seed)})" if pd.notna(seed) else ""), fontsize=8)
    return fig


def composition_figure(df: pd.DataFrame, by: Sequence[str] | None = None) -> Figure | None:
    cols = [c for c in df.columns if c.startswith("selection.by_source.")]
    if not cols:
        return None
    by = resolve_by(df, by)
    counts = df[cols].apply(pd.to_numeric, errors="coerce").fillna(0)
    total = counts.sum(axis=1)
    shares = counts.div(total.where(total > 0), axis=0) * 100
    shares = pd.concat([df[by], shares], axis=1)[total > 0]
    if shares.empty:
        return None
    mean = groups(shares, by)[cols].mean() if by else shares[cols].mean().to_frame().T
    names = [line_label(by, k if isinstance(k, tuple) else (k,)) for k in mean.index] if by else ["all runs"]
    fig, ax = plt.subplots(figsize=(3 + 0.5 * len(mean), 3.8))
    bottom = np.zeros(len(mean))
    for c in cols:
        ax.bar(range(len(mean)), mean[c].to_numpy(), bottom=bottom, label=c.removeprefix("selection.by_source."))
        bottom += mean[c].to_numpy()
    ax.set_xticks(range(len(mean)), names, rotation=60, ha="right", fontsize=6)
    ax.set_ylabel("share of the selection (%)")
    ax.set_title("Selection by pool source (mean over seeds)", fontsize=8)
    ax.legend(fontsize=6, bbox_to_anchor=(1.02, 1), loc="upper left", title="source", title_fontsize=6)
    return fig


def all_plots(df: pd.DataFrame, out: Path, metrics: Sequence[str] | None = None,
              by: Sequence[str] | None = None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    metrics, by = resolve_metrics(df, metrics), resolve_by(df, by)
    made = []
    for m in metrics:
        slug = m.removeprefix("eval.")
        for axis in AXES:
            made.append((metric_vs_figure(df, m, axis, by), f"metric_vs_{axis}.{slug}.png"))
        made.append((transfer_matrix_figure(df, m), f"transfer_matrix.{slug}.png"))
    made += [(overlap_figure(df, by), "selection_overlap.png"), (composition_figure(df, by), "composition_by_source.png")]
    return [_save(fig, out / name) for fig, name in made if fig is not None]


def lds_figure(lds: pd.DataFrame) -> Figure | None:
    """LDS per method (lds.csv) as points with their 95% bootstrap interval over subsets."""
    if lds.empty:
        return None
    settings = [c for c in lds.columns if c not in ("method", "task", "lds", "stderr", "ci_low", "ci_high", "subsets",
                                                    "alpha", "n_runs", "seeds")]
    per_seed = lds.duplicated([c for c in ("method", "task", *settings) if c in lds], keep=False)
    names = [", ".join([str(r["method"]), *(f"{c}={fmt_value(r[c])}" for c in settings if pd.notna(r[c])),
                        *([f"seed {r['seeds']}"] if dup else [])]) for (_, r), dup in zip(lds.iterrows(), per_seed)]
    y = lds["lds"].to_numpy(float)
    lo = np.clip(y - lds["ci_low"].to_numpy(float), 0, None)
    hi = np.clip(lds["ci_high"].to_numpy(float) - y, 0, None)
    fig, ax = plt.subplots(figsize=(3 + 0.6 * len(lds), 3.8))
    ax.errorbar(range(len(lds)), y, yerr=[np.nan_to_num(lo), np.nan_to_num(hi)], fmt="o", capsize=4)
    ax.axhline(0, color="grey", lw=0.8, ls=":")
    ax.set_xticks(range(len(lds)), names, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("LDS (Spearman)")
    m = ", ".join(sorted({fmt_value(v) for v in lds["subsets"]}))
    a = ", ".join(sorted({fmt_value(v) for v in lds["alpha"]}))
    tasks = ", ".join(sorted({str(t) for t in lds["task"] if pd.notna(t)}))
    ax.set_title(f"LDS{f' ({tasks})' if tasks else ''}: M = {m} subsets, alpha = {a}\n"
                 "error bars: 95% bootstrap interval over subsets", fontsize=7)
    return fig


def selection_curve_figure(curve: pd.DataFrame, task: str) -> Figure | None:
    """Target loss vs selection fraction per method (mean ± std over seeds; the reference dashed),
    log x; beside it, when there are paired results, the Δ vs the reference with its interval."""
    data = curve[curve["task"] == task]
    if data.empty:
        return None
    settings = [c for c in curve.columns if c not in SELECTION_CURVE_VALUES]
    ref = str(data["reference"].iloc[0])
    has_delta = data["delta"].notna().any()
    fig, axes = plt.subplots(1, 2 if has_delta else 1, figsize=(10 if has_delta else 5.5, 3.8), squeeze=False)
    keys = [*settings, "method"]
    for key, line in data.groupby(keys, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        name = line_label(keys, key) if settings else str(key[-1])
        line = line.sort_values("fraction")
        dashed = line["method"].iloc[0] == ref
        x = line["fraction"].to_numpy(float)
        axes[0, 0].errorbar(x, line["target_loss"].to_numpy(float), yerr=line["target_loss_std"].fillna(0).to_numpy(float),
                            marker="o", capsize=3, ls="--" if dashed else "-", label=name)
        if has_delta and not dashed and line["delta"].notna().any():
            dl = line[line["delta"].notna()]
            y = dl["delta"].to_numpy(float)
            axes[0, 1].errorbar(dl["fraction"].to_numpy(float), y,
                                yerr=[y - dl["ci_low"].to_numpy(float), dl["ci_high"].to_numpy(float) - y],
                                marker="o", capsize=3, label=name)
    fractions = sorted(data["fraction"].astype(float).unique())
    for ax in axes[0]:
        ax.set_xscale("log")
        ax.set_xticks(fractions, [fmt_value(f) for f in fractions])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel(AXES["fraction"])
    ax = axes[0, 0]
    ax.set_ylabel(f"{task} target loss (lower is better)")
    lo, hi = int(data["n_runs"].min()), int(data["n_runs"].max())
    ax.legend(fontsize=7, title=f"± std over seeds (n = {lo}{'' if lo == hi else f'–{hi}'}); {ref} dashed",
              title_fontsize=7)
    ax.set_title(f"{task}: target loss after training on the selection", fontsize=9)
    if has_delta:
        ax = axes[0, 1]
        ax.axhline(0, color="grey", lw=0.8, ls=":")
        ax.set_ylabel(f"Δ target loss vs {ref}")
        ax.legend(fontsize=7, title="95% bootstrap interval over examples", title_fontsize=7)
        ax.set_title(f"{task}: paired Δ vs {ref} (below 0: better than {ref})", fontsize=9)
    return fig


SELECTION_CURVE_VALUES = ("method", "fraction", "task", "target_loss", "target_loss_std", "n_runs", "reference",
                          "reference_target_loss", "delta", "stderr", "ci_low", "ci_high", "excludes_zero",
                          "n_examples", "n_seeds")


def validation_plots(out: Path, lds: pd.DataFrame, curve: pd.DataFrame) -> list[Path]:
    """``lds.png`` and ``selection_curve.<task>.png`` (one per task with a target loss)."""
    out.mkdir(parents=True, exist_ok=True)
    made = [(lds_figure(lds), "lds.png")]
    made += [(selection_curve_figure(curve, t), f"selection_curve.{t}.png") for t in dict.fromkeys(curve["task"])]
    return [_save(fig, out / name) for fig, name in made if fig is not None]


def planted_figure(planted: pd.DataFrame) -> Figure | None:
    """Precision@k per method (planted.csv) with its 95% bootstrap interval, one series per
    rendering and one point per run (several runs of a method side by side), the base rate dotted."""
    if planted.empty:
        return None
    methods = list(dict.fromkeys(planted.sort_values("precision", ascending=False, kind="stable")["method"]))
    renderings = list(dict.fromkeys(planted["rendering"]))
    fig, ax = plt.subplots(figsize=(3 + 0.55 * len(methods), 3.8))
    width = 0.8 / len(renderings)
    for j, r in enumerate(renderings):
        d = planted[planted["rendering"] == r]
        pos = {m: i for i, m in enumerate(methods)}
        # every run its own point (several runs of a method: other seeds or settings, side by side)
        nth = d.groupby("method", sort=False).cumcount().to_numpy()
        many = d.groupby("method", sort=False)["method"].transform("size").to_numpy()
        x = (np.array([pos[m] for m in d["method"]]) + (j - (len(renderings) - 1) / 2) * width
             + (nth - (many - 1) / 2) * width / np.maximum(many, 1) * 0.8)
        y = d["precision"].to_numpy(float)
        yerr = [np.nan_to_num(np.clip(y - d["ci_low"].to_numpy(float), 0, None)),
                np.nan_to_num(np.clip(d["ci_high"].to_numpy(float) - y, 0, None))]
        ax.errorbar(x, y, yerr=yerr, fmt="o", capsize=3, label=f"rendering: {r}")
    for b in sorted(set(planted["base_rate"].round(6))):
        ax.axhline(b, color="grey", lw=0.8, ls=":")
    ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right", fontsize=7)
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("precision@k (k = planted)")
    ks = ", ".join(sorted({fmt_value(v) for v in planted["k"]}))
    ax.set_title(f"Planted test items recovered (k = {ks}); dotted: base rate\n"
                 "error bars: 95% bootstrap interval over the top k", fontsize=7)
    ax.legend(fontsize=7)
    return fig


def diagnostic_plots(out: Path, planted: pd.DataFrame) -> list[Path]:
    """``planted.png`` for a sweep with planted items (each run draws its own correlates.png)."""
    out.mkdir(parents=True, exist_ok=True)
    fig = planted_figure(planted)
    return [] if fig is None else [_save(fig, out / "planted.png")]

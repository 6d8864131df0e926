"""PNG plots of a sweep: metric vs projection dim / selection fraction, the transfer matrix
(selector x target model), selection overlap (Jaccard) heatmap, composition of each selection."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from analysis.collect import Run  # noqa: E402
from analysis.tables import metric_columns  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _label(r: Run) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in r.axes.items()) or Path(r.path).name


def metric_vs(runs: list[Run], axis: str, out: Path, xlabel: str) -> Path | None:
    pts = [r for r in runs if r.axes.get(axis) not in (None, "")]
    if len({r.axes[axis] for r in pts}) < 2:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for col in metric_columns(runs):
        xs = sorted({float(r.axes[axis]) for r in pts})
        ys = [np.mean([r.get(col) for r in pts if float(r.axes[axis]) == x and r.get(col) is not None] or [np.nan])
              for x in xs]
        ax.plot(xs, ys, marker="o", label=col.removeprefix("eval."))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("metric")
    if axis.endswith("proj_dim"):
        ax.set_xscale("log", base=2)
    ax.legend(fontsize=7)
    return _save(fig, out / f"metric_vs_{axis.split('.')[-1]}.png")


def transfer_matrix(runs: list[Run], out: Path) -> Path | None:
    cols = metric_columns(runs)
    if not cols:
        return None
    sel = sorted({r.get("config.selector") for r in runs if r.get("config.selector")})
    mod = sorted({r.get("config.model") for r in runs if r.get("config.model")})
    if len(sel) * len(mod) < 2:
        return None
    less = [r for r in runs if r.get("selection.method") == "less"] or runs
    grid = np.full((len(sel), len(mod)), np.nan)
    for i, s in enumerate(sel):
        for j, m in enumerate(mod):
            vals = [r.get(cols[0]) for r in less if r.get("config.selector") == s and r.get("config.model") == m
                    and r.get(cols[0]) is not None]
            if vals:
                grid[i, j] = np.mean(vals)
    fig, ax = plt.subplots(figsize=(1.5 + 1.3 * len(mod), 1.2 + 0.9 * len(sel)))
    im = ax.imshow(grid, cmap="viridis")
    ax.set_xticks(range(len(mod)), mod, rotation=30, ha="right")
    ax.set_yticks(range(len(sel)), sel)
    ax.set_xlabel("target model (trained)")
    ax.set_ylabel("selector model")
    for (i, j), v in np.ndenumerate(grid):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.3f}", ha="center", va="center", color="w", fontsize=8)
    fig.colorbar(im, ax=ax, label=cols[0].rsplit(".", 1)[-1])
    ax.set_title(cols[0].removeprefix("eval.").rsplit(".", 1)[0], fontsize=8)
    return _save(fig, out / "transfer_matrix.png")


def overlap_heatmap(runs: list[Run], out: Path) -> Path | None:
    sets, labels = [], []
    for r in runs:
        p = r.get("selection.selected")
        if p and Path(p).is_file():
            sets.append({json.loads(line)["id"] for line in open(p)})
            labels.append(_label(r))
    if len(sets) < 2:
        return None
    n = len(sets)
    jac = np.array([[len(a & b) / len(a | b) if a | b else 1.0 for b in sets] for a in sets])
    fig, ax = plt.subplots(figsize=(2 + 0.5 * n, 1.5 + 0.45 * n))
    im = ax.imshow(jac, vmin=0, vmax=1, cmap="magma")
    ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=6)
    ax.set_yticks(range(n), labels, fontsize=6)
    fig.colorbar(im, ax=ax, label="Jaccard overlap of selections")
    return _save(fig, out / "selection_overlap.png")


def composition(runs: list[Run], out: Path) -> Path | None:
    comp = [(_label(r), r.get("selection.by_source") or {}) for r in runs if r.get("selection.by_source")]
    if not comp:
        return None
    sources = sorted({s for _, c in comp for s in c})
    fig, ax = plt.subplots(figsize=(2 + 0.5 * len(comp), 3.5))
    bottom = np.zeros(len(comp))
    for s in sources:
        vals = np.array([c.get(s, 0) / max(1, sum(c.values())) for _, c in comp])
        ax.bar(range(len(comp)), vals, bottom=bottom, label=s)
        bottom += vals
    ax.set_xticks(range(len(comp)), [lab for lab, _ in comp], rotation=60, ha="right", fontsize=6)
    ax.set_ylabel("share of the selection")
    ax.legend(fontsize=6, bbox_to_anchor=(1.02, 1), loc="upper left")
    return _save(fig, out / "composition_by_source.png")


def all_plots(runs: list[Run], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    made = [metric_vs(runs, "selection.proj_dim", out, "projection dimension"),
            metric_vs(runs, "selection.fraction", out, "selection fraction"),
            transfer_matrix(runs, out),
            # one seed's selections keep the heatmap readable
            overlap_heatmap([r for r in runs if r.axes.get("seed", "0") == "0"] or runs, out),
            composition(runs, out)]
    return [p for p in made if p is not None]

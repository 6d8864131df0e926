"""Paper-style tables: mean +- std over seeds, in markdown and LaTeX."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from analysis.collect import Run

SEED_KEYS = ("seed",)


def metric_columns(runs: list[Run]) -> list[str]:
    """Each eval task's headline metric (first non-stderr one), then the selection's target share."""
    cols = []
    for r in runs:
        for task, ms in (r.get("eval") or {}).items():
            if not isinstance(ms, dict):
                continue
            names = [m for m, v in ms.items() if m != "subtasks" and not m.endswith("stderr")
                     and isinstance(v, (int, float))]
            if names and f"eval.{task}.{names[0]}" not in cols:
                cols.append(f"eval.{task}.{names[0]}")
    if any(r.get("selection.target_share") is not None for r in runs):
        cols.append("selection.target_share")
    return cols


def group_key(r: Run) -> tuple:
    return tuple((k, v) for k, v in r.axes.items() if k not in SEED_KEYS)


def aggregate(runs: list[Run], cols: list[str]) -> tuple[list[str], list[tuple[tuple, dict[str, str], dict]]]:
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for r in runs:
        groups[group_key(r)].append(r)
    axes = [k for k in (runs[0].axes if runs else {}) if k not in SEED_KEYS]
    rows = []
    for key, members in groups.items():
        cells, stats = {}, {}
        for c in cols:
            vals = np.array([m.get(c) for m in members if m.get(c) is not None], dtype=float)
            if len(vals):
                scale = 100.0 if c.endswith(("acc", "target_share", "exact_match")) and vals.max() <= 1 else 1.0
                mean, std = vals.mean() * scale, vals.std(ddof=1) * scale if len(vals) > 1 else 0.0
                cells[c] = f"{mean:.1f} ± {std:.1f}" if len(vals) > 1 else f"{mean:.1f}"
                stats[c] = (mean, std, len(vals))
            else:
                cells[c] = "–"
        rows.append((key, cells, stats))
    return axes, rows


def markdown(runs: list[Run]) -> str:
    cols = metric_columns(runs)
    axes, rows = aggregate(runs, cols)
    n = max((len([m for m in runs if group_key(m) == key]) for key, _, _ in rows), default=1)
    head = axes + [c.removeprefix("eval.") for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, cells, _ in rows:
        lines.append("| " + " | ".join([dict(key).get(a, "") for a in axes] + [cells[c] for c in cols]) + " |")
    note = f"\nMean ± std over {n} seeds; accuracy, exact match and shares in %." if n > 1 else \
        "\nOne run per row; accuracy, exact match and shares in %."
    return "\n".join(lines) + "\n" + note + "\n"


def latex(runs: list[Run]) -> str:
    cols = metric_columns(runs)
    axes, rows = aggregate(runs, cols)
    esc = lambda s: str(s).replace("_", r"\_").replace("%", r"\%").replace("±", r"$\pm$")
    out = [r"\begin{tabular}{" + "l" * len(axes) + "r" * len(cols) + "}", r"\toprule",
           " & ".join(esc(h) for h in axes + [c.removeprefix("eval.") for c in cols]) + r" \\", r"\midrule"]
    for key, cells, _ in rows:
        out.append(" & ".join([esc(dict(key).get(a, "")) for a in axes] + [esc(cells[c]) for c in cols]) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(out) + "\n"

"""Paper-style tables from a :func:`analysis.load` frame: mean ± std and n per group, by pandas.

- Metrics (``metrics``): any numeric results columns; default :func:`headline_metrics`.
- Groups (``by``): any columns; default :func:`default_by`. The runs of a group are its seeds.
- Units: accuracy, exact match, F1, shares and overlaps are shown in % (:func:`in_display_units`,
  also used by the plots); a column whose values already exceed 1 (TyDiQA's F1 and exact match
  are computed in %) is left as it is. Std is the sample std (ddof=1) over a group's runs. The
  target loss is shown with 3 decimals.
- Δ columns: with a ``comparison`` (:func:`analysis.paired.compare`), "Δ <task>.<metric> vs
  random" per eval task for accuracy (in percentage points) and target loss: the paired difference
  on the same examples, ``+1.2 [0.3, 2.1]*`` (mean [95% bootstrap interval], ``*`` where it
  excludes 0), ``ref`` on the reference's rows; explained in the note under the table.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from analysis.collect import config_columns, is_bookkeeping

PERCENT = ("acc", "acc_norm", "exact_match", "em", "f1", "jaccard_vs_less", "precision")
EVAL_METRIC = re.compile(r"^eval\.([^.]+)\.([^.]+)$")
TARGET_LOSS = "target_loss"  # mean token cross-entropy of the reference answers (lower is better)


def metric_name(col: str) -> str:
    return col.rsplit(".", 1)[-1].removesuffix("_stderr")


def is_percent(col: str) -> bool:
    name = metric_name(col)
    return name in PERCENT or name.endswith("_share")


def scale(df: pd.DataFrame, col: str) -> float:
    """100 for a percent metric stored as a fraction (its values, or its metric's for a stderr
    column, are all within [0, 1]), else 1."""
    if not is_percent(col):
        return 1.0
    base = col.removesuffix("_stderr") if col.removesuffix("_stderr") in df else col
    vals = pd.to_numeric(df[base], errors="coerce").abs()
    return 100.0 if vals.notna().any() and vals.max() <= 1 else 1.0


def in_display_units(df: pd.DataFrame, cols: Iterable[str]) -> pd.DataFrame:
    """A copy of ``df`` with ``cols`` numeric and percent metrics in %."""
    out = df.copy()
    for c in cols:
        out[c] = pd.to_numeric(df[c], errors="coerce") * scale(df, c)
    return out


def decimals(col: str) -> int:
    """Decimals a metric is shown with: 3 for the target loss (it moves in the second decimal), else 1."""
    return 3 if metric_name(col) == TARGET_LOSS else 1


def label(col: str) -> str:
    """A metric's name for headers and axes: without ``eval.``, with its unit."""
    return col.removeprefix("eval.") + (" (%)" if is_percent(col) else "")


def headline_metrics(df: pd.DataFrame) -> list[str]:
    """Per eval task its first metric that is neither a stderr nor the target loss (lm-eval's
    order: the task's main one), then its ``target_loss`` when some run has one; then
    ``selection.target_share`` and ``selection.planted.precision`` where some run has them."""
    first: dict[str, str] = {}
    loss: dict[str, str] = {}
    for c in df.columns:
        m = EVAL_METRIC.match(c)
        if not m or c.endswith("_stderr") or not pd.api.types.is_numeric_dtype(df[c]):
            continue
        if m[2] == TARGET_LOSS:
            loss.setdefault(m[1], c)
        else:
            first.setdefault(m[1], c)
    cols = [c for task in dict.fromkeys([*first, *loss]) for c in (first.get(task), loss.get(task)) if c]
    for c in ("selection.target_share", "selection.planted.precision"):
        if c in df and df[c].notna().any():
            cols.append(c)
    return cols


def split_names(values: Iterable[str] | None) -> list[str]:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]`` (repeatable flags and comma lists alike)."""
    return [v.strip() for x in values or [] for v in str(x).split(",") if v.strip()]


def resolve_metrics(df: pd.DataFrame, names: Sequence[str] | None) -> list[str]:
    """Column names for ``names`` (``eval.`` may be left out); default: :func:`headline_metrics`."""
    if not names:
        return headline_metrics(df)
    out = []
    for n in split_names(names):
        col = n if n in df else f"eval.{n}" if f"eval.{n}" in df else None
        if col is None or not pd.api.types.is_numeric_dtype(df[col]):
            some = [c for p in ("eval.", "selection.", "train.") for c in df.columns
                    if c.startswith(p) and pd.api.types.is_numeric_dtype(df[c])]
            raise KeyError(f"no numeric column {n!r}; e.g. {', '.join(some[:20])}" + (", ..." if len(some) > 20 else ""))
        out.append(col)
    return out


def default_by(df: pd.DataFrame) -> list[str]:
    """The configuration columns that vary across the runs, except ``seed`` and bookkeeping
    overrides (cache_dir, logger, ...), and except those the columns before them already determine
    (``selection=random`` beside ``method``; ``proj_dim``, which only LESS runs have, beside ``method``)."""
    by: list[str] = []
    for c in config_columns(df):
        if c == "seed" or is_bookkeeping(c) or df[c].astype(str).nunique() < 2:
            continue
        if by and (groups(df.astype({c: str}), by)[c].nunique() <= 1).all():
            continue
        by.append(c)
    return by


def resolve_by(df: pd.DataFrame, names: Sequence[str] | None) -> list[str]:
    if not names:
        return default_by(df)
    by = split_names(names)
    missing = [c for c in by if c not in df]
    if missing:
        raise KeyError(f"no column {missing}; configuration columns: {', '.join(config_columns(df))}")
    return by


def groups(df: pd.DataFrame, by: list[str]):
    if not by:
        return df.assign(all="all").groupby("all")
    # a column mixing types (overrides 10 and "null"...) cannot be sorted: group it as text
    mixed = [c for c in by if df[c].dtype == object and df[c].dropna().map(type).nunique() > 1]
    if mixed:
        df = df.assign(**{c: df[c].map(lambda v: v if pd.isna(v) else str(v)) for c in mixed})
    return df.groupby(by, dropna=False, sort=True)


def aggregate(df: pd.DataFrame, metrics: Sequence[str] | None = None, by: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per group of ``by`` (default :func:`default_by`); columns (metric, mean | std | n) in
    display units (std: sample std over the group's runs; n: runs with a value)."""
    metrics, by = resolve_metrics(df, metrics), resolve_by(df, by)
    shown = in_display_units(df, metrics)
    return groups(shown, by)[metrics].agg(["mean", "std", "count"]).rename(columns={"count": "n"}, level=1)


def fmt_value(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _fmt_cell(mean: float, std: float, n: int, n_row: int, places: int = 1) -> str:
    if n == 0:
        return "–"
    cell = f"{mean:.{places}f}" if n < 2 else f"{mean:.{places}f} ± {std:.{places}f}"
    return cell if n == n_row else f"{cell} (n={n})"


def table(df: pd.DataFrame, metrics: Sequence[str] | None = None, by: Sequence[str] | None = None,
          comparison=None) -> pd.DataFrame:
    """:func:`aggregate` as text: a column per ``by`` key, ``mean ± std`` per metric, then with a
    ``comparison`` (:func:`analysis.paired.compare`) its "Δ ... vs <reference>" columns, ``n`` runs."""
    metrics, by = resolve_metrics(df, metrics), resolve_by(df, by)
    agg = aggregate(df, metrics, by)
    parts = list(groups(df, by))  # same groups, same order as agg
    rows = []
    for (key, r), (_, runs) in zip(agg.iterrows(), parts):
        keys = key if isinstance(key, tuple) else (key,)
        n_row = len(runs)
        rows.append({**({k: fmt_value(v) for k, v in zip(by, keys)} if by else {"runs": "all"}),
                     **{label(m): _fmt_cell(r[(m, "mean")], r[(m, "std")], int(r[(m, "n")]), n_row, decimals(m))
                        for m in metrics},
                     **(comparison.cells(runs) if comparison is not None else {}),
                     "n": n_row})
    return pd.DataFrame(rows)


def note(df: pd.DataFrame, metrics: Sequence[str] | None = None, by: Sequence[str] | None = None,
         comparison=None) -> str:
    metrics, by = resolve_metrics(df, metrics), resolve_by(df, by)
    pct = [label(m).removesuffix(" (%)") for m in metrics if is_percent(m)]
    text = ("Mean ± std (sample std, ddof=1) over the n runs of each row (its seeds)"
            + (f", grouped by {', '.join(by)}" if by else "") + "; one value where n = 1; "
            + (f"{', '.join(pct)} in %." if pct else "no percent metrics."))
    if comparison is not None and comparison.note(df, by):
        text += "\n\n" + comparison.note(df, by)
    return text


def _value_columns(t: pd.DataFrame, metrics: Sequence[str]) -> int:
    """How many columns at the right of a :func:`table` hold values (metrics, Δ columns, n)."""
    return len(metrics) + 1 + sum(str(c).startswith("Δ ") for c in t.columns)


def markdown(df: pd.DataFrame, metrics: Sequence[str] | None = None, by: Sequence[str] | None = None,
             comparison=None) -> str:
    metrics, by = resolve_metrics(df, metrics), resolve_by(df, by)
    t = table(df, metrics, by, comparison)
    n_values = _value_columns(t, metrics)
    align = ["left"] * (t.shape[1] - n_values) + ["right"] * n_values
    return (t.to_markdown(index=False, disable_numparse=True, colalign=align) + "\n\n"
            + note(df, metrics, by, comparison) + "\n")


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    return ("".join(LATEX_SPECIAL.get(ch, ch) for ch in str(text)).replace("±", r"$\pm$").replace("–", "--")
            .replace("Δ", r"$\Delta$").replace("−", "-"))


def latex(df: pd.DataFrame, metrics: Sequence[str] | None = None, by: Sequence[str] | None = None,
          comparison=None) -> str:
    metrics, by = resolve_metrics(df, metrics), resolve_by(df, by)
    t = table(df, metrics, by, comparison)
    n_values = _value_columns(t, metrics)
    t = t.map(tex_escape).rename(columns=tex_escape)
    n_keys = t.shape[1] - n_values
    comment = "\n".join(f"% {line}" for line in note(df, metrics, by, comparison).splitlines() if line)
    return f"{comment}\n" + t.to_latex(index=False, escape=False, column_format="l" * n_keys + "r" * n_values)

"""What each run's selection correlates with and, in a planted sweep, how much of what was planted
it recovers, gathered across a sweep (results.json ``selection.correlates`` and
``selection.planted``; less.stages.correlates, less.data.planted).

- :func:`correlates_table`: one row per run: its method and the settings that vary, then for each
  correlate (response length, labelled tokens, loss at the last warmup checkpoint) Spearman's rho
  with its 95% interval, and the top source's share of the selection beside its share of the pool.
- :func:`planted_table`: one row per run with planted items: method, rendering, precision@k with
  its 95% bootstrap interval, the base rate and the lift over it, how many planted items the
  selection holds, and their mean rank percentile with its interval.
"""

from __future__ import annotations

import pandas as pd

from analysis.collect import config_columns, is_bookkeeping

CORRELATES = ("response_chars", "labelled_tokens", "loss")
PLANTED = ("k", "hits", "precision", "ci_low", "ci_high", "base_rate", "lift", "in_selection", "n_selected",
           "mean_rank_percentile", "rank_percentile_ci_low", "rank_percentile_ci_high")


def _varying(df: pd.DataFrame, skip: tuple[str, ...] = ()) -> list[str]:
    return [c for c in config_columns(df) if c not in ("method", "selection", *skip) and not is_bookkeeping(c)
            and df[c].astype(str).nunique() > 1]


def correlates_table(df: pd.DataFrame) -> pd.DataFrame:
    col = "selection.correlates.spearman.{}.{}"
    if col.format("response_chars", "rho") not in df:
        return pd.DataFrame()
    rows = df[df[col.format("response_chars", "n")].notna()]
    out = rows[["method", *_varying(rows)]].copy()
    for v in CORRELATES:
        for part in ("rho", "ci_low", "ci_high"):
            name = col.format(v, part)
            out[f"{v}_{part}" if part != "rho" else f"rho_{v}"] = rows[name] if name in rows else None
    shares = [c for c in rows.columns if c.startswith("selection.correlates.sources.") and c.endswith(".selection")]
    if shares:
        sel = rows[shares].astype(float)
        top = sel.idxmax(axis=1)
        out["top_source"] = [c.split(".")[-2] for c in top]
        out["top_source_selection"] = [rows.at[i, c] for i, c in zip(rows.index, top)]
        out["top_source_pool"] = [rows.at[i, c.removesuffix(".selection") + ".pool"] for i, c in zip(rows.index, top)]
    return out.reset_index(drop=True)


def planted_table(df: pd.DataFrame) -> pd.DataFrame:
    if "selection.planted.precision" not in df:
        return pd.DataFrame()
    rows = df[df["selection.planted.precision"].notna()]
    out = rows[["method", *_varying(rows, ("plant.rendering",))]].copy()
    out.insert(1, "rendering", rows["selection.planted.rendering"])
    for c in PLANTED:
        out[c] = rows[f"selection.planted.{c}"]
    return out.sort_values(["rendering", "precision"], ascending=[True, False], kind="stable").reset_index(drop=True)

"""What the ``validate`` experiment measures, as tables: the LDS of each method and the selection curve.

- :func:`lds_table`: one row per method (``validate.method``, else the run's method) with its
  linear datamodeling score (results.json ``validate``: ``lds``, ``stderr``, ``ci_low``,
  ``ci_high`` over ``subsets`` = M random subsets of share ``alpha``, for ``task``). Runs of one
  method at different fractions report the same LDS: they are deduplicated; a method whose scores
  depend on the seed or on the fraction (kcenter) gets a row per seed or fraction (``fraction``
  set only then), and two runs of one seed and fraction that disagree are an error naming both. A method validated in several settings (another model)
  gets a row per setting, and a row per seed where its LDS differs between seeds (``seeds``: the
  seeds a row stands for). :func:`lds_by_task` is the same per eval task (``validate.by_task``).
- :func:`selection_curve` (sweeps over two fractions or more, and validate sweeps): per method and
  selection fraction (and per setting that varies besides), the target loss after training on the
  selection (``eval.<task>.target_loss``: mean and sample std over the seeds), the reference
  method's (``random``) at the same fraction, and the paired Δ vs the reference with its interval
  (:mod:`analysis.paired`) where per-example results exist.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.collect import config_columns, is_bookkeeping
from analysis.paired import Comparison, _norm
from analysis.tables import EVAL_METRIC, TARGET_LOSS, fmt_value
from less.errors import DataError

LDS_COLUMNS = ["method", "task", "lds", "stderr", "ci_low", "ci_high", "subsets", "alpha"]
FRACTION = ("fraction", "selection.fraction", "selection.k")  # the selection curve's axis and its aliases


class ValidationError(DataError):
    """Runs report different LDS for the same method and setting."""


def _settings(df: pd.DataFrame, rows: pd.DataFrame) -> list[str]:
    """The configuration columns that vary across ``rows``, except bookkeeping ones, those naming
    the method, the fraction (runs of a method at different fractions carry the same LDS) and the
    seed (see :func:`_dedupe`): the settings that tell two LDS rows of one method apart (another
    model, another pool)."""
    out = []
    for c in config_columns(df):
        if c in ("method", "seed", "selection", "selection.method", "proj_dim", *FRACTION) or is_bookkeeping(c):
            continue
        if rows[c].astype(str).nunique() > 1:
            out.append(c)
    return out


def _close(a, b) -> bool:
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return a == b
    return (math.isnan(a) and math.isnan(b)) or bool(np.isclose(a, b, rtol=1e-9, atol=1e-12))


def _disagreement(rows: list[dict], values: list[str]) -> tuple[dict, dict, str] | None:
    for r in rows[1:]:
        for v in values:
            if not _close(rows[0][v], r[v]):
                return rows[0], r, v
    return None


def _seeds(rows: list[dict]) -> str:
    return ",".join(dict.fromkeys(fmt_value(r["seed"]) for r in rows if pd.notna(r.get("seed"))))


def _dedupe(rows: pd.DataFrame, settings: list[str], values: list[str], what: str) -> pd.DataFrame:
    """One row per (method, task, settings) of ``rows`` when its runs agree on ``values`` (``seeds``:
    the seeds it stands for); a row per seed where they agree within each seed only (the method's
    scores depend on the seed); else an error naming two runs that disagree."""
    buckets: dict[tuple, list[dict]] = {}
    for r in rows.to_dict("records"):
        buckets.setdefault((r["method"], r["task"], *(_norm(r[c]) for c in settings)), []).append(r)
    out = []
    for bucket in buckets.values():
        parts = [bucket]
        # a method whose scores depend on the seed gets a row per seed; one whose scores depend on
        # how many it selects (kcenter's greedy order) a row per seed and fraction
        for split in (("seed",), ("seed", "fraction")):
            if all(_disagreement(part, values) is None for part in parts):
                break
            by: dict = {}
            for r in bucket:
                by.setdefault(tuple(_norm(r.get(c)) for c in split), []).append(r)
            parts = list(by.values())
        for part in parts:
            bad = _disagreement(part, values)
            if bad is not None:
                a, b, v = bad
                raise ValidationError(
                    f"{what} of method {a['method']} ({a['task']}) differs between {a['path']} and {b['path']} "
                    f"({v} {a[v]} vs {b[v]}), which the same method should share (another setting? group by it "
                    "with --by)")
            fractions = {_norm(r.get("fraction")) for r in part}
            out.append({**part[0], "seeds": _seeds(part), "n_runs": len(part),
                        "fraction": part[0].get("fraction") if len(fractions) == 1 and len(parts) > 1 else np.nan})
    return pd.DataFrame(out).drop(columns=["path", "seed"], errors="ignore")


def _with_fraction(d: pd.DataFrame) -> pd.DataFrame:
    return d if "fraction" in d else d.assign(fraction=np.nan)


def lds_table(df: pd.DataFrame) -> pd.DataFrame:
    """lds.csv: one row per validated method (and setting); empty without ``validate`` results."""
    if "validate.lds" not in df or not df["validate.lds"].notna().any():
        return pd.DataFrame(columns=LDS_COLUMNS)
    d = df[df["validate.lds"].notna()]
    method = d["validate.method"] if "validate.method" in d else d["method"]
    rows = pd.DataFrame({"path": d["path"], "method": method.fillna(d["method"]),
                         "task": d["validate.task"] if "validate.task" in d else None,
                         **{c: pd.to_numeric(d[f"validate.{c}"], errors="coerce") if f"validate.{c}" in d else np.nan
                            for c in ("lds", "stderr", "ci_low", "ci_high", "subsets", "alpha")}})
    settings = _settings(df, d)
    rows = pd.concat([rows, _with_fraction(d)[[*settings, "seed", "fraction"]]], axis=1)
    out = _dedupe(rows, settings, ["lds", "stderr", "ci_low", "ci_high", "subsets", "alpha"], "LDS")
    out["subsets"] = out["subsets"].astype("Int64")
    return out[[*LDS_COLUMNS, *settings, "fraction", "seeds", "n_runs"]].sort_values(
        ["method", *settings, "fraction"], kind="stable").reset_index(drop=True)


def lds_by_task(df: pd.DataFrame) -> pd.DataFrame:
    """lds_by_task.csv: ``validate.by_task.<task>.{lds,ci_low,ci_high}`` per method and task."""
    cols = [c for c in df.columns if c.startswith("validate.by_task.") and c.endswith(".lds")]
    if not cols:
        return pd.DataFrame(columns=["method", "task", "lds", "ci_low", "ci_high"])
    d = df[df[cols].notna().any(axis=1)]
    method = (d["validate.method"] if "validate.method" in d else d["method"]).fillna(d["method"])
    settings = _settings(df, d)
    parts = []
    for c in cols:
        task = c.removeprefix("validate.by_task.").removesuffix(".lds")
        base = f"validate.by_task.{task}."
        part = pd.DataFrame({"path": d["path"], "method": method, "task": task,
                             **{k: pd.to_numeric(d[base + k], errors="coerce") if base + k in d else np.nan
                                for k in ("lds", "ci_low", "ci_high")}})
        parts.append(pd.concat([part, _with_fraction(d)[[*settings, "seed", "fraction"]]], axis=1)[d[c].notna()])
    rows = pd.concat(parts, ignore_index=True)
    out = _dedupe(rows, settings, ["lds", "ci_low", "ci_high"], "LDS")
    return out[["method", "task", "lds", "ci_low", "ci_high", *settings, "fraction", "seeds", "n_runs"]].sort_values(
        ["method", "task", *settings, "fraction"], kind="stable").reset_index(drop=True)


def loss_tasks(df: pd.DataFrame) -> list[str]:
    """The eval tasks with a run-level target loss (``eval.<task>.target_loss``)."""
    return [m[1] for c in df.columns if (m := EVAL_METRIC.match(c)) and m[2] == TARGET_LOSS
            and pd.to_numeric(df[c], errors="coerce").notna().any()]


def selection_curve(df: pd.DataFrame, comparison: Comparison) -> pd.DataFrame:
    """selection_curve.csv: per setting, method, fraction and task: ``target_loss`` (mean over the
    seeds), ``target_loss_std``, ``n_runs``, the reference's mean at the same fraction, and the
    paired ``delta`` vs the reference (``stderr``, ``ci_low``, ``ci_high``, ``excludes_zero``,
    ``n_examples``, ``n_seeds``; NaN without per-example results)."""
    tasks = loss_tasks(df)
    ref = comparison.reference
    d = df[df["fraction"].notna() & df["method"].notna()] if "fraction" in df else df.iloc[:0]
    settings = [c for c in comparison.key_columns if c not in FRACTION and d[c].astype(str).nunique() > 1]
    cols = [*settings, "method", "fraction", "task", "target_loss", "target_loss_std", "n_runs", "reference",
            "reference_target_loss", "delta", "stderr", "ci_low", "ci_high", "excludes_zero", "n_examples", "n_seeds"]
    validated = "validate.lds" in df and df["validate.lds"].notna().any()
    if not tasks or d.empty or not (validated or d["fraction"].nunique() > 1):
        return pd.DataFrame(columns=cols)  # a curve needs two fractions (or a validate sweep)
    rows = []
    buckets: dict[tuple, list] = {}
    for i in d.index:
        k = (*(_norm(d.at[i, c]) for c in settings), d.at[i, "method"], float(d.at[i, "fraction"]))
        buckets.setdefault(k, []).append(i)
    for task in tasks:
        col = f"eval.{task}.{TARGET_LOSS}"
        means = {k: pd.to_numeric(d.loc[idx, col], errors="coerce") for k, idx in buckets.items()}
        for k, idx in buckets.items():
            vals = means[k].dropna()
            if vals.empty:
                continue
            *setting, method, fraction = k
            ref_vals = means.get((*setting, ref, fraction))
            row = {**dict(zip(settings, setting)), "method": method, "fraction": fraction, "task": task,
                   "target_loss": vals.mean(), "target_loss_std": vals.std(ddof=1) if len(vals) > 1 else np.nan,
                   "n_runs": len(vals), "reference": ref,
                   "reference_target_loss": ref_vals.dropna().mean() if ref_vals is not None else np.nan}
            keys = {comparison.run_keys.get(i) for i in idx}
            hit = (comparison.lookup(next(iter(keys)), method, task, TARGET_LOSS)
                   if len(keys) == 1 and method != ref else None)
            for c in ("delta", "stderr", "ci_low", "ci_high", "excludes_zero", "n_examples", "n_seeds"):
                row[c] = hit[c] if hit is not None else np.nan
            rows.append(row)
    out = pd.DataFrame(rows, columns=cols)
    return out.sort_values([*settings, "task", "method", "fraction"], kind="stable").reset_index(drop=True)

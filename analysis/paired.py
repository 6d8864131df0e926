"""Paired differences between selection methods evaluated on the same examples (REFERENCE section 8).

Each run's results.json names its per-example results (``examples.eval``: examples.jsonl, one
object per evaluated example: ``task``, ``subtask``, ``doc_id``, ``digest`` of the exact prompt and
answer, ``target_loss``, ``metrics``). Two runs are evaluated on the same examples when their
(task, subtask, doc_id) sets and digests are equal.

Within each *pairing group* (runs that share every configuration column except ``method`` and
``seed``: :func:`pairing_columns`), a method m is compared with the reference method (``random``
by default): run (m, seed s) is paired with run (reference, seed s) for every seed both have; per
example i the differences d_s(i) = m_s(i) - ref_s(i) are averaged over the paired seeds,
d(i) = mean_s d_s(i), and :func:`less.stats.paired` reports mean_i d(i), its standard error
sd(d)/sqrt(n) and a seeded percentile bootstrap 95% interval over the n examples. That is done per
eval task, for its accuracy metric (the per-example value of the task's headline metric, in
percentage points where the table shows %) and for ``target_loss`` (nats per answer token, lower
is better), each over all the task's examples (the mean over examples, where the table's target
loss is the macro mean over subtasks).

The interval says how sure the difference is given these examples and these trained models; it
does not cover a new training seed (that variation is in the table's std over seeds).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.collect import config_columns, is_bookkeeping
from analysis.tables import EVAL_METRIC, TARGET_LOSS, fmt_value, groups, is_percent
from less.errors import ConfigError, DataError
from less.stats import BOOTSTRAP, LEVEL, paired

REFERENCE = "random"
EXAMPLES = "examples.eval"  # the results column naming a run's examples.jsonl
KEY = ("task", "subtask", "doc_id")
# never part of a pairing group: what is compared (method), what is averaged over (seed), and what
# only names or follows the method (the selection preset, the LESS projection dimension)
NOT_PAIRED = ("method", "seed", "selection", "selection.method", "proj_dim")
CSV_COLUMNS = ["method", "reference", "task", "metric", "units", "delta", "stderr", "ci_low", "ci_high",
               "excludes_zero", "n_examples", "n_seeds", "seeds", "bootstrap_seed", "runs", "reference_runs"]


class PairingError(DataError):
    """Two runs that should be paired were evaluated on different examples (or their files are bad)."""


def read_examples(path: str | Path) -> pd.DataFrame:
    """One run's examples.jsonl, indexed by (task, subtask, doc_id) (doc_id as text), in that order
    (doc_ids that are numbers as numbers);
    columns ``digest``, ``target_loss``, ``tokens`` and ``metric.<name>`` per per-example metric."""
    path = Path(path)
    rows = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                rows.append({"task": str(r["task"]), "subtask": str(r.get("subtask") or ""),
                             "doc_id": str(r["doc_id"]), "digest": r.get("digest"),
                             "target_loss": r.get("target_loss"), "tokens": r.get("tokens"),
                             **{f"metric.{k}": v for k, v in (r.get("metrics") or {}).items()}})
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise PairingError(f"{path}:{n}: not an example record ({type(e).__name__}: {e})") from None
    if not rows:
        raise PairingError(f"{path}: no examples")
    # one order for every run (the bootstrap resamples by position): task, subtask, doc_id (numbers as numbers)
    rows.sort(key=lambda r: (r["task"], r["subtask"], _doc_order(r["doc_id"])))
    df = pd.DataFrame(rows).set_index(list(KEY))
    dup = df.index[df.index.duplicated()]
    if len(dup):
        raise PairingError(f"{path}: example {tuple(dup[0])} appears more than once")
    for c in df.columns:
        if c == "target_loss" or c.startswith("metric."):
            df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def _doc_order(doc_id: str) -> tuple[int, int, str]:
    return (0, int(doc_id), "") if doc_id.lstrip("-").isdigit() else (1, 0, doc_id)


def difference(a: pd.DataFrame, b: pd.DataFrame) -> str | None:
    """Why two runs' examples differ (one phrase), or None when they are the same examples."""
    if a.index.equals(b.index):
        bad = (a["digest"].astype(str) != b["digest"].astype(str)).to_numpy()
        if not bad.any():
            return None
        return f"{int(bad.sum())} of {len(a)} examples differ in prompt or answer (digest), e.g. {tuple(a.index[bad][0])}"
    only_a, only_b = a.index.difference(b.index), b.index.difference(a.index)
    parts = [f"{len(x)} examples only in the {w}" + (f", e.g. {tuple(x[0])}" if len(x) else "")
             for x, w in ((only_a, "first"), (only_b, "second")) if len(x)]
    return "; ".join(parts)


def _norm(v: Any) -> Any:
    """A configuration value as a hashable key: None for missing, floats for numbers, else text."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    return str(v)


def pairing_columns(df: pd.DataFrame, reference: str = REFERENCE) -> list[str]:
    """The configuration columns that make a pairing group: every configuration column except
    bookkeeping ones (cache_dir, logger, eval.limit, ...), ``method``, ``seed``, the selection
    preset and ``proj_dim``, and except columns no run of ``reference`` has (options of other
    methods, such as ``selection.rds.pooling``: the reference cannot match them)."""
    ref = df[df["method"] == reference]
    out = []
    for c in config_columns(df):
        if c in NOT_PAIRED or is_bookkeeping(c):
            continue
        if len(ref) and ref[c].isna().all() and df[c].notna().any():
            continue
        out.append(c)
    return out


def accuracy_metric(df: pd.DataFrame, task: str, metrics: Sequence[str] | None = None) -> str | None:
    """The run-level metric of ``task`` whose per-example values the accuracy Δ uses: the first of
    ``metrics`` (the table's) for the task that is not the target loss, else the task's first
    metric in results.json (its headline)."""
    cands = [c for c in (metrics or []) if EVAL_METRIC.match(c) and EVAL_METRIC.match(c)[1] == task]
    cands += [c for c in df.columns if EVAL_METRIC.match(c) and EVAL_METRIC.match(c)[1] == task]
    for c in cands:
        name = EVAL_METRIC.match(c)[2]
        if not c.endswith("_stderr") and name != TARGET_LOSS and pd.api.types.is_numeric_dtype(df[c]):
            return name
    return None


@dataclass
class Comparison:
    """The paired differences of a sweep (:func:`compare`): ``rows`` is paired.csv; ``cells`` and
    ``note`` put them into the main table."""

    reference: str
    seed: int
    key_columns: list[str]
    rows: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    run_keys: dict[Any, tuple] = field(default_factory=dict)  # df index -> pairing group key
    n_boot: int = BOOTSTRAP
    level: float = LEVEL

    def lookup(self, key: tuple, method: str, task: str, metric: str) -> dict[str, Any] | None:
        """The paired.csv row of ``method`` in the pairing group ``key`` (:attr:`run_keys`), or None."""
        for r in self.rows.to_dict("records"):
            if (r["_key"], r["method"], r["task"], r["metric"]) == (key, method, task, metric):
                return r
        return None

    def columns(self) -> list[tuple[str, str, str]]:
        """(task, metric, header) of each Δ column, accuracy before target loss per task."""
        if self.rows.empty:
            return []
        seen = dict.fromkeys(zip(self.rows["task"], self.rows["metric"], self.rows["units"]))
        order = sorted(seen, key=lambda t: (list(dict.fromkeys(self.rows["task"])).index(t[0]), t[1] == TARGET_LOSS))
        return [(t, m, f"Δ {t}.{m} vs {self.reference}" + (" (pp)" if u == "pp" else "")) for t, m, u in order]

    def cells(self, runs: pd.DataFrame) -> dict[str, str]:
        """The Δ cells of a table row holding ``runs``: ``+1.2 [0.3, 2.1]*`` (mean [95% interval],
        ``*`` where it excludes 0), ``ref`` for the reference's rows, ``–`` where there is none."""
        cols = self.columns()
        if not cols:
            return {}
        methods = runs["method"].dropna().unique()
        keys = {self.run_keys.get(i) for i in runs.index}
        out = {}
        for task, metric, header in cols:
            cell = "–"
            if len(methods) == 1 and methods[0] == self.reference:
                cell = "ref"
            elif len(methods) == 1 and len(keys) == 1:
                r = self.lookup(next(iter(keys)), methods[0], task, metric)
                if r is not None:
                    cell = format_delta(r["delta"], r["ci_low"], r["ci_high"], 3 if metric == TARGET_LOSS else 1)
            out[header] = cell
        return out

    def note(self, df: pd.DataFrame | None = None, by: Sequence[str] | None = None) -> str:
        """The explanation under the table: what Δ is, its units, and why a row has none."""
        lines = []
        if not self.rows.empty:
            pct = self.level * 100
            lines.append(
                f"Δ vs {self.reference}: paired difference (method − {self.reference}) on the same evaluation "
                f"examples: per example the difference of run (method, seed s) and run ({self.reference}, seed s), "
                f"averaged over the seeds both have; mean over the examples [{pct:g}% percentile bootstrap interval "
                f"over examples, {self.n_boot} resamples, seed {self.seed}]; * = the interval excludes 0. "
                "Accuracy Δ in percentage points (pp; higher is better), target loss Δ in nats per answer token "
                "(lower is better; the mean over examples, where the table's target loss is the macro mean over "
                "subtasks). "
                "The interval covers the choice of examples, not a new training seed. All figures in paired.csv.")
            if df is not None and by is not None and self._merged(df, by):
                lines.append("Rows that hold several settings of " + ", ".join(
                    c for c in self.key_columns if c not in by and df[c].astype(str).nunique() > 1)
                    + " have no Δ (group by them to see it).")
        lines += self.notes
        return "\n".join(f"- {line}" if len(lines) > 1 else line for line in lines)

    def _merged(self, df: pd.DataFrame, by: Sequence[str]) -> bool:
        return any(len({self.run_keys.get(i) for i in runs.index}) > 1 and runs["method"].nunique() == 1
                   for _, runs in groups(df, list(by)))

    def csv(self) -> pd.DataFrame:
        return self.rows.drop(columns=["_key"], errors="ignore")


def format_delta(delta: float, lo: float, hi: float, places: int) -> str:
    star = "*" if (lo > 0 or hi < 0) else ""
    return f"{delta:+.{places}f} [{lo:.{places}f}, {hi:.{places}f}]{star}"


def _label(cols: Sequence[str], key: tuple, df: pd.DataFrame) -> str:
    shown = [(c, v) for c, v in zip(cols, key) if df[c].astype(str).nunique() > 1]
    return ", ".join(f"{c}={fmt_value(v)}" for c, v in shown) or "all runs"


def compare(df: pd.DataFrame, reference: str | None = None, seed: int = 0, metrics: Sequence[str] | None = None,
            n_boot: int = BOOTSTRAP, level: float = LEVEL) -> Comparison:
    """Paired Δ of every method vs ``reference`` (default ``random``; given explicitly, it must
    have runs) within each pairing group, per eval task, for accuracy and target loss.

    Raises :class:`PairingError` (one line, naming both run directories) when two runs to be paired
    (or two seeds of a comparison) were evaluated on different examples."""
    explicit = reference is not None
    reference = reference or REFERENCE
    cols = pairing_columns(df, reference)
    empty = pd.DataFrame(columns=[*cols, *CSV_COLUMNS])
    comp = Comparison(reference, seed, cols, empty, n_boot=n_boot, level=level)
    if not (df["method"] == reference).any():
        if explicit:
            methods = ", ".join(sorted(map(str, df["method"].dropna().unique())))
            raise ConfigError(f"--reference {reference}: no run of that method (methods: {methods})")
        comp.notes.append(f"No Δ: no run of the reference method {reference} (--reference chooses another).")
        return comp
    if EXAMPLES not in df or not df[EXAMPLES].notna().any():
        comp.notes.append("No Δ: the runs list no per-example results (results.json examples.eval).")
        return comp
    comp.run_keys = {i: tuple(_norm(df.at[i, c]) for c in cols) for i in df.index}
    members: dict[tuple, list] = {}
    for i, k in comp.run_keys.items():
        members.setdefault(k, []).append(i)
    cache: dict[str, pd.DataFrame] = {}

    def examples(i) -> pd.DataFrame | None:
        p = df.at[i, EXAMPLES]
        if not isinstance(p, str) or not p:
            return None
        if p not in cache:
            if not Path(p).is_file() or Path(p).stat().st_size == 0:  # none, or an accuracy-only eval's
                return None
            cache[p] = read_examples(p)
        return cache[p]

    rows = []
    for key, index in members.items():
        g = df.loc[index]
        where = _label(cols, key, df)
        ref = g[g["method"] == reference]
        others = g[(g["method"] != reference) & g["method"].notna()]
        if others.empty:
            continue
        if ref.empty:
            comp.notes.append(f"{where}: no {reference} run, so no Δ.")
            continue
        for method, gm in others.groupby("method", sort=True):
            out = _compare_method(df, key, cols, where, method, gm, ref, reference, examples, comp, metrics)
            rows += out
    if rows:
        comp.rows = pd.DataFrame(rows)[[*cols, *CSV_COLUMNS, "_key"]]
    comp.notes = list(dict.fromkeys(comp.notes))
    return comp


def _by_seed(runs: pd.DataFrame) -> tuple[dict[Any, Any], list[tuple]]:
    """{seed: df index} of one method's runs in a group, and the seeds held by several runs."""
    out: dict[Any, Any] = {}
    dups = []
    for i, s in runs["seed"].items():
        s = _norm(s)
        if s in out:
            dups.append((s, out[s], i))
        out.setdefault(s, i)
    return out, dups


def _compare_method(df, key, cols, where, method, gm, ref, reference, examples, comp, metrics) -> list[dict]:
    mine, dup_m = _by_seed(gm)
    theirs, dup_r = _by_seed(ref)
    for s, i, j in dup_m + dup_r:
        comp.notes.append(f"{where}: runs {df.at[i, 'path']} and {df.at[j, 'path']} are the same method and seed "
                          f"{fmt_value(s)}: no Δ for {method} (separate them with --by).")
        return []
    seeds = [s for s in mine if s in theirs]
    if not seeds:
        comp.notes.append(f"{where}: {method} and {reference} share no seed, so no Δ for {method}.")
        return []
    pairs, missing = [], []
    for s in seeds:
        a, b = examples(mine[s]), examples(theirs[s])
        if a is None or b is None:
            missing.append(df.at[mine[s] if a is None else theirs[s], "path"])
            continue
        pairs.append((s, mine[s], theirs[s], a, b))
    if missing:
        comp.notes.append(f"{where}: no per-example results for {', '.join(missing)}" +
                          (f"; {method}'s Δ uses the other seeds" if pairs else f", so no Δ for {method}") + ".")
    if not pairs:
        return []
    first_ref = pairs[0][2]
    for s, i, j, a, b in pairs:
        why = difference(a, b)
        if why is not None:
            raise PairingError(f"runs paired by seed {fmt_value(s)} were evaluated on different examples: "
                               f"{df.at[i, 'path']} and {df.at[j, 'path']} ({why})")
        why = difference(pairs[0][4], b)
        if why is not None:
            raise PairingError(f"seeds of one comparison were evaluated on different examples: "
                               f"{df.at[first_ref, 'path']} and {df.at[j, 'path']} ({why})")
    index = pairs[0][4].index
    rows = []
    for task in dict.fromkeys(index.get_level_values("task")):
        sel = index.get_level_values("task") == task
        acc = accuracy_metric(df, task, metrics)
        for metric in ([acc] if acc else []) + [TARGET_LOSS]:
            col = TARGET_LOSS if metric == TARGET_LOSS else f"metric.{metric}"
            if any(col not in x.columns for _, _, _, a, b in pairs for x in (a, b)):
                if metric != TARGET_LOSS:
                    comp.notes.append(f"{where}: {task} examples have no per-example {metric}, so no accuracy Δ.")
                continue
            a = np.stack([p[3][col].to_numpy(float)[sel] for p in pairs]).mean(axis=0)
            b = np.stack([p[4][col].to_numpy(float)[sel] for p in pairs]).mean(axis=0)
            if np.isnan(a).any() or np.isnan(b).any():
                comp.notes.append(f"{where}: some {task} examples lack {metric}, so no {metric} Δ for {method}.")
                continue
            pct = metric != TARGET_LOSS and is_percent(metric) and max(np.abs(a).max(), np.abs(b).max()) <= 1
            scale = 100.0 if pct else 1.0
            try:
                est = paired(a * scale, b * scale, seed=comp.seed, n_boot=comp.n_boot, level=comp.level)
            except ValueError:
                comp.notes.append(f"{where}: {task} has fewer than 2 examples, so no Δ.")
                continue
            rows.append({**dict(zip(cols, key)), "method": method, "reference": reference, "task": task,
                         "metric": metric, "units": "pp" if pct else ("nats" if metric == TARGET_LOSS else "points"),
                         "delta": est.value, "stderr": est.stderr, "ci_low": est.ci_low, "ci_high": est.ci_high,
                         "excludes_zero": est.excludes_zero, "n_examples": est.n, "n_seeds": len(pairs),
                         "seeds": ",".join(fmt_value(p[0]) for p in pairs), "bootstrap_seed": comp.seed,
                         "runs": ";".join(str(df.at[p[1], "path"]) for p in pairs),
                         "reference_runs": ";".join(str(df.at[p[2], "path"]) for p in pairs), "_key": key})
    return rows


__all__ = ["Comparison", "PairingError", "REFERENCE", "accuracy_metric", "compare", "difference", "format_delta",
           "pairing_columns", "read_examples"]

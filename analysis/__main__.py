"""Turn a sweep directory (or a W&B project) into its table and plots, or show what a run selected.

    python -m analysis multirun/main_table_tiny/<date_time>            # -> <dir>/analysis/
    python -m analysis <sweep> --metric less_synthetic_color.acc_norm --by method,fraction
    python -m analysis <sweep> --reference less --bootstrap-seed 1     # Δ vs another method
    python -m analysis <sweep> --wandb-log [--wandb-mode online] [--wandb-project entity/project]
    python -m analysis --wandb entity/project --group main_table --out report/
    python -m analysis inspect outputs/default/<date_time> --top 5
    python -m analysis explain outputs/default/<date_time> --top 5 [--ids a,b]   # per-token, HTML
    python -m analysis wandb-workspace --entity E --project less --group main_table [--sweep DIR] [--save]

A sweep's report (``<sweep>/analysis/`` unless ``--out``): table.md and table.tex (mean ± std over
seeds, and "Δ vs random" columns where runs list per-example results: the paired difference on the
same examples with its 95% bootstrap interval, * where it excludes 0), paired.csv (every paired Δ),
the plots, correlates.csv (each run's Spearman correlations of the score with response length,
labelled tokens and loss, and its top source); for a sweep with ``validate`` results also lds.csv
(lds_by_task.csv), selection_curve.csv and their plots lds.png and selection_curve.<task>.png; for
a planted sweep (``experiment=planted``) planted.csv and planted.png (precision@k per method and
rendering against the base rate). ``--wandb-log`` logs all of it to one W&B
run (job type ``analysis``, the sweep's group and project; offline unless ``--wandb-mode online``).
``wandb-workspace`` builds the W&B workspace of a group (written as JSON; ``--save`` saves it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from analysis.collect import load, load_wandb
from analysis.diagnostics import correlates_table, planted_table
from analysis.paired import compare
from analysis.plots import all_plots, diagnostic_plots, validation_plots
from analysis.tables import latex, markdown, resolve_by, resolve_metrics, table
from analysis.validation import lds_by_task, lds_table, selection_curve
from less.errors import LessError


def report(argv: list[str] | None) -> Path:
    p = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.split("\n\n")[0],
                                epilog="python -m analysis inspect --help: the top pool examples per target subtask; "
                                       "python -m analysis wandb-workspace --help: a W&B workspace for a sweep group")
    p.add_argument("sweep", nargs="?", help="a sweep or run directory (searched for results.json)")
    p.add_argument("--wandb", help="entity/project to read runs from instead (needs network)")
    p.add_argument("--group", help="with --wandb: only this group (the run name / experiment)")
    p.add_argument("--metric", action="append", help="a results column to show (repeatable or comma list; "
                   "'eval.' may be left out); default: each eval task's headline metric and target loss, and "
                   "selection.target_share")
    p.add_argument("--by", action="append", help="group rows by these columns (repeatable or comma list); "
                   "default: the configuration columns that vary across runs, except seed")
    p.add_argument("--out", help="output folder (default: <sweep>/analysis)")
    p.add_argument("--reference", help="the method every other is compared with, example by example (default: "
                   "random; given explicitly, some run must have it)")
    p.add_argument("--bootstrap-seed", type=int, default=0,
                   help="seed of the bootstrap intervals of the paired Δ (default 0)")
    p.add_argument("--wandb-log", action="store_true",
                   help="also log the tables and plots to one W&B run (job type analysis) in the runs' project and group")
    p.add_argument("--wandb-mode", choices=("offline", "online"),
                   help="with --wandb-log: offline (default, or $WANDB_MODE) or online (falls back to offline)")
    p.add_argument("--wandb-project", help="with --wandb-log: [entity/]project instead of the one the runs used "
                   "(with --wandb: that project)")
    a = p.parse_args(argv)
    if bool(a.sweep) == bool(a.wandb):
        p.error("give a sweep directory or --wandb entity/project")
    try:
        df = load_wandb(a.wandb, a.group) if a.wandb else load(a.sweep)
        metrics, by = resolve_metrics(df, a.metric), resolve_by(df, a.by)
    except (FileNotFoundError, LookupError) as e:  # no runs; an unknown --metric or --by column
        p.error(e.args[0])
    try:
        comparison = compare(df, a.reference, a.bootstrap_seed, metrics)
        lds, lds_tasks, curve = lds_table(df), lds_by_task(df), selection_curve(df, comparison)
        correlates, planted = correlates_table(df), planted_table(df)
    except LessError as e:  # runs paired on different examples, LDS that disagree, an absent --reference
        p.exit(2, f"error: {e}\n")
    out = Path(a.out) if a.out else (Path(a.sweep) / "analysis" if a.sweep else Path("analysis_wandb"))
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(df, metrics, by, comparison)
    (out / "table.md").write_text(md)
    (out / "table.tex").write_text(latex(df, metrics, by, comparison))
    tables = {"paired": comparison.csv(), "lds": lds, "lds_by_task": lds_tasks, "selection_curve": curve,
              "correlates": correlates, "planted": planted}
    written = [out / "table.md", out / "table.tex"]
    for name, t in tables.items():
        if name == "paired" and comparison.rows.empty and not (out / "paired.csv").exists():
            continue  # nothing paired: no empty file (an older one is overwritten below)
        if name != "paired" and t.empty:
            continue
        t.to_csv(out / f"{name}.csv", index=False)
        written.append(out / f"{name}.csv")
    plots = all_plots(df, out, metrics, by) + validation_plots(out, lds, curve) + diagnostic_plots(out, planted)
    print(md)
    print(f"{len(df)} runs -> {', '.join(str(w) for w in written)}, {len(plots)} plots: "
          + ", ".join(p.name for p in plots))
    if a.wandb_log:
        from analysis import wandb_log

        tracker = wandb_log.log(out, df, a.sweep, {"table": table(df, metrics, by, comparison), **tables}, plots,
                                {"sweep": str(a.sweep or a.wandb), "reference": comparison.reference,
                                 "bootstrap_seed": a.bootstrap_seed, "metrics": metrics, "by": by, "runs": len(df)},
                                a.wandb_mode, a.wandb_project or a.wandb, a.group if a.wandb else None)
        where = tracker.url or tracker.dir
        print(f"W&B: analysis run {tracker.id} ({tracker.mode}) in {where}"
              + (f"; upload with: wandb sync {tracker.dir}" if tracker.mode == "offline" else ""))
    return out


def inspect(argv: list[str]) -> str:
    from less.selection.inspect import top_by_subtask

    p = argparse.ArgumentParser(prog="python -m analysis inspect",
                                description="Per target subtask, the pool examples a LESS selection scores "
                                            "highest for it (other methods: the top of the ranking).")
    p.add_argument("run", help="a run directory (holding results.json) or a select artifact directory")
    p.add_argument("--top", type=int, default=10, help="examples per subtask (default 10)")
    p.add_argument("--width", type=int, default=100, help="characters of each prompt shown (default 100)")
    a = p.parse_args(argv)
    try:
        rows = top_by_subtask(a.run, a.top, a.width)
    except LessError as e:
        p.exit(2, f"error: {e}\n")
    lines = []
    for sub in dict.fromkeys(r["subtask"] for r in rows):
        lines.append(f"== subtask {sub}: top {a.top} by its score (sum over checkpoints of w x mean cosine)"
                     if sub else f"== top {a.top} of the ranking (per-subtask scores need selection=less)")
        lines.append(f"{'rank':>4}  {'score':>8}  {'ckpt':>4}  {'source':<18} {'id':<16} text")
        for r in (r for r in rows if r["subtask"] == sub):
            ckpt = "" if r["top_checkpoint"] is None else r["top_checkpoint"]
            lines.append(f"{r['rank']:>4}  {r['score']:>8.4f}  {ckpt:>4}  {str(r['source']):<18} {r['id']:<16} "
                         f"{r['text']}")
    text = "\n".join(lines)
    print(text)
    return text


def explain(argv: list[str]) -> Path:
    from less import explain as ex

    p = argparse.ArgumentParser(prog="python -m analysis explain",
                                description="Why a LESS selection picked what it picked: the top examples' scores "
                                            "split by subtask, checkpoint and token (HTML and markdown).")
    p.add_argument("run", help="a run directory (results.json) of a LESS selection whose inputs are in the cache")
    p.add_argument("--top", type=int, default=5, help="the best-ranked examples to explain (default 5)")
    p.add_argument("--ids", default="", help="comma-separated pool ids to explain as well")
    p.add_argument("--out", help="output folder (default: <run>/explain)")
    p.add_argument("--device", default="cpu", help="where the per-token gradients are computed (default cpu)")
    p.add_argument("--wandb-log", action="store_true", help="also log the tables to one W&B run (job type analysis)")
    p.add_argument("--wandb-mode", choices=("offline", "online"), help="with --wandb-log (default offline)")
    a = p.parse_args(argv)
    if a.top < 0 or (a.top == 0 and not a.ids):
        p.exit(2, f"error: --top must be >= 1 (or 0 with --ids), got {a.top}\n")
    try:
        exps = ex.explain(a.run, a.top, [i for i in a.ids.split(",") if i], a.device)
    except LessError as e:
        p.exit(2, f"error: {e}\n")
    out = Path(a.out) if a.out else Path(a.run) / "explain"
    out.mkdir(parents=True, exist_ok=True)
    import pandas as pd

    md = ex.render_markdown(exps)
    (out / "explain.md").write_text(md)
    (out / "explain.html").write_text(ex.render_html(exps, f"Why {Path(a.run).name} selected these examples"))
    tokens = pd.DataFrame(ex.token_rows(exps))
    tokens.to_csv(out / "tokens.csv", index=False)
    print(md)
    print(f"{len(exps)} examples -> {out / 'explain.html'}, {out / 'explain.md'}, {out / 'tokens.csv'}")
    if a.wandb_log:
        from analysis import wandb_log

        examples = pd.DataFrame([{"rank": e.rank, "id": e.id, "source": e.source, "score": e.score,
                                  "subtask": e.subtask, "momentum": e.momentum, "recomputed": e.recomputed}
                                 for e in exps])
        df = pd.DataFrame({"path": [str(Path(a.run))]})
        tracker = wandb_log.log(out, df, a.run, {"explain_examples": examples, "explain_tokens": tokens}, [],
                                {"run": str(a.run), "top": a.top, "ids": a.ids}, a.wandb_mode)
        print(f"W&B: analysis run {tracker.id} ({tracker.mode}) in {tracker.url or tracker.dir}")
    return out


def main(argv: list[str] | None = None):
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["inspect"]:
        return inspect(argv[1:])
    if argv[:1] == ["explain"]:
        return explain(argv[1:])
    if argv[:1] == ["wandb-workspace"]:
        from analysis.workspace import main as workspace

        return workspace(argv[1:])
    return report(argv)


if __name__ == "__main__":
    main()

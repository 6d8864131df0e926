"""Turn a sweep directory (or a W&B project) into its table and plots, or show what a run selected.

    python -m analysis multirun/main_table_tiny/<date_time>            # -> <dir>/analysis/
    python -m analysis <sweep> --metric less_synthetic_color.acc_norm --by method,fraction
    python -m analysis --wandb entity/project --group main_table --out report/
    python -m analysis inspect outputs/default/<date_time> --top 5
"""

from __future__ import annotations

import argparse
from pathlib import Path

from analysis.collect import load, load_wandb
from analysis.plots import all_plots
from analysis.tables import latex, markdown, resolve_by, resolve_metrics


def report(argv: list[str] | None) -> Path:
    p = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.split("\n\n")[0],
                                epilog="python -m analysis inspect --help: the top pool examples per target subtask")
    p.add_argument("sweep", nargs="?", help="a sweep or run directory (searched for results.json)")
    p.add_argument("--wandb", help="entity/project to read runs from instead (needs network)")
    p.add_argument("--group", help="with --wandb: only this group (the run name / experiment)")
    p.add_argument("--metric", action="append", help="a results column to show (repeatable or comma list; "
                   "'eval.' may be left out); default: each eval task's headline metric and selection.target_share")
    p.add_argument("--by", action="append", help="group rows by these columns (repeatable or comma list); "
                   "default: the configuration columns that vary across runs, except seed")
    p.add_argument("--out", help="output folder (default: <sweep>/analysis)")
    a = p.parse_args(argv)
    if bool(a.sweep) == bool(a.wandb):
        p.error("give a sweep directory or --wandb entity/project")
    try:
        df = load_wandb(a.wandb, a.group) if a.wandb else load(a.sweep)
        metrics, by = resolve_metrics(df, a.metric), resolve_by(df, a.by)
    except (FileNotFoundError, LookupError) as e:  # no runs; an unknown --metric or --by column
        p.error(e.args[0])
    out = Path(a.out) if a.out else (Path(a.sweep) / "analysis" if a.sweep else Path("analysis_wandb"))
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(df, metrics, by)
    (out / "table.md").write_text(md)
    (out / "table.tex").write_text(latex(df, metrics, by))
    plots = all_plots(df, out, metrics, by)
    print(md)
    print(f"{len(df)} runs -> {out / 'table.md'}, {out / 'table.tex'}, {len(plots)} plots: "
          + ", ".join(p.name for p in plots))
    return out


def inspect(argv: list[str]) -> str:
    from less.errors import LessError
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


def main(argv: list[str] | None = None):
    import sys

    argv = sys.argv[1:] if argv is None else argv
    return inspect(argv[1:]) if argv[:1] == ["inspect"] else report(argv)


if __name__ == "__main__":
    main()

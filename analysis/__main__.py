"""Turn a sweep directory (or a W&B project) into its table and plots.

    python -m analysis multirun/main_table_tiny/<date_time>            # -> <dir>/analysis/
    python -m analysis --wandb entity/project --group main_table --out report/
"""

from __future__ import annotations

import argparse
from pathlib import Path

from analysis.collect import from_dir, from_wandb
from analysis.plots import all_plots
from analysis.tables import latex, markdown


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.split("\n\n")[0])
    p.add_argument("sweep", nargs="?", help="a sweep or run directory (searched for results.json)")
    p.add_argument("--wandb", help="entity/project to read runs from instead (needs network)")
    p.add_argument("--group", help="with --wandb: only this group (the run name / experiment)")
    p.add_argument("--out", help="output folder (default: <sweep>/analysis)")
    a = p.parse_args(argv)
    if bool(a.sweep) == bool(a.wandb):
        p.error("give a sweep directory or --wandb entity/project")
    runs = from_wandb(a.wandb, a.group) if a.wandb else from_dir(a.sweep)
    out = Path(a.out) if a.out else (Path(a.sweep) / "analysis" if a.sweep else Path("analysis_wandb"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(markdown(runs))
    (out / "table.tex").write_text(latex(runs))
    plots = all_plots(runs, out)
    print(markdown(runs))
    print(f"{len(runs)} runs -> {out / 'table.md'}, {out / 'table.tex'}, {len(plots)} plots: "
          + ", ".join(p.name for p in plots))
    return out


if __name__ == "__main__":
    main()

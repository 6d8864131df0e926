"""From finished runs to the paper's tables and plots (no torch imported).

    python -m analysis <sweep dir> [--metric M] [--by COL]   # table.md, table.tex, plots
    python -m analysis inspect <run dir> [--top N]            # top pool examples per target subtask

In a notebook: ``df = analysis.load(sweep_dir)`` (or ``analysis.load_wandb("entity/project")``),
one row per run (columns: ``analysis.collect``), then ``analysis.table(df, metrics, by)`` or plain pandas.
"""

from analysis.collect import config_columns, load, load_wandb
from analysis.tables import aggregate, headline_metrics, markdown, table

__all__ = ["aggregate", "config_columns", "headline_metrics", "load", "load_wandb", "markdown", "table"]

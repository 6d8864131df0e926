"""From finished runs to the paper's tables and plots (no torch imported).

    python -m analysis <sweep dir> [--metric M] [--by COL]   # table.md/.tex (with Δ vs random), CSVs, plots
    python -m analysis inspect <run dir> [--top N]            # top pool examples per target subtask
    python -m analysis wandb-workspace --entity E --project P --group G [--save]   # a W&B workspace

In a notebook: ``df = analysis.load(sweep_dir)`` (or ``analysis.load_wandb("entity/project")``),
one row per run (columns: ``analysis.collect``), then ``analysis.table(df, metrics, by)`` or plain
pandas; ``analysis.compare(df)`` is the paired Δ of every method vs random (``analysis.paired``:
``.csv()`` is paired.csv, ``analysis.table(df, comparison=...)`` adds its columns), and
``analysis.validation`` has ``lds_table(df)`` and ``selection_curve(df, comparison)``.
"""

from analysis.collect import config_columns, load, load_wandb
from analysis.paired import compare
from analysis.tables import aggregate, headline_metrics, markdown, table

__all__ = ["aggregate", "compare", "config_columns", "headline_metrics", "load", "load_wandb", "markdown", "table"]

"""Where the project's own files are: the Hydra config tree (``conf/``)."""

from __future__ import annotations

from pathlib import Path


def conf_dir() -> Path:
    """The Hydra config directory (``conf/``, holding ``config.yaml``)."""
    return Path(__file__).resolve().parents[1] / "conf"

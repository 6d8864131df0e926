"""Where the project's own files are: the Hydra config tree (``conf/``)."""

from __future__ import annotations

from pathlib import Path


def conf_dir() -> Path:
    """The Hydra config directory (holding ``config.yaml``): ``less/conf/`` in a regular install
    (the repository's ``conf/`` ships as the package data of ``less.conf``), else the ``conf/``
    beside the ``less`` package (a source checkout or an editable install)."""
    package = Path(__file__).resolve().parent
    installed = package / "conf"
    if (installed / "config.yaml").is_file():
        return installed
    return package.parent / "conf"

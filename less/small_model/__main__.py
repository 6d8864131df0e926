"""``python -m less.small_model [overrides]``: the small model's command line (an entry point, like
less.cli): build or find ``model=small`` in the cache through the runner and print its report."""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from less.api import compose
from less.errors import LessError
from less.runner import Runner


def main(argv: list[str] | None = None) -> int:
    """``python -m less.small_model [overrides]``: build (or find) ``model=small`` for these overrides
    (``data.root=...``, ``model.small.steps=...``) in the cache and print its ``pretrain.json``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if {"-h", "--help"} & set(args):
        print("usage: python -m less.small_model data.root=<dir> [model.small.<key>=<value> ...] [cache_dir=<dir>]\n"
              "Builds model=small (conf/model/small.yaml) into the cache ($LESS_CACHE_DIR or ./cache), resuming a\n"
              "killed build, and prints its pretrain.json.")
        return 0
    try:
        cfg = compose(["model=small", "logger=none", *args])
        art = Runner(cfg, Path(cfg.cache_dir) / "_builds").get("model")
    except (LessError, HydraException, OmegaConfBaseException) as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    print((art.dir / "pretrain.json").read_text().rstrip())
    print(f"model: {art.dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How the processes of a torchrun job (less.distributed) build a stage the runner walks to.

Every rank walks the same graph; a stage's ``ranks`` says who builds it: ``main`` (rank 0 builds
while the others wait, then every rank returns rank 0's artifact), ``all`` (every rank runs the
stage's ``build`` into the temporary directory rank 0 made under the artifact's lock; rank 0 renames
it once every rank is done) or ``split`` (each rank does its part of the work, rank 0 assembles).
A failure on rank 0 reaches the others as one ``LessError`` line naming the artifact.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from less import distributed
from less.cache import Artifact
from less.errors import ConfigError, LessError

if TYPE_CHECKING:
    from less.runner import Runner

log = logging.getLogger(__name__)


def start(r: Runner) -> None:
    """Under torchrun/accelerate/SLURM tasks: join the job's process group; from here every get of
    ``r`` agrees with rank 0 (``r.together``)."""
    if distributed.world() <= 1:
        return
    distributed.start(float(r.cfg.distributed.timeout_minutes), cuda=r.ctx.device.type == "cuda")
    r.together = True
    if not distributed.is_main():  # rank 0 tells the story; the others say only what goes wrong
        logging.getLogger().setLevel(logging.WARNING)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    else:
        log.info("%d processes: rank 0 prepares, selects, evaluates and reports; every rank trains "
                 "and extracts its part of the pool's gradient features", distributed.world())


def agree(r: Runner, name: str, art: Artifact) -> Artifact:
    """``art`` as rank 0 sees it: every rank follows rank 0's answer to "cached?", so that all
    take the same path."""
    cached = distributed.share(art.cached)
    if cached and not art.cached:
        art = r.lookup(name)
        if not art.cached:
            raise ConfigError(f"rank {distributed.rank()} does not see {art.dir}, which rank 0 does: "
                              "cache_dir must be one directory shared by every rank")
    elif art.cached and not cached:  # another job finished it since rank 0 looked: build with rank 0
        art = Artifact(art.kind, art.key, art.dir, False)
    return art


def make(r: Runner, name: str, inputs: dict[str, Artifact]) -> Artifact | None:
    """``r.make`` on the ranks as the stage says. Every rank returns rank 0's artifact."""
    s = r.graph[name]
    if not r.together:
        return r.make(name, inputs)
    if s.ranks == "all":
        return _together(r, name, inputs)
    work = r.work(name, inputs) if s.ranks == "split" else None
    if distributed.is_main():
        try:
            art = r.make(name, inputs, work)
        except BaseException as e:
            distributed.share(("error", f"{type(e).__name__}: {e}"))
            raise
        distributed.share(("ok", art, r.incomplete.get(name)))
        return art
    status = distributed.share(None)
    if status[0] == "error":
        raise LessError(f"rank 0 failed to build {r.what(name)}: {status[1]}")
    if status[2] is not None:
        r.incomplete[name] = status[2]
    return status[1]


def _together(r: Runner, name: str, inputs: dict[str, Artifact]) -> Artifact:
    """Every rank runs the stage's ``build`` (the Trainer's DDP/FSDP) into rank 0's temporary directory."""
    s, key = r.graph[name], r.key(name)
    tmp, build = r.cache.tmp_path(s.cache_kind, key), r.build_fn(name, inputs)
    with r.writing(tmp, r.what(name)):
        if not distributed.is_main():
            msg = distributed.share(None)
            if msg[0] == "error":
                raise LessError(f"rank 0 failed to start {r.what(name)}: {msg[1]}")
            if msg[0] == "build":
                build(Path(msg[1]))
                distributed.barrier()
            return distributed.share(None)
        started = False

        def together(out: Path) -> None:
            nonlocal started
            started = True
            distributed.share(("build", str(out)))  # the other ranks build here too
            build(out)
            distributed.barrier()  # every rank has written before the rename
        try:
            art = r.cache.get_or_build(s.cache_kind, r.spec(name), together)
        except BaseException as e:
            if not started:
                distributed.share(("error", f"{type(e).__name__}: {e}"))
            raise
        if not started:  # cached meanwhile (another job built it)
            distributed.share(("cached",))
        return distributed.share(art)

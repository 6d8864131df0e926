"""Walks the stage graph (``less.stages.GRAPH``) for a run, or for ``plan=true`` without building.

For each step in ``cfg.stages`` (pipeline order) the runner gets what that step makes: its
applying stages that no other stage of the step takes as input. Getting a stage: its key is
``hash(kind, {"config": stage.config(ctx), "inputs": {role: input key}})``; a cached artifact is
used as it is (its inputs are not needed); otherwise, if its step is to run (or it has no step,
like the tiny model), its inputs are got first and it is built into a temporary directory renamed
into place (less.cache), after seeding python, numpy and torch from its kind and the run seed in
its config (``seed_everything``). A stage whose step is not to run and whose artifact is missing
stops the run with one line naming the step to add. The plan is the same walk asking only
"cached?".

Under torchrun (several processes of one job, less.distributed) every rank walks the same graph:
whether an artifact is cached is rank 0's answer, and each stage's ``ranks`` says who builds it
(rank 0 while the others wait, every rank together, or each rank its part of the work); only
rank 0 reports.

Every run writes ``results.json`` (each stage's report merged, per-step times, accounting) to the
output directory and prints a short summary (less.results).

Faults of the machine rather than of the config end in one line too (``LessError``): a cache_dir
that cannot be written is refused before any work; a full disk (ENOSPC, EDQUOT) or a read-only
path met during the run names the file, or else the artifact being built (whose temporary
directory the cache removes, so nothing half-written looks complete).
"""

from __future__ import annotations

import errno
import gc
import json
import logging
import os
import random
import shutil
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from omegaconf import DictConfig, OmegaConf

from less import distributed
from less.cache import Artifact, Cache, dead_work, to_plain, write_json_atomic
from less.errors import CacheMiss, ConfigError, LessError
from less.graph import STEPS, Context, Stage
from less.results import accounting, estimate, flatten_metrics, merge, summary
from less.tracking import NullTracker, job_type, make_tracker, run_id, uniform_config
from less.tracking import run_name as wandb_name
from less.validate import validate

log = logging.getLogger(__name__)

def run(cfg: DictConfig, out_dir: Path | None = None) -> dict[str, Any]:
    """Entry point called by run.py (``out_dir``: Hydra's output directory unless given). User
    errors become one line on stderr and exit code 2."""
    try:
        return Runner(cfg, out_dir or output_dir()).run()
    except LessError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def run_name(cfg: DictConfig, out_dir: Path) -> str:
    """The job's label in plans: the run name plus its overrides (``default:selection.fraction=0.1``)."""
    from hydra.core.hydra_config import HydraConfig

    overrides = HydraConfig.get().job.override_dirname if HydraConfig.initialized() else ""
    return f"{cfg.name}:{overrides or out_dir.name}"


def job_overrides() -> list[str]:
    """The command-line overrides of this Hydra job (none outside a Hydra run)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def seed_everything(kind: str, seed: int | None) -> int:
    """Seed python, numpy and torch (every device) for a build of ``kind``: from the run seed when
    the stage's config holds it (``seed``), else from the kind alone. Both are part of the key, so
    an artifact's bytes depend only on its key; and an ablation (say ``warmup.epochs``) starts its
    warmup from the same LoRA initialisation as the baseline, as in the reference code."""
    import hashlib

    import torch

    s = int.from_bytes(hashlib.sha256(f"{kind}:{seed}".encode()).digest()[:4], "little")
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)
    return s


def process_tag() -> str:
    """``<host>-<pid>``: names per-process work directories (on a shared filesystem too)."""
    return f"{socket.gethostname().replace('-', '_')}-{os.getpid()}"


def remove_stale_work(root: Path, key: str) -> None:
    """Remove this host's per-process work directories of ``key`` whose process is gone (killed
    jobs); other hosts' are left alone (their processes cannot be checked from here)."""
    for d in dead_work(root, key, process_tag().rsplit("-", 1)[0]):
        log.warning("removing %s, left by a job that is gone", d)
        if d.is_dir():
            shutil.rmtree(d, ignore_errors=True)
        else:
            d.unlink(missing_ok=True)


def _why_not_writable(e: OSError, root: Path) -> str:
    """Why ``root`` cannot be made or written: a component that is a file, or the system's reason."""
    if isinstance(e, (NotADirectoryError, FileExistsError)):
        for p in [root, *root.parents]:
            if p.exists() and not p.is_dir():
                return f"{p} is a file, not a directory"
    return e.strerror or type(e).__name__


def _warnings_in(part: Any) -> list[str]:
    """The strings under every ``warnings`` key of a stage's report."""
    if not isinstance(part, dict):
        return []
    found = [str(w) for w in part.get("warnings") or []]
    return found + [w for k, v in part.items() if k != "warnings" for w in _warnings_in(v)]


def _within(path: Path, roots: list[Path]) -> bool:
    path = Path(os.path.abspath(path))
    return any(path == r or r in path.parents for r in roots)


class Runner:
    def __init__(self, cfg: DictConfig, out_dir: Path, graph: tuple[Stage, ...] | None = None, check: bool = True):
        if check:
            validate(cfg)
        if graph is None:
            from less.stages import GRAPH as graph
        self.cfg, self.out_dir = cfg, Path(out_dir)
        self.cache = Cache(cfg.cache_dir)
        self.graph = {s.name: s for s in graph}
        self.ctx = Context(cfg, self.cache, self.out_dir, self.lookup)
        self._specs: dict[str, dict[str, Any]] = {}
        self.got: dict[str, Artifact | None] = {}
        self.incomplete: dict[str, dict[str, Any]] = {}
        self.rows_computed: dict[str, dict[str, Any]] = {}
        self.results: dict[str, Any] = {"stages": {}, "artifacts": {}}
        self.reports: dict[str, dict[str, Any]] = {}  # each stage's part of results.json
        self.tracker = NullTracker()
        self.together = False  # walking the graph with the other ranks of a torchrun job (every get agrees)
        self._failed_in: tuple[Path, str] | None = None  # (directory, what) of the build an exception left

    # -- keys -------------------------------------------------------------------------------------
    def applies(self, name: str) -> bool:
        return self.graph[name].applies(self.ctx)

    def inputs(self, name: str) -> dict[str, str]:
        """{role: stage} of the inputs that apply."""
        return {role: dep for role, dep in self.graph[name].inputs(self.ctx).items() if self.applies(dep)}

    def spec(self, name: str) -> dict[str, Any]:
        if name not in self._specs:
            self._specs[name] = {"config": to_plain(self.graph[name].config(self.ctx)),
                                 "inputs": {role: self.key(dep) for role, dep in self.inputs(name).items()}}
        return self._specs[name]

    def lookup(self, name: str) -> Artifact:
        """Where stage ``name``'s artifact is for this config (built or not)."""
        return self.cache.lookup(self.graph[name].cache_kind, self.spec(name))

    def key(self, name: str) -> str:
        return self.lookup(name).key

    def wanted(self, name: str) -> bool:
        """Whether this run may build stage ``name``."""
        step = self.graph[name].step
        return step is None or step in self.cfg.stages

    def stages_of(self, step: str) -> list[str]:
        """What a step makes: its applying stages that no other stage of the step takes as input
        (the rest are got as inputs, only when these are not cached)."""
        mine = [n for n, s in self.graph.items() if s.step == step and self.applies(n)]
        used = {d for n in mine for d in self.inputs(n).values()}
        return [n for n in mine if n not in used]

    # -- the walk -----------------------------------------------------------------------------------
    def get(self, name: str) -> Artifact | None:
        """The artifact of stage ``name``: cached, or built (inputs first) if this run may build it.
        None when it is incomplete: a shard job that left pieces to others."""
        if name in self.got:
            return self.got[name]
        s, art = self.graph[name], self.lookup(name)
        seconds = 0.0
        if self.together:  # every rank follows rank 0's answer, so that they take the same path
            cached = distributed.share(art.cached)
            if cached and not art.cached:
                art = self.lookup(name)
                if not art.cached:
                    raise ConfigError(f"rank {distributed.rank()} does not see {art.dir}, which rank 0 does: "
                                      "cache_dir must be one directory shared by every rank")
            elif art.cached and not cached:  # another job finished it since rank 0 looked: build with rank 0
                art = Artifact(art.kind, art.key, art.dir, False)
        if not art.cached:
            if not self.wanted(name):
                raise CacheMiss(f"{s.cache_kind} artifact {art.key} is not in the cache ({art.dir}); "
                                f"add '{s.step}' to stages to compute it")
            inputs = self._inputs(name)
            t0 = time.time()  # this stage's own time; its inputs recorded theirs
            art = None if inputs is None else self._make_on_ranks(name, inputs)
            seconds = time.time() - t0
        self.got[name] = art
        self._record(name, art, seconds)
        return art

    def _inputs(self, name: str) -> dict[str, Artifact] | None:
        """{role: artifact} of stage ``name``'s inputs, got first; None if one of the same step is
        incomplete (the datastore of a shard job), an error if one of an earlier step is."""
        s = self.graph[name]
        deps = self.inputs(name)
        inputs = {role: self.get(dep) for role, dep in deps.items()}  # every input, even after an incomplete one
        for role, a in inputs.items():
            if a is None:
                info = self.incomplete[deps[role]]
                if self.graph[deps[role]].step == s.step:
                    self.incomplete[name] = info
                    return None
                raise CacheMiss(f"{info['stage']} is incomplete ({info['reason']}); "
                                f"run the other shards, then stages=[{s.step}]")
        return inputs

    @contextmanager
    def _writing(self, path: Path, what: str) -> Iterator[None]:
        """The block builds ``what`` in ``path``: an exception out of it records both, so that a
        fault of the file system (a full disk) names them when the error names no file."""
        try:
            yield
        except BaseException:
            self._failed_in = self._failed_in or (path, what)
            raise

    def _what(self, name: str) -> str:
        return f"the {name} artifact {self.graph[name].cache_kind}/{self.key(name)}"

    def _build_fn(self, name: str, inputs: dict[str, Artifact]):
        s, seed = self.graph[name], self.spec(name)["config"].get("seed")

        def build(out: Path) -> None:
            seed_everything(s.cache_kind, seed)
            s.build(self.ctx, inputs, out)
        return build

    def _make_on_ranks(self, name: str, inputs: dict[str, Artifact]) -> Artifact | None:
        """``_make`` on the ranks of a torchrun job as the stage says (``Stage.ranks``): every rank
        (``all``: together; ``split``: each its part of the work, then rank 0 assembles) or rank 0
        alone while the others wait (``main``). Every rank returns rank 0's artifact."""
        s = self.graph[name]
        if not self.together:
            return self._make(name, inputs)
        if s.ranks == "all":
            return self._build_together(name, inputs)
        work = self._work(name, inputs) if s.ranks == "split" else None
        if distributed.is_main():
            try:
                art = self._make(name, inputs, work)
            except BaseException as e:
                distributed.share(("error", f"{type(e).__name__}: {e}"))
                raise
            distributed.share(("ok", art, self.incomplete.get(name)))
            return art
        status = distributed.share(None)
        if status[0] == "error":
            raise LessError(f"rank 0 failed to build {self._what(name)}: {status[1]}")
        if status[2] is not None:
            self.incomplete[name] = status[2]
        return status[1]

    def _build_together(self, name: str, inputs: dict[str, Artifact]) -> Artifact:
        """Every rank runs the stage's ``build`` (the Trainer's DDP/FSDP) into the temporary directory
        rank 0 made under the artifact's lock; rank 0 renames it once every rank is done."""
        s, key = self.graph[name], self.key(name)
        tmp, build = self.cache.tmp_path(s.cache_kind, key), self._build_fn(name, inputs)
        with self._writing(tmp, self._what(name)):
            if not distributed.is_main():
                msg = distributed.share(None)
                if msg[0] == "error":
                    raise LessError(f"rank 0 failed to start {self._what(name)}: {msg[1]}")
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
                art = self.cache.get_or_build(s.cache_kind, self.spec(name), together)
            except BaseException as e:
                if not started:
                    distributed.share(("error", f"{type(e).__name__}: {e}"))
                raise
            if not started:  # cached meanwhile (another job built it)
                distributed.share(("cached",))
            return distributed.share(art)

    def _work(self, name: str, inputs: dict[str, Artifact]):
        """This process's part of a work stage (resumable, outside any lock)."""
        s, key = self.graph[name], self.key(name)
        root = self.cache.root / s.cache_kind
        work_dir = root / (f".work-{key}" if s.shared_work else f".work-{key}-{process_tag()}")
        if not s.shared_work:
            remove_stale_work(root, key)
        seed_everything(s.cache_kind, self.spec(name)["config"].get("seed"))
        with self._writing(work_dir, self._what(name)):
            return s.work(self.ctx, inputs, work_dir)

    def _make(self, name: str, inputs: dict[str, Artifact], work=None) -> Artifact | None:
        """Build stage ``name`` in this process (a work stage: from ``work``, this process's part,
        when done already)."""
        s, key = self.graph[name], self.key(name)
        seed = self.spec(name)["config"].get("seed")
        what = self._what(name)
        if s.build is not None:
            with self._writing(self.cache.tmp_path(s.cache_kind, key), what):
                return self.cache.get_or_build(s.cache_kind, self.spec(name), self._build_fn(name, inputs))
        # resumable work outside any lock, then assembly under the artifact's lock
        if work is None:
            work = self._work(name, inputs)
        if "rows_computed" in work.info:  # this job's share of shared work (its ranks': rows_by_rank)
            self.rows_computed[name] = {k: work.info[k] for k in ("rows_computed", "rows_by_rank") if k in work.info}
        if not work.complete and not self.lookup(name).cached:
            self.incomplete[name] = {"stage": name, **work.info}
            log.info("%s: %s", name, work.info.get("reason", "incomplete"))
            return None

        def assemble(out: Path) -> None:
            seed_everything(s.cache_kind, seed)
            work.assemble(out)
        with self._writing(self.cache.tmp_path(s.cache_kind, key), what):
            art = self.cache.get_or_build(s.cache_kind, self.spec(name), assemble)
        work.discard()
        return art

    def _record(self, name: str, art: Artifact | None, seconds: float) -> None:
        s = self.graph[name]
        ref = self.lookup(name)
        self.results["artifacts"][name] = {
            "kind": ref.kind, "key": ref.key, "dir": str(ref.dir), "cached": bool(art and art.cached),
            "seconds": round(seconds, 3), **({"complete": False} if art is None else {}),
            **self.rows_computed.get(name, {})}
        if s.step is None:  # a step-less input: a tiny model gets its own line when this run built it
            if art is not None and not art.cached and s.cache_kind == "model":
                kind = (self.ctx.selector if name == "selector" else self.cfg.model).kind
                self.results["stages"][name] = {"seconds": round(seconds, 3), "cached": False, "built": kind}
            return
        if s.step not in self.cfg.stages:  # an input taken from the cache: listed under artifacts only
            return
        rec = self.results["stages"].setdefault(s.step, {"seconds": 0.0, "cached": True})
        rec["seconds"] = round(rec["seconds"] + seconds, 3)
        rec["cached"] = rec["cached"] and art is not None and art.cached
        if art is None:  # nothing to point at until the other shards are done
            rec.pop("dir", None), rec.pop("key", None)
            rec.update(complete=False, **{k: v for k, v in self.incomplete[name].items() if k not in ("reason", "stage")})
        elif rec.get("complete") is not False:
            rec.update(dir=str(art.dir), key=art.key)  # the step's last stage (graph order) names it

    def run(self) -> dict[str, Any]:
        """Run the configured steps. A fault of the file system (full disk, read-only path) ends
        as one ``LessError`` line naming the path (see ``storage_error``)."""
        try:
            return self._run()
        except LessError:
            raise
        except Exception as e:
            err = self.storage_error(e)
            if err is None:
                raise
            raise err from e

    def open_cache(self) -> None:
        """Before any work: the cache root must be writable (created if missing); temporary build
        directories left by killed builds (their lock free) are removed."""
        try:
            self.cache.ensure_writable()
        except OSError as e:
            raise ConfigError(f"cache_dir={self.cache.root} is not writable ({_why_not_writable(e, self.cache.root)}); "
                              "set cache_dir (or $LESS_CACHE_DIR) to a writable directory") from None
        if not distributed.is_main():  # rank 0 tidies; a build of this job holds its lock anyway
            return
        n, freed = self.cache.remove_stale_tmp()
        if n:
            log.warning("cache: removed %d stale temporary %s (%.1f MB) left by killed builds",
                        n, "directory" if n == 1 else "directories", freed / 1e6)

    def storage_error(self, e: BaseException) -> LessError | None:
        """One line for a full disk (ENOSPC, EDQUOT) or a path that cannot be written (EROFS;
        EACCES/EPERM in the cache, the output directory or a build) found in ``e`` or its causes:
        it names the file the error names, else the directory of the build it came out of, else
        the output directory. None for anything else."""
        seen: list[BaseException] = []
        x: BaseException | None = e
        while x is not None and not any(x is y for y in seen):
            seen.append(x)
            x = x.__cause__ or x.__context__
        built, what = self._failed_in or (None, "")
        during = f" while building {what}" if what else ""
        mine = [self.cache.root, self.out_dir.resolve(), *([built] if built else [])]
        for x in seen:
            code = getattr(x, "errno", None) if isinstance(x, OSError) else None
            text = str(x)
            full = code in (errno.ENOSPC, errno.EDQUOT) or any(
                os.strerror(c) in text for c in (errno.ENOSPC, errno.EDQUOT))
            path = Path(os.fsdecode(x.filename)) if isinstance(x, OSError) and x.filename else built or self.out_dir
            if full:
                quota = " (Disk quota exceeded)" if code == errno.EDQUOT or os.strerror(errno.EDQUOT) in text else ""
                return LessError(f"{path}: no space left on device{quota}{during}; free some space and run the "
                                 "same command again (finished artifacts are reused)")
            if code == errno.EROFS or (code in (errno.EACCES, errno.EPERM) and _within(path, mine)):
                return LessError(f"{path}: not writable ({x.strerror}){during}")
            if code in (errno.EACCES, errno.EPERM) and isinstance(x, OSError) and x.filename:
                return LessError(f"{path}: permission denied{during}")
        return None

    def _run(self) -> dict[str, Any]:
        distributed.from_slurm()  # a task of a multi-task SLURM job learns its rank first
        main = distributed.is_main()
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.cfg.plan:
            return self.plan() if main else {}
        self.start_ranks()
        self.open_cache()
        if main:
            self.tracker = self.make_tracker()
        self.ctx.tracker = self.tracker
        ok = False
        try:
            for step in STEPS:
                if step not in self.cfg.stages:
                    continue
                names = self.stages_of(step)
                if not names and main:
                    log.info("skipping %s: not needed with selection.method=%s and these datastore settings",
                             step, self.cfg.selection.method)
                for name in names:
                    self.get(name)
            self.together = False  # from here on rank 0 alone
            if main:  # one results.json, one W&B run: rank 0's
                self._report()
                self._accounting()
                self._log_artifacts()
                self._link_outputs()
                self._finish()
            distributed.barrier()
            ok = True
        finally:
            self.tracker.finish(ok=ok)
            distributed.close()
            gc.collect()
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        return self.results

    def start_ranks(self) -> None:
        """Under torchrun/accelerate/SLURM tasks: join the job's process group (less.distributed)."""
        if distributed.world() <= 1:
            return
        distributed.start(float(self.cfg.distributed.timeout_minutes), cuda=self.ctx.device.type == "cuda")
        self.together = True
        if not distributed.is_main():  # rank 0 tells the story; the others say only what goes wrong
            logging.getLogger().setLevel(logging.WARNING)
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        else:
            log.info("%d processes: rank 0 prepares, selects, evaluates and reports; every rank trains "
                     "and extracts its part of the pool's gradient features", distributed.world())

    # -- W&B ----------------------------------------------------------------------------------------
    def job_keys(self) -> dict[str, str]:
        """{stage: key} of what this job's steps make: the job's identity."""
        return {n: self.key(n) for step in STEPS if step in self.cfg.stages for n in self.stages_of(step)}

    def make_tracker(self):
        c = self.cfg
        if c.logger.name == "none":
            return make_tracker(c.logger, {}, self.out_dir, name="")
        from less.paths import conf_dir

        extra = {"shard": [c.datastore.shard, c.datastore.num_shards]} if "datastore" in c.stages else {}
        rid = run_id(c.logger, list(c.stages), self.job_keys(), extra)
        config = uniform_config(OmegaConf.to_container(c, resolve=True), conf_dir())
        return make_tracker(c.logger, config, self.out_dir, name=wandb_name(job_overrides(), c.name), rid=rid,
                            job_type=job_type(c), cache_root=self.cache.root)

    def lineage_inputs(self, name: str) -> dict[str, str]:
        """{role: W&B artifact name} of the nearest logged artifacts ``name`` is made from (through
        stages that are not logged as artifacts, such as the feature stages)."""
        out: dict[str, str] = {}
        for role, dep in self.inputs(name).items():
            if self.graph[dep].wandb_type is not None:
                out[role] = f"{dep}-{self.key(dep)}"
            else:
                out.update({f"{role}.{r}": v for r, v in self.lineage_inputs(dep).items()})
        return out

    def _log_artifacts(self) -> None:
        """Every artifact the run got of a stage with a ``wandb_type``: an output of this W&B run
        when this run built it, else (taken from the cache: an earlier job made it) an input; with
        metadata (key, config, inputs, its part of results.json) and its small files."""
        if self.tracker.mode is None:  # no W&B run (logger=none, or a rerun that is not logged)
            return
        names = {}
        for name, s in self.graph.items():
            art = self.got.get(name)
            if s.wandb_type is None or art is None:
                continue
            meta = {"stage": name, "kind": art.kind, "key": art.key, "dir": str(art.dir),
                    "config": to_plain(self.spec(name)["config"]), "inputs": self.lineage_inputs(name),
                    "report": self.reports.get(name, {}), "built_seconds": self.results["artifacts"][name]["seconds"]}
            parts = s.wandb_files + (s.wandb_model if self.cfg.logger.get("log_model") else ())
            paths = [art.dir / p for p in parts if (art.dir / p).exists()]
            self.tracker.artifact(f"{name}-{art.key}", s.wandb_type, meta, [art.dir / "key.json"] + [p for p in paths if p.is_file()],
                                  [p for p in paths if p.is_dir()], use=art.cached)
            names[f"artifacts/{name}"] = f"{name}-{art.key}"
        self.tracker.summary(names)

    def _link_outputs(self) -> None:
        """The run directory links to the selection it trained on: ``selected.jsonl``, ``ranking.csv``."""
        art = self.got.get("select")
        if art is None:
            return
        for f in ("selected.jsonl", "ranking.csv"):
            if not (art.dir / f).is_file():
                continue
            link = self.out_dir / f
            tmp = link.with_name(f".{f}.link")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(art.dir / f)
            os.replace(tmp, link)

    # -- what a run reports -------------------------------------------------------------------------
    def _report(self) -> None:
        warnings: list[str] = []  # every stage's report's "warnings", wherever they sit in it
        for name, s in self.graph.items():
            art = self.got.get(name)
            if art is None or s.report is None:
                continue
            part = self.reports[name] = s.report(self.ctx, art)
            warnings += _warnings_in(part)
            merge(self.results, part)
            if s.track is not None:
                s.track(self.ctx, art, part, self.tracker)
        self.results["warnings"] = warnings
        for w in warnings:
            log.warning(w)
        if warnings:
            self.tracker.summary({"warnings": warnings})

    def _params(self) -> dict[str, int | None]:
        from less.models import BUILT_KINDS, model_source, param_count

        out = {}
        for role, m in (("selector", self.ctx.selector), ("model", self.cfg.model)):
            built = self.lookup(role) if m.kind in BUILT_KINDS else None
            out[role] = None if built is not None and not built.cached else param_count(
                model_source(m, built.dir if built else None), bool(m.trust_remote_code))
        return out

    def _accounting(self) -> None:
        """Tokens, epochs, repeated tokens, estimated FLOPs and wall time of this run."""
        read = lambda p: json.loads(p.read_text()) if p.is_file() else {}  # noqa: E731
        got = {n: a for n, a in self.got.items() if a is not None}
        counts = selected = None
        if "pool" in got:
            counts = read(self.get("token_counts").dir / "tokens.json")["by_id"]
            if "select" in got:
                selected = [json.loads(x)["id"] for x in open(got["select"].dir / "selected.jsonl")]
        features = []
        if "datastore" in got:
            from less.stages.datastore import features_meta

            features = list(features_meta(got["datastore"].dir).values())
        acc = accounting({n: s["seconds"] for n, s in self.results["stages"].items()}, counts, selected,
                         read(got["warmup"].dir / "warmup.json") if "warmup" in got else {}, features,
                         read(got["train"].dir / "train.json") if "train" in got else {}, self._params())
        self.results["accounting"] = acc
        self.tracker.summary({k: v for k, v in flatten_metrics(acc, "accounting").items() if v is not None})

    def _finish(self) -> None:
        r, c = self.results, self.cfg
        r["config"] = {"name": c.name, "model": c.model.name, "selector": self.ctx.selector.name,
                       "pool": c.pool.name, "target": c.target.name, "stages": list(c.stages)}
        r["wandb"] = {"mode": self.tracker.mode, "dir": self.tracker.dir}
        if self.tracker.id is not None:
            r["wandb"]["id"] = self.tracker.id
        if self.tracker.skipped is not None:  # this configuration's run finished earlier: not logged again
            r["wandb"]["skipped"] = {k: self.tracker.skipped.get(k) for k in ("dir", "url") if self.tracker.skipped.get(k)}
        if self.tracker.fallback is not None:  # asked for online, logged offline: why
            r["wandb"].update(requested_mode=self.tracker.requested_mode, fallback=self.tracker.fallback)
        write_json_atomic(self.out_dir / "results.json", r)
        print(summary(r, self.out_dir / "results.json"))

    # -- the dry run --------------------------------------------------------------------------------
    def status(self, name: str, seen: dict[str, str]) -> str:
        """"cached", "to run", or "missing": not cached and its step is not in ``stages``, or an
        input it needs is missing (the run would stop there). Every stage visited lands in ``seen``."""
        if name not in seen:
            if self.lookup(name).cached:
                seen[name] = "cached"
            elif not self.wanted(name):
                seen[name] = "missing"
            else:
                inputs = [self.status(d, seen) for d in self.inputs(name).values()]
                seen[name] = "missing" if "missing" in inputs else "to run"
        return seen[name]

    def plan(self) -> dict[str, Any]:
        """Which stages of this job are cached, which would run, and their estimated cost."""
        c = self.cfg
        steps: dict[str, str] = {}
        artifacts: dict[str, str] = {}
        for step in STEPS:
            names = self.stages_of(step) if step in c.stages else []
            if names:
                st = {self.status(n, artifacts) for n in names}
                steps[step] = "missing" if "missing" in st else ("to run" if "to run" in st else "cached")
        pool = self.lookup("pool")
        pool_tokens = None
        if pool.cached:  # ~4 characters per token until the token counts are known
            pool_tokens = sum(len(line) for line in open(pool.dir / "pool.jsonl", encoding="utf-8")) // 4
        frac = 1.0 if c.selection.method == "full" else (c.selection.get("fraction") or 0.05)
        params = self._params()
        ds = c.datastore
        n_ckpt = len(ds.checkpoints) if ds.checkpoints else (1 if not ds.use_warmup else c.warmup.epochs)
        todo = lambda step, v: v if steps.get(step) == "to run" else None  # noqa: E731
        est = estimate(params["selector"], params["model"],
                       todo("warmup", pool_tokens and int(pool_tokens * c.warmup.fraction)), c.warmup.epochs,
                       todo("datastore", pool_tokens), n_ckpt,
                       todo("train", pool_tokens and int(pool_tokens * frac)), c.train.epochs)
        plan = {"job": run_name(c, self.out_dir), "stages": steps, "artifacts": artifacts,
                "pool_tokens_estimate": pool_tokens, **est}
        write_json_atomic(self.out_dir / "plan.json", plan)
        cost = ", ".join(f"{k} {v:.2g}" for k, v in est["flops"].items() if v)
        print(f"plan {plan['job']}: " + ", ".join(f"{k} {v}" for k, v in steps.items())
              + (f" | remaining FLOPs: {cost}" if cost else "") + (
                  f" (~{est['gpu_hours_h100_at_40pct_mfu']:.2g} H100-hours)" if est["gpu_hours_h100_at_40pct_mfu"] else ""))
        return plan

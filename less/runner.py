"""Walks the stage graph (``less.stages.GRAPH``) for a run: keys, get, build, the main loop.

For each step in ``cfg.stages`` (pipeline order) the runner gets what that step makes: its
applying stages that no other stage of the step takes as input. A stage's key is
``hash(kind, {"config": stage.config(ctx), "inputs": {role: input key}})``; what happens to it is
one decision (``fate``), which the dry run (less.plan) asks too: a cached artifact is used as it is
(its inputs are not needed); if its step is to run (or it has no step, like the tiny model) its
inputs are got first and it is built into a temporary directory renamed into place (less.cache),
after seeding python, numpy and torch from its kind and the run seed in its config; else the run
stops with one line naming the step to add.

Under torchrun every rank walks the same graph, following rank 0's "cached?", and less.ranks builds
each stage on the ranks it names. The outcome is read by less.report (results.json, accounting,
summary, links) and less.lineage (W&B); faults of the machine end in one line (less.faults).
"""

from __future__ import annotations

import gc
import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from omegaconf import DictConfig

from less import distributed, faults, lineage, plan, ranks, report
from less.cache import Artifact, Cache, process_tag, remove_stale_work, to_plain
from less.errors import CacheMiss, LessError
from less.graph import STEPS, Context, Stage, Work
from less.seeding import seed_everything
from less.tracking import NullTracker
from less.validate import validate

log = logging.getLogger(__name__)


class Runner:
    def __init__(self, cfg: DictConfig, out_dir: Path, graph: tuple[Stage, ...] | None = None, check: bool = True):
        if graph is None:
            from less.stages import GRAPH as graph
        if check:
            validate(cfg, graph)
        self.cfg, self.out_dir = cfg, Path(out_dir)
        self.cache = Cache(cfg.cache_dir, cfg.get("cache_readonly"))
        self.graph = {s.name: s for s in graph}
        self._specs: dict[str, dict[str, Any]] = {}
        self.got: dict[str, Artifact | None] = {}
        self.ctx = Context(cfg, self.cache, self.out_dir, self.lookup, self.lookup_for, self.got.get, self.get,
                           self.get_for)
        self.incomplete: dict[str, dict[str, Any]] = {}
        self.rows_computed: dict[str, dict[str, Any]] = {}
        self.results: dict[str, Any] = {"stages": {}, "artifacts": {}}
        self.reports: dict[str, dict[str, Any]] = {}  # each stage's part of results.json
        self.tracker = NullTracker()
        self.together = False  # walking the graph with the other ranks of a torchrun job (every get agrees)
        self.failed_in: tuple[Path, str] | None = None  # (directory, what) of the build an exception left

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

    def lookup_for(self, cfg: DictConfig, name: str) -> Artifact:
        """Where stage ``name``'s artifact is under another config (nothing built)."""
        return Runner(cfg, self.out_dir, tuple(self.graph.values()), check=False).lookup(name)

    def get_for(self, cfg: DictConfig, name: str) -> Artifact | None:
        """Stage ``name``'s artifact under another config, cached or built (inputs first) as this
        run would build it; in this process, outside this run's results."""
        return Runner(cfg, self.out_dir, tuple(self.graph.values()), check=False).get(name)

    def wanted(self, name: str) -> bool:
        """Whether this run may build stage ``name``."""
        step = self.graph[name].step
        return step is None or step in self.cfg.stages

    def stages_of(self, step: str) -> list[str]:
        """What a step makes: its own stage (named as the step: always, so ``select`` reports even where
        ``correlates`` after it is cached) and its applying stages no stage of the step takes as input."""
        mine = [n for n, s in self.graph.items() if s.step == step and self.applies(n)]
        used = {d for n in mine for d in self.inputs(n).values()}
        return [n for n in mine if n not in used or n == step]

    def fate(self, name: str, art: Artifact) -> str:
        """What the walk does with stage ``name`` whose artifact is ``art``: "cached" (used as it is),
        "to run" (its inputs got, then built) or "missing" (its step is not in ``stages``)."""
        return "cached" if art.cached else ("to run" if self.wanted(name) else "missing")

    def get(self, name: str) -> Artifact | None:
        """The artifact of stage ``name``: cached, or built (inputs first) if this run may build it.
        None when it is incomplete: a shard job that left pieces to others."""
        if name in self.got:
            return self.got[name]
        s, art = self.graph[name], self.lookup(name)
        seconds = 0.0
        if self.together:
            art = ranks.agree(self, name, art)
        fate = self.fate(name, art)
        if fate == "missing":
            raise CacheMiss(f"{s.cache_kind} artifact {art.key} is not in the cache ({art.dir}); "
                            f"add '{s.step}' to stages to compute it")
        if fate == "to run":
            inputs = self._inputs(name)
            t0 = time.time()  # this stage's own time; its inputs recorded theirs
            art = None if inputs is None else ranks.make(self, name, inputs)
            seconds = time.time() - t0
        self.got[name] = art
        report.record(self, name, art, seconds)
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
    def writing(self, path: Path, what: str) -> Iterator[None]:
        """The block builds ``what`` in ``path``: an exception out of it records both, so that a
        fault of the file system (a full disk) names them when the error names no file."""
        try:
            yield
        except BaseException:
            self.failed_in = self.failed_in or (path, what)
            raise

    def what(self, name: str) -> str:
        return f"the {name} artifact {self.graph[name].cache_kind}/{self.key(name)}"

    def seeded(self, name: str, fn: Callable[[Path], Any]) -> Callable[[Path], Any]:
        """``fn`` after seeding python, numpy and torch from stage ``name``'s kind and its config's seed."""
        kind, seed = self.graph[name].cache_kind, self.spec(name)["config"].get("seed")

        def seeded(path: Path) -> Any:
            seed_everything(kind, seed)
            return fn(path)
        return seeded

    def build_fn(self, name: str, inputs: dict[str, Artifact]) -> Callable[[Path], Any]:
        return self.seeded(name, lambda out: self.graph[name].build(self.ctx, inputs, out))

    def work(self, name: str, inputs: dict[str, Artifact]) -> Work:
        """This process's part of a work stage (resumable, outside any lock)."""
        s, key = self.graph[name], self.key(name)
        root = self.cache.root / s.cache_kind
        work_dir = root / (f".work-{key}" if s.shared_work else f".work-{key}-{process_tag()}")
        if not s.shared_work:
            remove_stale_work(root, key)
        with self.writing(work_dir, self.what(name)):
            return self.seeded(name, lambda d: s.work(self.ctx, inputs, d))(work_dir)

    def make(self, name: str, inputs: dict[str, Artifact], work: Work | None = None) -> Artifact | None:
        """Build stage ``name`` in this process (a work stage: from ``work``, this process's part,
        when done already; resumable work outside any lock, then assembly under the artifact's lock)."""
        s, key = self.graph[name], self.key(name)
        tmp = self.cache.tmp_path(s.cache_kind, key)
        if s.build is not None:
            with self.writing(tmp, self.what(name)):
                return self.cache.get_or_build(s.cache_kind, self.spec(name), self.build_fn(name, inputs))
        if work is None:
            work = self.work(name, inputs)
        if "rows_computed" in work.info:  # this job's share of shared work (its ranks': rows_by_rank)
            self.rows_computed[name] = {k: work.info[k] for k in ("rows_computed", "rows_by_rank") if k in work.info}
        if not work.complete and not self.lookup(name).cached:
            self.incomplete[name] = {"stage": name, **work.info}
            log.info("%s: %s", name, work.info.get("reason", "incomplete"))
            return None
        with self.writing(tmp, self.what(name)):
            art = self.cache.get_or_build(s.cache_kind, self.spec(name), self.seeded(name, work.assemble))
        work.discard()
        return art

    def run(self) -> dict[str, Any]:
        """Run the configured steps. A fault of the file system (full disk, read-only path) ends
        as one ``LessError`` line naming the path (less.faults)."""
        try:
            return self._run()
        except LessError:
            raise
        except Exception as e:
            err = faults.storage_error(e, self.cache.root, self.out_dir, self.failed_in)
            if err is None:
                raise
            raise err from e

    def _run(self) -> dict[str, Any]:
        distributed.from_slurm()  # a task of a multi-task SLURM job learns its rank first
        main = distributed.is_main()
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.cfg.plan:
            return plan.plan(self) if main else {}
        ranks.start(self)
        faults.open_cache(self.cache, tidy=main)
        if main:
            self.tracker = lineage.make_tracker(self)
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
                report.report(self)
                report.account(self)
                lineage.log_artifacts(self)
                report.link_outputs(self)
                report.finish(self)
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

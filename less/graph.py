"""What a pipeline stage declares. The runner (``less.runner``) walks the declarations.

A :class:`Stage` is one cached artifact: its cache kind, the step of ``cfg.stages`` that builds it
(``None``: built whenever a stage that runs needs it, e.g. the tiny model), its inputs (other
stages, by role), the slice of config its key depends on, when it applies, how it is built and
what it contributes to the run's outcome (its report, summary lines, accounting, cost, the files
it links into the run directory). A stage never computes keys, checks the cache or seeds random
generators: the runner folds the inputs' keys into the key, builds the inputs first, and seeds
python, numpy and torch before every build from the artifact kind and the run seed (when the
stage's config holds it as ``seed``: a stage whose build draws random numbers must), so an
artifact's bytes depend only on its key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

from omegaconf import DictConfig

from less.cache import Artifact, Cache
from less.results import Cost

if TYPE_CHECKING:
    import torch

    from less.selection.registry import Method

# The steps a user names in ``cfg.stages``, in pipeline order.
STEPS = ("prepare", "warmup", "datastore", "select", "train", "eval", "validate")
# The steps that use a selection: W&B names a job running one of them by its selection method.
SELECTION_STEPS = STEPS[STEPS.index("select"):]

Inputs = dict[str, Artifact]  # role -> the input's artifact


class Work(Protocol):
    """Resumable work of a stage that is built in pieces (e.g. feature chunks), possibly by several
    jobs: ``complete`` says whether every piece exists, ``assemble(out)`` writes the artifact,
    ``discard()`` removes the pieces once it exists; ``info`` goes to results.json (``reason`` when
    incomplete, ``rows_computed``: this job's share)."""

    complete: bool
    info: dict[str, Any]

    def assemble(self, out: Path) -> None: ...

    def discard(self) -> None: ...


class Context:
    """What a stage's functions see: the config, the cache, the device and the output directory;
    from the runner, ``artifact(name)``: where another stage's artifact is (built or not),
    ``artifact_for(cfg, name)``: where it is under another config (keys only), ``got(name)``: what
    this run got of it (None: nothing, or incomplete), ``get(name)``: get it (built if needed) and
    ``get_for(cfg, name)``: get it under another config (built if needed, e.g. the trainings of
    the validation subsets)."""

    def __init__(self, cfg: DictConfig, cache: Cache, out_dir: Path, artifact: Callable[[str], Artifact],
                 artifact_for: Callable[[DictConfig, str], Artifact] | None = None,
                 got: Callable[[str], Artifact | None] | None = None,
                 get: Callable[[str], Artifact | None] | None = None,
                 get_for: Callable[[DictConfig, str], Artifact | None] | None = None):
        self.cfg, self.cache, self.out_dir = cfg, cache, out_dir
        self.artifact, self.artifact_for, self.got, self.get = artifact, artifact_for, got, get
        self.get_for = get_for
        self._device = None
        from less.tracking import NullTracker

        self.tracker = NullTracker()  # the run's tracker (the runner sets it); builds send curves to it

    def curve(self, prefix: str) -> Callable[[int, dict[str, float]], None]:
        """A sink for a training curve: points go to the tracker as ``<prefix>/<metric>`` against
        ``<prefix>/step``."""
        return lambda step, metrics: self.tracker.curve(prefix, step, metrics)

    @property
    def selector(self) -> DictConfig:
        """M_S, the model whose gradients select: ``selector`` if set, else ``model``."""
        return self.cfg.selector if self.cfg.get("selector") else self.cfg.model

    @property
    def method(self) -> "Method":
        from less.selection.registry import get

        return get(self.cfg.selection.method)

    @property
    def device(self) -> "torch.device":
        if self._device is None:
            from less.models import resolve_device

            self._device = resolve_device(self.cfg.device)
        return self._device


def always(ctx: Context) -> bool:
    return True


def no_inputs(ctx: Context) -> dict[str, str]:
    return {}


def no_fields(ctx: Context) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Stage:
    """One node of the pipeline graph.

    - ``config(ctx)``: the plain config its artifact depends on (the runner adds its inputs' keys).
    - ``inputs(ctx)``: {role: stage name}; an input that does not apply is dropped.
    - ``build(ctx, inputs, out)``: writes the artifact into the empty directory ``out``.
    - ``work(ctx, inputs, work_dir)``: instead of ``build`` for resumable, shardable stages: does this
      job's part outside any lock (finished pieces on disk are skipped) and returns a :class:`Work`;
      the runner assembles it once complete.
    - ``report(ctx, art)``: its part of results.json (a nested dict, merged); ``track(ctx, art,
      reported, tracker)``: extra W&B records (tables, histograms, curves).
    - ``ranks``: what the processes of a torchrun job do (less.distributed): ``main`` (rank 0 builds,
      the others wait and read it), ``all`` (every rank runs ``build`` into the same directory: the
      Trainer's DDP/FSDP; ranks other than 0 write nothing of their own) or ``split`` (every rank
      runs ``work`` on its part, e.g. ``distributed.subshard``; rank 0 assembles).
    - ``wandb_type``: the W&B artifact type it is logged as (None: not logged), carrying its
      ``key.json``, the ``wandb_files`` (files or directories of the artifact, those present) and,
      with ``logger.log_model=true``, the ``wandb_model`` ones; ``wandb_id(ctx)``: what else tells
      apart the W&B runs of jobs that run its step (merged into the run id's hash).
    - ``summary(results)``: its lines of the printed run summary, read from results.json.
    - ``links``: files of its artifact the run directory links to (those present).
    - ``own_line(ctx)``: a stage without a step that this run built gets a line of its own under
      results.json ``stages``, with these fields added (None: no line).
    - ``accounting(ctx, art)``: its part of results.json ``accounting`` (tokens, epochs), from the
      artifact this run got (None: none); called for every stage that declares it.
    - ``params(ctx)``: the parameter count of the model it stands for (``accounting.params``), the N
      of the costs that name it.
    - ``cost(ctx, art)``: its compute (:class:`less.results.Cost`): from its artifact's records, or
      (``art`` None) the plan's estimate before it is built.
    - ``plan(ctx)``: its part of plan.json (e.g. an estimate the costs start from).
    - ``check(cfg)``: validates the config slice it owns before any work (``ConfigError`` naming the
      key; ``less.validate`` runs every stage's check once, whether it applies or not).
    """

    name: str
    config: Callable[[Context], dict[str, Any]]
    build: Callable[[Context, Inputs, Path], Any] | None = None
    work: Callable[[Context, Inputs, Path], Work] | None = None
    inputs: Callable[[Context], dict[str, str]] = no_inputs
    applies: Callable[[Context], bool] = always
    step: str | None = None
    kind: str | None = None  # cache folder; defaults to the name
    shared_work: bool = True  # work dir shared by every job with this key (else one per process)
    report: Callable[[Context, Artifact], dict[str, Any]] | None = None
    track: Callable[[Context, Artifact, dict[str, Any], Any], None] | None = None
    ranks: str = "main"
    wandb_type: str | None = None
    wandb_files: tuple[str, ...] = ()
    wandb_model: tuple[str, ...] = ()
    wandb_id: Callable[[Context], dict[str, Any]] | None = None
    summary: Callable[[dict[str, Any]], list[str]] | None = None
    links: tuple[str, ...] = ()
    own_line: Callable[[Context], dict[str, Any]] | None = no_fields
    accounting: Callable[[Context, Artifact | None], dict[str, Any]] | None = None
    params: Callable[[Context], int | None] | None = None
    cost: Callable[[Context, Artifact | None], Cost] | None = None
    plan: Callable[[Context], dict[str, Any]] | None = None
    check: Callable[[DictConfig], None] | None = None

    def __post_init__(self) -> None:
        if (self.build is None) == (self.work is None):
            raise TypeError(f"stage {self.name}: give exactly one of build or work")
        if self.ranks not in ("main", "all", "split") or (self.ranks == "all" and self.build is None) or (
                self.ranks == "split" and not (self.work is not None and self.shared_work)):
            raise TypeError(f"stage {self.name}: ranks={self.ranks!r} (all: a build; split: a work with shared work)")
        if self.step is not None and self.step not in STEPS:
            raise TypeError(f"stage {self.name}: unknown step {self.step!r}")

    @property
    def cache_kind(self) -> str:
        return self.kind or self.name

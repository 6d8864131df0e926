"""Selection methods by name. A method is one scoring function plus one YAML file in
``conf/selection/`` (``method: <name>`` and its settings):

    @method("toy", needs="nothing", target_free=False)
    def toy(req: Request) -> np.ndarray:      # one score per pool example, higher = selected first
        return np.array([len(ex["messages"]) for ex in req.pool], dtype=float)

``needs`` says which artifact the runner must provide: ``"gradients"`` (the LESS datastore in
``req.datastore``), ``"representations"`` (the selector's hidden states in ``req.representations``)
``"influence"`` (EK-FAC's pairwise scores in ``req.influence``, less.stages.influence)
or ``"nothing"``. ``features=FeatureKind(...)`` says which datastore features the formula needs (the config is
checked for them up front; LESS overlap is then measured against LESS on its own features). ``scored=False`` says the scores rank nothing (``full``: it keeps every example), so the method
has no LDS. ``target_free=True`` means the scores ignore the target, so one selection (and
the model trained on it) serves every target. ``check(cfg)`` validates the method's own settings
up front (raise ``ConfigError`` naming the key).

Every module of the ``less.selection`` package is imported before the first lookup, so a method
defined in a new module there is found without touching the engine; installed packages add
methods through the ``less.selection_methods`` entry-point group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from omegaconf import DictConfig

from less.registry import Registry, origin

NEEDS = ("gradients", "representations", "influence", "nothing")


@dataclass
class Request:
    """What a scoring function gets. ``target`` is None for target-free methods."""

    selection: DictConfig
    seed: int
    pool: list[dict[str, Any]]
    target: list[dict[str, Any]] | None
    datastore: Path | None = None
    representations: Path | None = None
    influence: Path | None = None

    def n_select(self, n_scored: int) -> int:
        """How many rows the selection keeps out of ``n_scored`` (a fraction of the whole pool)."""
        from less.selection.scoring import n_selected

        s = self.selection
        return n_selected(n_scored, None if s.k is not None else s.fraction, s.k, n_pool=len(self.pool))


@dataclass
class Scored:
    """Scores of ``ids`` (default: every pool example, in pool order); ``n_selected`` overrides
    the fraction (the full pool); ``extra`` goes into selection.json."""

    scores: np.ndarray
    ids: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    n_selected: int | None = None


@dataclass(frozen=True)
class FeatureKind:
    """The datastore features a method's formula needs (``datastore.gradient_type``,
    ``datastore.normalize``) and how to say so; its preset sets them, and the select step's check
    stops a config that asks for others."""

    gradient_type: str
    normalize: bool
    what: str


@dataclass(frozen=True)
class Method:
    name: str
    score: Callable[[Request], "Scored | np.ndarray"]
    needs: str = "nothing"
    target_free: bool = False
    check: Callable[[DictConfig], None] | None = None
    scored: bool = True  # False: its scores say nothing (full), so it has no LDS (less.stages.validate)
    features: FeatureKind | None = None  # needs="gradients" methods whose formula fixes the features (trak)


METHODS: Registry[Method] = Registry("selection method", "selection.method", "less.selection", "less.selection_methods")


def register(m: Method) -> Method:
    if m.needs not in NEEDS:
        raise ValueError(f"selection method {m.name}: needs must be one of {NEEDS}, got {m.needs!r}")
    return METHODS.add(m.name, m, origin(m.score))


def method(name: str, *, needs: str = "nothing", target_free: bool = False,
           check: Callable[[DictConfig], None] | None = None, scored: bool = True,
           features: FeatureKind | None = None):
    """Decorator: register ``fn(req) -> scores`` as selection method ``name``."""
    def deco(fn):
        register(Method(name, fn, needs, target_free, check, scored, features))
        return fn
    return deco


def names() -> list[str]:
    return METHODS.names()


def get(name: str) -> Method:
    return METHODS.get(name)

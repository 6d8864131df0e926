"""Selection methods by name. A method is one scoring function plus one YAML file in
``conf/selection/`` (``method: <name>`` and its settings):

    @method("toy", needs="nothing", target_free=False)
    def toy(req: Request) -> np.ndarray:      # one score per pool example, higher = selected first
        return np.array([len(ex["messages"]) for ex in req.pool], dtype=float)

``needs`` says which artifact the runner must provide: ``"gradients"`` (the LESS datastore in
``req.datastore``), ``"representations"`` (the selector's hidden states in ``req.representations``)
or ``"nothing"``. ``target_free=True`` means the scores ignore the target, so one selection (and
the model trained on it) serves every target. ``check(cfg)`` validates the method's own settings
up front (raise ``ConfigError`` naming the key).

Every module of the ``less.selection`` package is imported before the first lookup, so a method
defined in a new module there is found without touching the engine; installed packages add
methods through the ``less.selection_methods`` entry-point group.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable

import numpy as np
from omegaconf import DictConfig

from less.errors import ConfigError

NEEDS = ("gradients", "representations", "nothing")


@dataclass
class Request:
    """What a scoring function gets. ``target`` is None for target-free methods."""

    selection: DictConfig
    seed: int
    pool: list[dict[str, Any]]
    target: list[dict[str, Any]] | None
    datastore: Path | None = None
    representations: Path | None = None

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
class Method:
    name: str
    score: Callable[[Request], "Scored | np.ndarray"]
    needs: str = "nothing"
    target_free: bool = False
    check: Callable[[DictConfig], None] | None = None


_METHODS: dict[str, Method] = {}
_loaded = False


def register(m: Method) -> Method:
    if m.needs not in NEEDS:
        raise ValueError(f"selection method {m.name}: needs must be one of {NEEDS}, got {m.needs!r}")
    old = _METHODS.get(m.name)
    if old is not None and (old.score.__module__, old.score.__qualname__) != (m.score.__module__, m.score.__qualname__):
        raise ValueError(f"selection method {m.name!r} is registered twice ({old.score.__module__}, {m.score.__module__})")
    _METHODS[m.name] = m
    return m


def method(name: str, *, needs: str = "nothing", target_free: bool = False,
           check: Callable[[DictConfig], None] | None = None):
    """Decorator: register ``fn(req) -> scores`` as selection method ``name``."""
    def deco(fn):
        register(Method(name, fn, needs, target_free, check))
        return fn
    return deco


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    import less.selection as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{pkg.__name__}.{mod.name}")
    for ep in entry_points(group="less.selection_methods"):
        ep.load()


def names() -> list[str]:
    _load()
    return sorted(_METHODS)


def get(name: str) -> Method:
    _load()
    if name not in _METHODS:
        raise ConfigError(f"selection.method must be one of {names()}, got {name!r}")
    return _METHODS[name]

"""Pool kinds (``pool.kind``) and target kinds (``target.kind``) by name. A kind is one module of
the ``less.data`` package (or an installed package's entry point in ``less.pool_kinds`` /
``less.target_kinds``) plus its YAML in ``conf/pool/`` or ``conf/target/``:

    @pool_kind("lines", reads=lambda pool, data: {"file": file_id(pool.file)})
    def lines(pool: DictConfig, data: DictConfig) -> list[dict]:
        return [{"id": f"l{i}", "messages": [...]} for i, line in enumerate(open(pool.file))]

``load(cfg, data_cfg)`` returns the examples (chat ``messages`` or prompt/completion, each with a
unique ``id``). ``reads(cfg, data_cfg)`` names what the examples depend on besides the kind's own
config, by content (less.identity: ``file_id`` for a file given directly, ``data_id`` for files
under ``data.root``); it enters the cache key, so a kind that reads files must declare them, and
never by absolute path. ``check(cfg)`` validates the kind's own settings before any work
(``ConfigError`` naming the key). A target kind may ship test sets for lm-eval tasks of its own
(``eval_data(cfg) -> {task: rows}``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from omegaconf import DictConfig

from less.registry import Registry, origin

Rows = list[dict[str, Any]]
Loader = Callable[[DictConfig, DictConfig], Rows]
Reads = Callable[[DictConfig, DictConfig], dict[str, Any]]


def reads_nothing(cfg: DictConfig, data_cfg: DictConfig) -> dict[str, Any]:
    return {}


def checks_nothing(cfg: DictConfig) -> None:
    return None


@dataclass(frozen=True)
class PoolKind:
    name: str
    load: Loader
    reads: Reads = reads_nothing
    check: Callable[[DictConfig], None] = checks_nothing  # its config slice, before any work


@dataclass(frozen=True)
class TargetKind:
    name: str
    load: Loader
    reads: Reads = reads_nothing
    eval_data: Callable[[DictConfig], dict[str, Rows]] | None = None
    check: Callable[[DictConfig], None] = checks_nothing


POOLS: Registry[PoolKind] = Registry("pool kind", "pool.kind", "less.data", "less.pool_kinds")
TARGETS: Registry[TargetKind] = Registry("target kind", "target.kind", "less.data", "less.target_kinds")


def pool_kind(name: str, *, reads: Reads = reads_nothing, check: Callable[[DictConfig], None] = checks_nothing):
    """Decorator: register ``fn(pool_cfg, data_cfg) -> rows`` as ``pool.kind: <name>``."""
    def deco(fn: Loader) -> Loader:
        POOLS.add(name, PoolKind(name, fn, reads, check), origin(fn))
        return fn
    return deco


def target_kind(name: str, *, reads: Reads = reads_nothing, eval_data: Callable[[DictConfig], dict[str, Rows]] | None = None,
                check: Callable[[DictConfig], None] = checks_nothing):
    """Decorator: register ``fn(target_cfg, data_cfg) -> rows`` as ``target.kind: <name>``."""
    def deco(fn: Loader) -> Loader:
        TARGETS.add(name, TargetKind(name, fn, reads, eval_data, check), origin(fn))
        return fn
    return deco

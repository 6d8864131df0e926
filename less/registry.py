"""Named things users add (selection methods, pool kinds, target kinds, eval tasks), each found
by name in a :class:`Registry`. Adding one is one Python module in the registry's package (every
module there is imported before the first lookup) or, from an installed package, an entry point
in the registry's group; its YAML, when it has options, is the only other file."""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points
from typing import Callable, Generic, TypeVar

from less.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """``what``: how errors name an entry; ``key``: the config key that picks one (named by the
    error for an unknown name); ``package``: whose modules register entries; ``group``: the
    entry-point group of installed packages' entries."""

    def __init__(self, what: str, key: str, package: str, group: str):
        self.what, self.key, self.package, self.group = what, key, package, group
        self._entries: dict[str, T] = {}
        self._origin: dict[str, str] = {}
        self._loaded = False

    def add(self, name: str, entry: T, origin: str) -> T:
        """Register ``entry`` under ``name``; ``origin`` (module.qualname of its code) tells a
        re-import of the same definition from a clash."""
        if name in self._entries and self._origin[name] != origin:
            raise ValueError(f"{self.what} {name!r} is registered twice ({self._origin[name]}, {origin})")
        self._entries[name], self._origin[name] = entry, origin
        return entry

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        pkg = importlib.import_module(self.package)
        for mod in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{self.package}.{mod.name}")
        for ep in entry_points(group=self.group):
            ep.load()

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def get(self, name: str) -> T:
        self._load()
        if name not in self._entries:
            raise ConfigError(f"{self.key} must be one of {self.names()}, got {name!r}")
        return self._entries[name]


def origin(fn: Callable) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"

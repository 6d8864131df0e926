"""What a cache key says about files: their content, never where they lie.

A stage that reads files names them in its key by ``{"name", "size", "blake2b"}``: the name is
the path relative to the directory the configuration points at (``data.root``, a local model
directory) or, for a file given directly (a ``jsonl`` pool), its file name. The same bytes at
another path give the same key; one changed byte gives another.

Hashing a multi-GB pool on every run would be slow, so each file's digest is memoised in an index
(``<cache_dir>/.hash-index/``, one small file per entry, written atomically) keyed by the file's
absolute path, size, ``mtime_ns`` and inode: a file whose ``stat`` is unchanged is not read again.
The index only saves time; a key never depends on it. ``use_index`` points it at the writable
cache a process opened (``less.cache.Cache`` does); without one, every file is read.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import uuid
from pathlib import Path
from typing import Any, Iterable

log = logging.getLogger(__name__)

INDEX_DIR = ".hash-index"
_index: Path | None = None
_CHUNK = 1 << 20


def use_index(root: Path | None) -> None:
    """Memoise digests under ``root`` (None: no memo)."""
    global _index
    _index = Path(root) if root is not None else None


def _entry(st: os.stat_result, path: str) -> str:
    return hashlib.blake2b(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}".encode(), digest_size=16).hexdigest()


def digest(path: Path) -> str:
    """blake2b (128 bits, hex) of the file's bytes, memoised by its stat."""
    path = Path(os.path.abspath(path))
    st = path.stat()
    memo = _index / _entry(st, str(path)) if _index is not None else None
    if memo is not None:
        try:
            return memo.read_text().strip()
        except OSError:
            pass
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    value = h.hexdigest()
    if memo is not None and path.stat().st_mtime_ns == st.st_mtime_ns:  # not written while it was read
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo.with_name(f".{memo.name}.{uuid.uuid4().hex}")
            tmp.write_text(value)
            os.replace(tmp, memo)
        except OSError as e:  # a read-only or full cache: the next run reads the file again
            log.debug("hash index %s not written: %s", memo.parent, e)
    return value


def file_id(path: str | Path, name: str | None = None) -> dict[str, Any]:
    """``{"name", "size", "blake2b"}`` of one file (``name``: its file name unless given);
    ``{"name", "missing": True}`` when there is no such file (the stage that reads it says so)."""
    p = Path(str(path)).expanduser()
    name = name if name is not None else p.name
    if not p.is_file():
        return {"name": name, "missing": True}
    return {"name": name, "size": p.stat().st_size, "blake2b": digest(p)}


def tree_id(root: str | Path, patterns: Iterable[str] = ("**",)) -> list[dict[str, Any]]:
    """The files under ``root`` that match any of ``patterns`` (glob patterns relative to
    ``root``; one naming a directory takes every file below it), each as ``file_id`` named by its
    path relative to ``root``, in path order. Hidden files and directories are left out."""
    root = Path(str(root)).expanduser()
    pats = list(patterns)
    found: dict[str, Path] = {}
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        for f in files:
            if f.startswith("."):
                continue
            rel = os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/")
            if any(_matches(rel, p) for p in pats):
                found[rel] = Path(d) / f
    return [file_id(found[rel], rel) for rel in sorted(found)]


def _matches(rel: str, pattern: str) -> bool:
    pattern = pattern.rstrip("/")
    parts = rel.split("/")
    # the file itself, or a directory above it, matches the pattern
    return any(fnmatch.fnmatchcase("/".join(parts[:i]), pattern) for i in range(1, len(parts) + 1))


def data_id(data_cfg: Any, patterns: Iterable[str]) -> dict[str, Any]:
    """The identity of what a source reads from the data: the matching files under ``data.root``
    by content, or the hub repository when no root is set (``data.hub_repo``; as keys named it
    before content identity, so those keys did not change)."""
    root = data_cfg.get("root")
    if not root:
        return {"root": None, "hub_repo": str(data_cfg.hub_repo)}
    root = Path(str(root)).expanduser()
    if not root.is_dir():
        return {"root_missing": True}
    return {"files": tree_id(root, patterns)}


def path_named(x: Any) -> bool:
    """Whether a plain spec names data by path (the identities of keys before content keys)."""
    if isinstance(x, dict):
        if "mtime_ns" in x or (isinstance(x.get("root"), str) and "hub_repo" in x):
            return True
        if isinstance(x.get("files"), dict) and (x.get("kind") == "hf" or isinstance(x.get("external"), str)):
            return True
        if isinstance(x.get("external"), dict) and isinstance(x["external"].get("model_files"), dict):
            return True
        return any(path_named(v) for v in x.values())
    if isinstance(x, list):
        return any(path_named(v) for v in x)
    return False

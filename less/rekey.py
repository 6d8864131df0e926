"""Re-keying a cache built before keys named data by content (``python -m less.cache_cli rekey``).

Keys used to name data by where it lay: ``data.root``'s absolute path, a ``jsonl`` file's path,
size and mtime, a local model directory's file sizes and mtimes. Today's keys name the same data
by content (less.identity). An old artifact is re-keyed, not rebuilt, when its recorded spec,
with each path-named identity replaced by the content of what lies at that path now, is exactly
today's spec: the artifact moves to its new key (a rename under both keys' locks, ``key.json``
rewritten), and every artifact built from it follows, since its inputs' keys changed.

What is checked before a move: every recorded file exists and has its recorded size (the mtime
is not compared: a copy changes it), a recorded data root exists and holds the files the source
reads. ``--path OLD=NEW`` says that what lay under OLD now lies under NEW. Artifacts whose data
cannot be found or checked are left in place, with the reason, and rebuilt when next needed.
Evaluations of an external checkpoint (``eval.model=<dir>``) or with ``eval.include_paths`` are
not re-keyed (they are cheap to recompute).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from less.cache import KEY_FILE, Cache, _lock_if_free, cache_key, write_json_atomic
from less.identity import data_id, file_id, path_named, tree_id

# files of an artifact that hold paths to its inputs (relative, through their keys)
PATH_FILES = ("manifest.json",)


class Unverifiable(Exception):
    """The data an old key names is not where it was, or not as it was."""


@dataclass
class Move:
    kind: str
    old: str
    new: str | None  # None: left in place (``why``)
    why: str = ""
    spec: dict[str, Any] | None = None  # the new key's spec


class Upgrade:
    """Today's spec for an old one. ``paths``: (old prefix, new prefix) pairs for data that moved."""

    def __init__(self, paths: list[tuple[str, str]]):
        self.paths = paths

    def where(self, path: str) -> Path:
        for old, new in self.paths:
            if path == old or path.startswith(old.rstrip("/") + "/"):
                return Path(new + path[len(old):])
        return Path(path)

    def stamp(self, s: dict[str, Any], name: str | None = None) -> dict[str, Any]:
        """An old ``{"path", "size", "mtime_ns"}`` as today's ``file_id``, after checking the size."""
        p = self.where(s["path"])
        if s.get("missing"):
            return {"name": name or p.name, "missing": True}
        if not p.is_file():
            raise Unverifiable(f"{p}: not found (recorded {s['path']}; --path OLD=NEW if it moved)")
        if p.stat().st_size != s["size"]:
            raise Unverifiable(f"{p}: {p.stat().st_size} bytes, recorded {s['size']}: the file changed")
        return file_id(p, name)

    def files(self, directory: str, files: dict[str, list[int]]) -> list[dict[str, Any]]:
        """An old ``{relative path: [size, mtime_ns]}`` of a directory as today's ``file_id`` list."""
        d = self.where(directory)
        return [self.stamp({"path": str(d / rel), "size": size}, rel) for rel, (size, _) in sorted(files.items())]

    def data(self, old: dict[str, Any], patterns) -> dict[str, Any]:
        """An old ``{"root", "hub_repo"}`` as today's ``data_id`` of the files a source reads."""
        if not isinstance(old.get("root"), str):
            return old
        root = self.where(old["root"])
        if not root.is_dir():
            raise Unverifiable(f"{root}: data root not found (recorded {old['root']}; --path OLD=NEW if it moved)")
        new = data_id(OmegaConf.create({"root": str(root), "hub_repo": old.get("hub_repo")}), patterns)
        if not new["files"]:
            raise Unverifiable(f"{root}: none of the files the source reads ({', '.join(patterns)})")
        return new

    def generic(self, x: Any) -> Any:
        """File stamps and local model directories, wherever they sit."""
        if isinstance(x, dict):
            if "mtime_ns" in x and "path" in x or x.get("missing") is True and "path" in x:
                return self.stamp(x)
            if x.get("kind") == "hf" and isinstance(x.get("files"), dict):  # a local model directory
                return {**{k: self.generic(v) for k, v in x.items() if k != "files"}, "path": None,
                        "files": self.files(x["path"], x["files"])}
            if isinstance(x.get("external"), str) and isinstance(x.get("files"), dict):  # datastore.warmup_dir
                return {**x, "external": True, "files": self.files(x["external"], x["files"])}
            return {k: self.generic(v) for k, v in x.items()}
        if isinstance(x, list):
            return [self.generic(v) for v in x]
        return x

    def config(self, kind: str, cfg: dict[str, Any]) -> dict[str, Any]:
        from less.data.kinds import TARGETS
        from less.data.pools import LESS_DATA_FILES, RAW_PATHS
        from less.data.targets import BUILDERS

        cfg = self.generic(copy.deepcopy(cfg))
        if kind == "pool" and cfg.get("kind") == "less_data" and isinstance(cfg.get("path"), str):
            p = self.where(cfg["path"])
            if not p.is_dir():
                raise Unverifiable(f"{p}: pool.path not found (recorded {cfg['path']})")
            cfg["path"] = tree_id(p, LESS_DATA_FILES)
        if not isinstance(cfg.get("data"), dict) or not isinstance(cfg["data"].get("root"), str):
            return cfg
        plain = {k: v for k, v in cfg.items() if k != "data"}
        if kind == "pool":
            patterns = {"raw": lambda: [RAW_PATHS[s] for s in plain["sources"] if s in RAW_PATHS],
                        "less_data": lambda: LESS_DATA_FILES}[plain["kind"]]()
        elif kind == "target":
            TARGETS.get(plain["kind"])  # a registered kind (one-line error otherwise)
            patterns = BUILDERS[plain["kind"]][1]
        elif kind == "model":
            patterns = list(RAW_PATHS.values())
        elif kind == "eval":
            from less.evaluation.tasks import reads

            if cfg.get("external") or cfg["eval"].get("include_paths"):
                raise Unverifiable("an evaluation of an external checkpoint or include_paths: recomputed when needed")
            if "tydiqa_train_file" in cfg:
                cfg["eval"]["tydiqa"]["train_file"] = True
            patterns = reads(OmegaConf.create(cfg["eval"]))
        else:
            raise Unverifiable(f"a {kind} artifact that names data by path")
        return {**cfg, "data": self.data(cfg["data"], patterns)}


def plan(specs: dict[tuple[str, str], dict[str, Any]], paths: list[tuple[str, str]]) -> list[Move]:
    """What re-keying would do to the artifacts ``specs`` ({(kind, key): the spec in its
    key.json}: those of a cache's writable root), inputs before the artifacts built from them."""
    owners = {key: (kind, key) for kind, key in specs}
    up, new_key, moves = Upgrade(paths), {}, []

    def visit(kind: str, key: str) -> str | None:
        if (kind, key) in new_key:
            return new_key[(kind, key)]
        new_key[(kind, key)] = None  # no cycles in a cache, but never loop
        spec = specs[(kind, key)]
        inputs = {}
        for role, k in spec.get("inputs", {}).items():
            inputs[role] = visit(*owners[k]) if k in owners else k
        try:
            config = up.config(kind, spec["config"]) if path_named(spec["config"]) else spec["config"]
        except Unverifiable as e:
            moves.append(Move(kind, key, None, str(e)))
            return None
        if any(v is None for v in inputs.values()):
            moves.append(Move(kind, key, None, "an input could not be re-keyed"))
            return None
        new = cache_key(kind, {"config": config, "inputs": inputs})
        new_key[(kind, key)] = new
        if new != key:
            moves.append(Move(kind, key, new, spec={"config": config, "inputs": inputs}))
        return new

    for kind, key in list(specs):
        visit(kind, key)
    return moves


def apply(cache: Cache, moves: list[Move]) -> list[str]:
    """Rename each artifact to its new key (under both locks), rewrite its ``key.json`` and the
    input paths in its ``PATH_FILES``. One line per artifact."""
    renamed = {m.old: m.new for m in moves if m.new}
    out = []
    for m in moves:
        if m.new is None:
            out.append(f"{m.kind}/{m.old}: left in place: {m.why}")
            continue
        src, dst = cache.path(m.kind, m.old), cache.path(m.kind, m.new)
        with _lock_if_free(cache.lock_path(m.kind, m.old)) as a, _lock_if_free(cache.lock_path(m.kind, m.new)) as b:
            if not (a and b):
                out.append(f"{m.kind}/{m.old}: left in place: a job holds its lock")
                continue
            if dst.exists():
                out.append(f"{m.kind}/{m.old}: left in place: {m.kind}/{m.new} exists already")
                continue
            for name in PATH_FILES:
                f = src / name
                if f.is_file():
                    text = f.read_text()
                    for old, new in renamed.items():
                        text = text.replace(f"/{old}", f"/{new}")
                    tmp = f.with_name(f".{name}.rekey")
                    tmp.write_text(text)
                    os.replace(tmp, f)
            write_json_atomic(src / KEY_FILE, {"kind": m.kind, "key": m.new, "spec": m.spec})
            os.rename(src, dst)
        out.append(f"{m.kind}/{m.old} -> {m.new}: moved")
    return out

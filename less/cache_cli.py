"""``python -m less.cache_cli``: look into the artifact cache and prune it.

    python -m less.cache_cli list [--kind K] [--json]
    python -m less.cache_cli show KEY                      (a unique prefix, or kind/prefix)
    python -m less.cache_cli clean [--kind K] [--older-than 7d] [--yes]
    python -m less.cache_cli gc [--runs DIR ...] [--yes]

The cache is ``--cache-dir``, else ``$LESS_CACHE_DIR``, else ``./cache`` (the default of
``cache_dir`` in conf/config.yaml). Artifacts are the directories ``<cache>/<kind>/<key>/`` with a
``key.json`` ({kind, key, spec: {config, inputs: {role: key}}}); top-level directories starting
with ``_`` (the W&B ledger ``_wandb/``) or ``.`` are not kinds, and names starting with ``.`` in a
kind (``.tmp-<key>`` builds, ``.work-<key>`` resumable work, ``.<key>.lock``) are not artifacts.

``clean`` and ``gc`` only say what they would remove unless given ``--yes``. An artifact is
removed under its key's lock (``Cache.remove``): one whose lock another process holds (a build of
that key), or that a build under way takes as an input, is skipped with a note. ``gc`` keeps every
artifact a run's ``results.json`` names (``artifacts.<stage>`` and ``stages.<step>``) and,
transitively, their inputs; it removes the rest, temporary builds left by killed jobs
(``Cache.stale_tmp``), this host's dead jobs' per-process work (``less.cache.remove_stale_work``)
and resumable work whose artifact was finished. Partial resumable work is kept (a rerun resumes it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from less.cache import KEY_FILE, Cache, _tree_bytes, dead_work

KEY_RE = re.compile(r"^[0-9a-f]{16}$")
# the config values that tell artifacts of a kind apart, for `list` (others: the first few values)
SUMMARY = {
    "model": ["kind", "path", "tiny.hidden_size", "tiny.num_layers"],
    "pool": ["name", "n_per_skill", "max_per_source", "sources"],
    "target": ["name", "n_per_subtask"],
    "warmup": ["warmup.fraction", "warmup.epochs", "warmup.lr", "selector.path"],
    "init_adapter": ["selector.kind", "selector.path"],
    "features": ["split", "datastore.projection.dims", "datastore.gradient_type"],
    "representations": ["pooling", "model"],
    "ekfac_factors": ["fisher", "max_examples", "seed"],
    "influence": ["damping", "batch_size"],
    "select": ["selection.method", "selection.fraction", "selection.k"],
    "train": ["train.mode", "train.epochs", "train.lr"],
    "eval": ["eval.tasks", "eval.limit"],
    "token_counts": ["max_length"],
}
DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class UsageError(Exception):
    """Bad input: printed as one ``error:`` line, exit code 2."""


@dataclass
class Entry:
    """One artifact directory of the cache."""

    kind: str
    key: str
    dir: Path
    spec: dict[str, Any] | None  # key.json's spec; None when key.json is missing or unreadable
    mtime: float
    link: bool = False  # a symbolic link to an artifact elsewhere (removing it frees nothing)
    _size: int | None = field(default=None, repr=False)

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.key}"

    @property
    def size(self) -> int:
        if self._size is None:
            self._size = _tree_bytes(self.dir)
        return self._size

    @property
    def config(self) -> dict[str, Any]:
        return (self.spec or {}).get("config") or {}

    @property
    def inputs(self) -> dict[str, str]:
        return (self.spec or {}).get("inputs") or {}


# -- formatting -------------------------------------------------------------------------------------
def human_size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


def human_age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, s in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= s:
            return f"{int(seconds // s)}{unit}"
    return f"{int(seconds)}s"


def parse_duration(text: str) -> float:
    m = DURATION.match(text.strip())
    if not m:
        raise UsageError(f"--older-than {text!r}: expected a number and a unit (s, m, h, d, w), e.g. 7d, 12h, 30m")
    return float(m.group(1)) * UNITS[m.group(2)]


def _value(x: Any) -> str:
    if isinstance(x, list):
        return ",".join(_value(v) for v in x)
    return str(x)


def _leaves(x: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, x


def summary(e: Entry, width: int = 60) -> str:
    """A short line of the config values that matter for this kind (or its first values)."""
    if e.spec is None:
        return "(no key.json)"
    flat = dict(_leaves(e.config))
    paths = SUMMARY.get(e.kind) or [p for p, v in flat.items() if v is not None and v != []][:3]
    method = (e.config.get("selection") or {}).get("method") if e.kind == "select" else None
    if isinstance(method, str):  # the method's own settings (selection.rds.pooling, ...)
        paths = paths + [p for p in flat if p.startswith(f"selection.{method}.")]
    parts = [f"{p.rsplit('.', 1)[-1]}={_value(flat[p])}" for p in paths if flat.get(p) not in (None, [])]
    if not parts and e.inputs:
        parts = ["inputs: " + ",".join(e.inputs)]
    text = " ".join(parts)
    return text if len(text) <= width else text[:width - 3] + "..."


def table(rows: list[list[str]], right: tuple[int, ...] = ()) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
            for r in rows]


def artifact_rows(entries: list[Entry], now: float, header: bool = True) -> list[str]:
    rows = [["KIND", "KEY", "SIZE", "AGE", "CONFIG"]] if header else []
    rows += [[e.kind, e.key + ("@" if e.link else ""), human_size(e.size), human_age(now - e.mtime), summary(e)]
             for e in entries]
    return table(rows, right=(2, 3)) if rows else []


# -- reading the cache ------------------------------------------------------------------------------
class CacheView:
    """The artifacts of a cache root, read once."""

    def __init__(self, root: Path):
        self.cache = Cache(root)
        self.root = self.cache.root
        if not self.root.is_dir():
            raise UsageError(f"cache dir {self.root} does not exist (pass --cache-dir or set $LESS_CACHE_DIR)")
        self.entries: list[Entry] = []
        for kind_dir in sorted(self.kind_dirs()):
            for d in sorted(kind_dir.iterdir()):
                if d.name.startswith(".") or not d.is_dir():
                    continue
                self.entries.append(self._entry(kind_dir.name, d))
        self.entries.sort(key=lambda e: (e.kind, e.mtime, e.key))
        self.by_key: dict[str, list[Entry]] = {}
        for e in self.entries:
            self.by_key.setdefault(e.key, []).append(e)

    def kind_dirs(self) -> list[Path]:
        return [d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith(("_", "."))]

    @staticmethod
    def _entry(kind: str, d: Path) -> Entry:
        spec = None
        try:
            meta = json.loads((d / KEY_FILE).read_text())
            spec = meta.get("spec") if isinstance(meta, dict) else None
            spec = spec if isinstance(spec, dict) else None
        except (OSError, ValueError):
            pass
        try:
            mtime = d.stat().st_mtime
        except OSError:
            mtime = d.lstat().st_mtime
        return Entry(kind, d.name, d, spec, mtime, link=d.is_symlink())

    def kinds(self) -> list[str]:
        return sorted(d.name for d in self.kind_dirs())

    def filter(self, kind: str | None) -> list[Entry]:
        if kind is None:
            return list(self.entries)
        if kind not in self.kinds():
            raise UsageError(f"no kind {kind!r} in {self.root} (kinds: {', '.join(self.kinds()) or 'none'})")
        return [e for e in self.entries if e.kind == kind]

    def find(self, text: str) -> Entry:
        """The artifact named by a key, a unique key prefix, ``kind/prefix`` or its directory."""
        parts = text.rstrip("/").split("/")
        prefix, kind = parts[-1].lower(), parts[-2] if len(parts) > 1 else ""
        if not prefix:
            raise UsageError(f"show: no key given in {text!r}")
        found = [e for e in self.entries if e.key.startswith(prefix) and (not kind or e.kind == kind)]
        if not found:
            raise UsageError(f"no artifact with key {text!r} in {self.root}")
        if len(found) > 1:
            names = ", ".join(e.ref for e in found[:10]) + (f", ... ({len(found)} in all)" if len(found) > 10 else "")
            raise UsageError(f"key prefix {text!r} is ambiguous: {names}")
        return found[0]

    def users(self, key: str) -> list[Entry]:
        """The artifacts that take ``key`` as an input."""
        return [e for e in self.entries if key in e.inputs.values()]

    def closure(self, keys: Iterable[str]) -> set[str]:
        """``keys`` and, transitively, the inputs their key.json names."""
        seen: set[str] = set()
        todo = list(keys)
        while todo:
            k = todo.pop()
            if k in seen:
                continue
            seen.add(k)
            for e in self.by_key.get(k, []):
                todo.extend(v for v in e.inputs.values() if isinstance(v, str))
        return seen

    def building(self) -> dict[str, str]:
        """{input key: ``kind/key`` of the build} for every build under way (a ``.tmp-<key>`` whose
        lock another process holds): the inputs, transitively, of what is being built now."""
        out: dict[str, str] = {}
        for tmp in self.root.glob("*/.tmp-*"):
            key = tmp.name[len(".tmp-"):]
            if tmp.parent.name.startswith("_") or not self.cache.busy(tmp.parent.name, key):
                continue
            try:
                inputs = json.loads((tmp / KEY_FILE).read_text())["spec"]["inputs"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            for k in self.closure(v for v in inputs.values() if isinstance(v, str)):
                out.setdefault(k, f"{tmp.parent.name}/{key}")
        return out

    def leftovers(self) -> list[Path]:
        """Temporary builds and work directories (with their lock files): what only gc looks at."""
        return sorted(p for d in self.kind_dirs() for p in d.iterdir() if p.name.startswith((".tmp-", ".work-")))


# -- removing ---------------------------------------------------------------------------------------
def _remove_artifacts(view: CacheView, targets: list[Entry], yes: bool, out: list[str]) -> tuple[int, int, bool]:
    """Remove ``targets`` (or, without ``yes``, say what would go). Busy ones (their lock held, or
    an input of a build under way) are skipped with a note. Returns (count, bytes, all went well)."""
    building = view.building()
    n = freed = 0
    ok = True
    lines, notes = [], []
    for e in targets:
        if view.cache.busy(e.kind, e.key):
            notes.append(f"skipped {e.ref}: busy (another process holds its lock: a build under way)")
            continue
        if e.key in building:
            notes.append(f"skipped {e.ref}: an input of {building[e.key]}, which is being built")
            continue
        measured = e.size  # before it goes (the listing shows it); a link frees nothing
        size = 0 if e.link else measured
        if yes:
            try:
                got = view.cache.remove(e.kind, e.key)
            except OSError as err:
                notes.append(f"warning: cannot remove {e.ref} ({err.strerror or err})")
                ok = False
                continue
            if got is None:
                notes.append(f"skipped {e.ref}: busy (another process holds its lock: a build under way)")
                continue
            size = got
        lines.append(e)
        n, freed = n + 1, freed + size
    verb = "removed" if yes else "would remove"
    out.append(f"{verb} {n} artifact{'s' if n != 1 else ''} ({human_size(freed)})" + (":" if lines else ""))
    out.extend("  " + r for r in artifact_rows(lines, time.time(), header=False))
    out.extend(notes)
    return n, freed, ok


def _remove_shared_work(work: Path) -> None:
    """Remove a finished artifact's leftover resumable work as its own job does after assembly
    (``SplitFeatures.discard``): under the claims' lock, directory first, then the lock file."""
    import shutil

    from less.claims import Claims

    claims = Claims(work / "claims", work.with_name(work.name + ".lock"))
    with claims.locked():
        shutil.rmtree(work, ignore_errors=True)
        claims.lock.unlink(missing_ok=True)


def _gc_leftovers(view: CacheView, yes: bool, out: list[str]) -> tuple[int, int, bool]:
    """Temporary builds whose lock is free, this host's dead jobs' work, and resumable work whose
    artifact is finished. Returns (count, bytes, all went well)."""
    from less.cache import process_tag, remove_stale_work

    host = process_tag().rsplit("-", 1)[0]
    items: list[tuple[Path, int, str]] = []  # (path, bytes, why it goes)
    notes: list[str] = []
    ok = True
    rel = lambda p: p.relative_to(view.root)  # noqa: E731
    found = view.cache.stale_tmp(remove=yes)
    items += [(p, size, "left by a killed build") for p, size in found]
    for p in sorted(set(view.root.glob("*/.tmp-*")) - {q for q, _ in found}):
        if not p.is_dir() or p.parent.name.startswith("_"):
            continue
        if view.cache.busy(p.parent.name, p.name[len(".tmp-"):]):
            notes.append(f"kept {rel(p)}: a build under way holds its lock")
        else:  # Cache.stale_tmp could not remove it (and logged why)
            notes.append(f"warning: cannot remove {rel(p)}")
            ok = False
    for kind_dir in view.kind_dirs():
        keys = sorted({p.name[len(".work-"):].removesuffix(".lock").split("-", 1)[0]
                       for p in kind_dir.glob(".work-*")})
        for key in keys:
            dead = dead_work(kind_dir, key, host)
            sizes = {d: _tree_bytes(d) if d.is_dir() else 0 for d in dead}
            if yes and dead:
                cache_log = logging.getLogger("less.cache")
                level = cache_log.level
                cache_log.setLevel(logging.ERROR)  # its "removing ..." lines: listed here instead
                try:
                    remove_stale_work(kind_dir, key)
                finally:
                    cache_log.setLevel(level)
            for d in dead:
                if yes and (d.exists() or d.is_symlink()):
                    notes.append(f"warning: cannot remove {rel(d)}")
                    ok = False
                elif not d.name.endswith(".lock"):
                    items.append((d, sizes[d], "work of a job that is gone"))
            for d in sorted(kind_dir.glob(f".work-{key}-*")):
                if d not in dead and d.is_dir():
                    notes.append(f"kept {rel(d)}: work of a live job, or of another host's "
                                 f"({human_size(_tree_bytes(d))})")
            work = kind_dir / f".work-{key}"
            if not work.is_dir():
                continue
            size = _tree_bytes(work)
            if not (kind_dir / key).is_dir():
                notes.append(f"kept {rel(work)}: resumable work of an unfinished artifact "
                             f"({human_size(size)}; a rerun resumes it)")
                continue
            if yes:  # finished: what its job would have discarded after assembly
                _remove_shared_work(work)
                if work.exists():
                    notes.append(f"warning: cannot remove {rel(work)}")
                    ok = False
                    continue
            items.append((work, size, "work of a finished artifact"))
    n, freed = len(items), sum(size for _, size, _ in items)
    out.append(f"{'removed' if yes else 'would remove'} {n} temporary leftover{'s' if n != 1 else ''} "
               f"({human_size(freed)})" + (":" if items else ""))
    if items:
        out.extend("  " + r for r in table([[str(rel(p)), human_size(size), why] for p, size, why in items],
                                           right=(1,)))
    out.extend(notes)
    return n, freed, ok


# -- run directories --------------------------------------------------------------------------------
def run_references(dirs: list[Path]) -> tuple[set[str], int, int]:
    """Keys that the runs' ``results.json`` name (``artifacts.<stage>`` and ``stages.<step>``: key,
    or the last part of dir). Returns (keys, results files read, run dirs without results.json)."""
    keys: set[str] = set()
    n_results = unfinished = 0
    for root in dirs:
        for res in sorted(root.rglob("results.json")):
            try:
                data = json.loads(res.read_text())
            except (OSError, ValueError) as e:
                raise UsageError(f"cannot read {res} ({getattr(e, 'strerror', None) or e}); "
                                 "gc needs every run's results.json to know what it uses") from None
            n_results += 1
            for section in ("artifacts", "stages"):
                for rec in (data.get(section) or {}).values() if isinstance(data, dict) else []:
                    if not isinstance(rec, dict):
                        continue
                    for k in (rec.get("key"), Path(str(rec["dir"])).name if rec.get("dir") else None):
                        if isinstance(k, str) and KEY_RE.match(k):
                            keys.add(k)
        # a Hydra job directory with no results.json (nor plan.json): a job still running, or one that failed
        unfinished += sum(1 for h in root.rglob(".hydra")
                          if not any((h.parent / f).exists() for f in ("results.json", "plan.json")))
    return keys, n_results, unfinished


# -- commands ---------------------------------------------------------------------------------------
def cmd_list(view: CacheView, args) -> list[str]:
    entries = view.filter(args.kind)
    now = time.time()
    if args.json:
        return [json.dumps({
            "cache": str(view.root),
            "artifacts": [{"kind": e.kind, "key": e.key, "dir": str(e.dir), "bytes": e.size, "mtime": e.mtime,
                           "age_s": round(now - e.mtime, 1), "link": e.link, "summary": summary(e, 10**6),
                           "config": e.config, "inputs": e.inputs} for e in entries],
            "total_bytes": sum(e.size for e in entries)}, indent=2)]
    out = artifact_rows(entries, now) if entries else []
    total = sum(e.size for e in entries)
    out.append(f"{len(entries)} artifact{'s' if len(entries) != 1 else ''}, {human_size(total)}"
               + (f" ({args.kind})" if args.kind else "") + f" in {view.root}")
    if any(e.link for e in entries):
        out.append("@: a link to an artifact in another cache")
    left = [p for p in view.leftovers() if p.is_dir()]
    if left and not args.kind:
        size, n = sum(_tree_bytes(p) for p in left), len(left)
        out.append(f"plus {n} temporary or work director{'ies' if n != 1 else 'y'} ({human_size(size)}): "
                   "see python -m less.cache_cli gc")
    return out


def cmd_show(view: CacheView, args) -> list[str]:
    import yaml

    e = view.find(args.key)
    out = [f"kind:   {e.kind}", f"key:    {e.key}",
           f"dir:    {e.dir}" + (f" -> {os.path.realpath(e.dir)}" if e.link else ""),
           f"size:   {human_size(e.size)}",
           f"age:    {human_age(time.time() - e.mtime)} (built {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(e.mtime))})"]
    if e.spec is None:
        out.append(f"config: (no readable {KEY_FILE})")
    else:
        class Dumper(yaml.SafeDumper):  # block mappings, lists on one line ([256, 1024])
            pass

        Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))
        text = yaml.dump(e.config, Dumper=Dumper, sort_keys=False, default_flow_style=False, width=100).rstrip()
        out.append("config:" + (" {}" if not e.config else ""))
        out += ["  " + line for line in text.splitlines()] if e.config else []
    out.append("inputs:" + (" (none)" if not e.inputs else ""))
    w = max((len(r) for r in e.inputs), default=0)
    for role, key in e.inputs.items():
        found = view.by_key.get(key, [])
        out.append(f"  {role.ljust(w)}  " + (", ".join(f.ref for f in found) if found else f"{key} (missing)"))
    users = view.users(e.key)
    out.append("used by:" + (" (none)" if not users else ""))
    out += [f"  {u.ref}  ({', '.join(r for r, k in u.inputs.items() if k == e.key)})" for u in users]
    return out


def cmd_clean(view: CacheView, args) -> tuple[list[str], bool]:
    targets = view.filter(args.kind)
    if args.older_than is not None:
        cutoff = time.time() - parse_duration(args.older_than)
        targets = [e for e in targets if e.mtime < cutoff]
    out: list[str] = []
    _, _, ok = _remove_artifacts(view, targets, args.yes, out)
    gone = {e.key for e in targets}
    orphans = [e for e in view.entries if e.key not in gone and set(e.inputs.values()) & gone]
    if orphans and targets:
        out.append(f"note: {len(orphans)} remaining artifact{'s' if len(orphans) != 1 else ''} take"
                   f"{'s' if len(orphans) == 1 else ''} one of these as input (a run rebuilds what it needs)")
    if not args.yes:
        out.append("dry run: nothing removed; add --yes to remove")
    return out, ok


def cmd_gc(view: CacheView, args) -> tuple[list[str], bool]:
    if args.runs:
        dirs = [Path(d) for d in args.runs]
        for d in dirs:
            if not d.is_dir():
                raise UsageError(f"--runs {d}: no such directory")
    else:
        dirs = [d for d in (Path("outputs"), Path("multirun")) if d.is_dir()]
        if not dirs:
            raise UsageError(f"no run directories: neither outputs/ nor multirun/ in {Path.cwd()} "
                             "(pass --runs DIR ...)")
    refs, n_results, unfinished = run_references(dirs)
    if not n_results:
        raise UsageError(f"no results.json under {', '.join(map(str, dirs))}: nothing would be kept "
                         "(pass --runs DIR, or use clean to empty the cache)")
    keep = view.closure(refs)
    kept = [e for e in view.entries if e.key in keep]
    targets = [e for e in view.entries if e.key not in keep]
    out = [f"{n_results} run result{'s' if n_results != 1 else ''} under {', '.join(map(str, dirs))} "
           f"refer{'s' if n_results == 1 else ''} to {len(kept)} of {len(view.entries)} artifacts, counting their "
           f"inputs ({human_size(sum(e.size for e in kept))}): kept"]
    if unfinished:
        out.append(f"note: {unfinished} run director{'ies' if unfinished != 1 else 'y'} without results.json "
                   "(running or failed jobs): what a running job reads is not protected")
    # leftovers first: a finished artifact's leftover work is told apart by the artifact being there
    left: list[str] = []
    _, freed_l, ok_l = _gc_leftovers(view, args.yes, left)
    _, freed_a, ok_a = _remove_artifacts(view, targets, args.yes, out)
    out += left
    total = human_size(freed_a + freed_l)
    out.append(f"freed {total}" if args.yes else f"dry run: nothing removed; add --yes to free {total}")
    return out, ok_a and ok_l


def cmd_rekey(view: CacheView, args) -> tuple[list[str], bool]:
    """Move artifacts built before content keys to their content keys (less.rekey)."""
    from less.rekey import apply, plan

    paths = []
    for p in args.path or []:
        old, sep, new = p.partition("=")
        if not sep or not old or not new:
            raise UsageError(f"--path {p}: expected OLD=NEW (what lay under OLD now lies under NEW)")
        paths.append((old, new))
    moves = plan({(e.kind, e.key): e.spec for e in view.entries if e.spec is not None and not e.link}, paths)
    if not moves:
        return ["nothing to re-key: every artifact's key names its data by content"], True
    if args.yes:
        out = apply(view.cache, moves)
        return out, all(line.endswith(": moved") for line in out)
    out = [f"{m.kind}/{m.old} -> {m.new}: would move" if m.new else f"{m.kind}/{m.old}: left in place: {m.why}"
           for m in moves]
    n = sum(m.new is not None for m in moves)
    return out + [f"dry run: nothing moved; add --yes to move {n} artifact{'s' * (n != 1)}"], True


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cache-dir", default=argparse.SUPPRESS,
                        help="the cache root (default: $LESS_CACHE_DIR, else ./cache)")
    p = argparse.ArgumentParser(prog="python -m less.cache_cli", description="Inspect and prune the LESS artifact cache.",
                                parents=[common])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("list", parents=[common], help="one line per artifact: kind, key, size, age, config")
    s.add_argument("--kind", help="only this kind (e.g. select)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s = sub.add_parser("show", parents=[common], help="one artifact: config, inputs, and what uses it")
    s.add_argument("key", help="a key, a unique prefix of one, or kind/prefix")
    s = sub.add_parser("clean", parents=[common], help="remove artifacts by kind and age (dry run without --yes)")
    s.add_argument("--kind", help="only this kind")
    s.add_argument("--older-than", metavar="D", help="only artifacts built more than D ago: 30m, 12h, 7d, 2w")
    s.add_argument("--yes", action="store_true", help="remove (default: only say what would be removed)")
    s = sub.add_parser("gc", parents=[common],
                       help="remove artifacts no run refers to, and temporary leftovers (dry run without --yes)")
    s.add_argument("--runs", nargs="+", metavar="DIR",
                   help="run directories whose results.json say what to keep (default: outputs/ and multirun/)")
    s.add_argument("--yes", action="store_true", help="remove (default: only say what would be removed)")
    s = sub.add_parser("rekey", parents=[common],
                       help="move artifacts keyed by data paths (before content keys) to their content keys "
                            "(dry run without --yes)")
    s.add_argument("--path", action="append", metavar="OLD=NEW",
                   help="data (or a model directory) recorded under OLD now lies under NEW; repeatable")
    s.add_argument("--yes", action="store_true", help="move (default: only say what would be moved)")
    return p


def default_cache_dir() -> str:
    return os.environ.get("LESS_CACHE_DIR") or "cache"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    root = getattr(args, "cache_dir", None) or default_cache_dir()
    ok = True
    try:
        view = CacheView(Path(root))
        if args.command == "list":
            out = cmd_list(view, args)
        elif args.command == "show":
            out = cmd_show(view, args)
        elif args.command == "clean":
            out, ok = cmd_clean(view, args)
        elif args.command == "rekey":
            out, ok = cmd_rekey(view, args)
        else:
            out, ok = cmd_gc(view, args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(out))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Content-addressed artifact cache.

Every artifact lives at ``<root>/<kind>/<key>/`` where ``key`` is a hash of exactly the config it
depends on plus the keys of its inputs; that config is written beside it as ``key.json``. A builder
writes into a temporary directory ``.tmp-<key>`` (named by the key alone, so nothing built inside
depends on which process built it) which is renamed into place only when it finished, so a
crashed build never leaves something that looks complete. A per-key file lock (``.<key>.lock``),
held for the whole build, makes two jobs that need the same missing artifact build it once; the
second waits and then reuses it. A killed build's ``.tmp-<key>`` is removed by the next build of
that key, and by ``remove_stale_tmp`` (a run opening the cache) as soon as its lock is free.
``remove`` deletes an artifact under the same lock (renamed to ``.tmp-<key>`` first, so a lookup
never sees it half-removed).

Read-only roots (``cache_readonly``, then ``$LESS_CACHE_READONLY``, ``:``-separated), in order
after the writable root: an artifact found in one (a lab's shared datastore, a base model) is used
in place and never written, locked, re-keyed or garbage-collected; everything built goes to the
writable root.

``python -m less.cache_cli list|show|clean|gc|rekey`` inspects and prunes a cache (less.cache_cli).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from omegaconf import DictConfig, ListConfig, OmegaConf

from less import identity

log = logging.getLogger(__name__)

KEY_FILE = "key.json"
# Bump when the meaning or layout of an artifact changes, so old cache entries are never reused.
ARTIFACT_VERSION = 6  # 6: warmup.json/train.json keep the training curve; 5: encoding as the reference LESS code


def to_plain(obj: Any) -> Any:
    if isinstance(obj, (DictConfig, ListConfig)):
        return OmegaConf.to_container(obj, resolve=True)
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def cache_key(kind: str, spec: dict[str, Any]) -> str:
    """Stable short hash of a stage kind and the plain config it depends on."""
    blob = json.dumps({"kind": kind, "version": ARTIFACT_VERSION, "spec": to_plain(spec)},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Artifact:
    kind: str
    key: str
    dir: Path
    cached: bool


def write_json_atomic(path: Path, obj: Any) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
        os.replace(tmp, path)
    except BaseException:  # e.g. a full disk: no half-written temporary left beside the file
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextmanager
def _lock_if_free(path: Path, create: bool = True) -> Iterator[bool]:
    """Hold the exclusive lock on ``path`` if no other process does: yields True while held, False
    (holding nothing) when another holds it. ``create=False`` only looks: a missing lock file counts
    as free and is not created (a dry run leaves the cache as it was)."""
    try:
        fh = open(path, "a+" if create else "r+")
    except FileNotFoundError:
        if create:
            raise
        fh = None
    if fh is None:
        yield True
        return
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = True
        except BlockingIOError:
            held = False
        try:
            yield held
        finally:
            if held:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _tree_bytes(root: Path) -> int:
    total = 0
    for d, _, files in os.walk(root):
        for f in files:
            try:
                total += os.lstat(os.path.join(d, f)).st_size
            except OSError:
                pass
    return total


def dead_work(kind_dir: Path, key: str, host: str) -> list[Path]:
    """``host``'s per-process work entries of ``key`` in ``kind_dir`` (``.work-<key>-<host>-<pid>``
    and its ``.lock``) whose process is gone: what ``remove_stale_work`` removes. Other
    hosts' entries are never listed (their processes cannot be checked from here)."""
    dead = []
    for d in sorted(Path(kind_dir).glob(f".work-{key}-{host}-*")):
        pid = d.name.removesuffix(".lock").rsplit("-", 1)[-1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            dead.append(d)
        except PermissionError:  # alive, another user's
            pass
    return dead


READONLY_ENV = "LESS_CACHE_READONLY"


def readonly_roots(configured: Any = None) -> list[Path]:
    """The read-only roots, in lookup order: ``configured`` (a list, or one path), then the
    ``:``-separated ``$LESS_CACHE_READONLY``."""
    if isinstance(configured, (str, Path)):
        configured = [configured]
    listed = [str(p) for p in (configured or [])] + [p for p in os.environ.get(READONLY_ENV, "").split(os.pathsep) if p]
    return list(dict.fromkeys(Path(p).expanduser().resolve() for p in listed))


class Cache:
    def __init__(self, root: str | Path, readonly: Any = None):
        self.root = Path(root).expanduser().resolve()
        self.readonly = [r for r in readonly_roots(readonly) if r != self.root]
        identity.use_index(self.root / identity.INDEX_DIR)  # file digests memoised beside the cache

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def tmp_path(self, kind: str, key: str) -> Path:
        """Where an artifact is built before the rename that makes it visible."""
        return self.root / kind / f".tmp-{key}"

    def ensure_writable(self) -> None:
        """Create the root if needed and a probe file in it (then remove it); raises the OSError
        that a build would meet later (read-only, a path under a file, permissions)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=self.root)
        os.close(fd)
        os.unlink(probe)

    def found(self, kind: str, key: str) -> Path | None:
        """Where ``kind/key`` is built: in the writable root, else the first read-only root that
        has it; None when none does."""
        for root in (self.root, *self.readonly):
            if (root / kind / key).is_dir():
                return root / kind / key
        return None

    def lookup(self, kind: str, spec: dict[str, Any]) -> Artifact:
        key = cache_key(kind, spec)
        d = self.found(kind, key)
        return Artifact(kind, key, d or self.path(kind, key), d is not None)

    def path_keyed(self) -> int:
        """How many artifacts of the writable root have keys that name data by path (built before
        content keys: ``python -m less.cache_cli rekey`` moves them). Once none is found, a marker
        file (``.content-keys``) saves the scan on later runs."""
        marker = self.root / ".content-keys"
        if marker.exists():
            return 0
        n = 0
        for f in self.root.glob(f"*/*/{KEY_FILE}"):
            try:
                n += identity.path_named(json.loads(f.read_text()).get("spec", {}).get("config"))
            except (OSError, ValueError, AttributeError):
                continue
        if n == 0:
            try:
                marker.touch()
            except OSError:
                pass
        return n

    def lock_path(self, kind: str, key: str) -> Path:
        """The per-key lock a build holds from start to rename (and ``remove`` while deleting)."""
        return self.root / kind / f".{key}.lock"

    def busy(self, kind: str, key: str) -> bool:
        """Whether another process holds ``kind/key``'s lock now (a build of that key under way)."""
        with _lock_if_free(self.lock_path(kind, key), create=False) as free:
            return not free

    def stale_tmp(self, remove: bool = False) -> list[tuple[Path, int]]:
        """Every ``<root>/<kind>/.tmp-<key>`` whose lock nobody holds (left by a killed build: a
        build under way holds its key's lock, so its directory is never listed), with its size;
        ``remove=True`` also removes them, under that lock. Best effort: what cannot be removed is
        logged and left out."""
        found = []
        for tmp in sorted(self.root.glob("*/.tmp-*")):
            key = tmp.name[len(".tmp-"):]
            try:
                with _lock_if_free(tmp.parent / f".{key}.lock", create=remove) as free:
                    if free and tmp.is_dir() and not tmp.is_symlink():
                        size = _tree_bytes(tmp)
                        if remove:
                            shutil.rmtree(tmp)
                        found.append((tmp, size))
            except OSError as e:
                log.warning("cache: cannot remove %s (%s)", tmp, e.strerror or e)
        return found

    def remove_stale_tmp(self) -> tuple[int, int]:
        """Remove every ``.tmp-<key>`` left by a killed build (``stale_tmp``). Returns
        (directories removed, bytes freed)."""
        removed = self.stale_tmp(remove=True)
        return len(removed), sum(size for _, size in removed)

    def remove(self, kind: str, key: str) -> int | None:
        """Delete artifact ``kind/key`` unless another process holds its lock (then None). Under the
        lock it is renamed to ``.tmp-<key>`` (a job looking it up from then on finds it missing and
        rebuilds it after the lock is free, never a half-removed directory; a job that already
        opened files in it keeps reading them), then deleted. An artifact that is a symbolic link
        loses the link only. Returns the bytes freed (0 if it was gone already or is a link); an
        OSError leaves at most a ``.tmp-<key>``, which ``remove_stale_tmp`` clears later."""
        final, tmp = self.path(kind, key), self.tmp_path(kind, key)
        with _lock_if_free(self.lock_path(kind, key)) as free:
            if not free:
                return None
            if not (final.is_dir() or final.is_symlink()):
                return 0
            if tmp.is_dir() and not tmp.is_symlink():  # a killed build's leftover: we hold its lock
                shutil.rmtree(tmp)
            elif tmp.exists() or tmp.is_symlink():
                tmp.unlink()
            os.rename(final, tmp)
            if tmp.is_symlink():
                tmp.unlink()
                return 0
            size = _tree_bytes(tmp)
            shutil.rmtree(tmp)
            return size

    def get_or_build(
        self, kind: str, spec: dict[str, Any], build: Callable[[Path], None]
    ) -> Artifact:
        """Return the artifact for ``spec``, building it with ``build(tmp_dir)`` if missing."""
        key = cache_key(kind, spec)
        final = self.path(kind, key)
        there = self.found(kind, key)
        if there is not None:
            log.info("cache hit: %s/%s%s", kind, key, "" if there == final else f" (read-only, {there.parent.parent})")
            return Artifact(kind, key, there, True)
        with _file_lock(self.lock_path(kind, key)):
            if final.is_dir():  # another job built it while we waited
                log.info("cache hit: %s/%s (built by another job)", kind, key)
                return Artifact(kind, key, final, True)
            # Named by the key alone (we hold its lock), so nothing built inside can depend on which
            # process built it; one left by a killed build of this key is removed first.
            tmp = self.tmp_path(kind, key)
            if tmp.exists():
                log.warning("removing %s, left by an interrupted build", tmp)
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            try:
                write_json_atomic(tmp / KEY_FILE, {"kind": kind, "key": key, "spec": to_plain(spec)})
                build(tmp)
                os.rename(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        log.info("built: %s/%s", kind, key)
        return Artifact(kind, key, final, False)


def process_tag() -> str:
    """``<host>-<pid>``: names per-process work directories (on a shared filesystem too)."""
    import socket

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


if __name__ == "__main__":  # the cache knows no CLI: point at it
    raise SystemExit("the cache's command line is python -m less.cache_cli (see --help there)")

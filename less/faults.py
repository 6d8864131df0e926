"""Faults of the machine rather than of the config, as one line (``LessError``), beside less.errors.

A cache_dir that cannot be written is refused before any work (``open_cache``); a full disk
(ENOSPC, EDQUOT) or a read-only path met during a run names the file, or else the artifact being
built (whose temporary directory the cache removes, so nothing half-written looks complete), or
else the output directory (``storage_error``).
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

from less.cache import Cache
from less.errors import ConfigError, LessError

log = logging.getLogger(__name__)


def open_cache(cache: Cache, tidy: bool) -> None:
    """The cache root must be writable (created if missing); with ``tidy`` (rank 0: a build of this
    job holds its lock anyway), temporary build directories left by killed builds are removed."""
    try:
        cache.ensure_writable()
    except OSError as e:
        raise ConfigError(f"cache_dir={cache.root} is not writable ({_why_not_writable(e, cache.root)}); "
                          "set cache_dir (or $LESS_CACHE_DIR) to a writable directory") from None
    if not tidy:
        return
    n, freed = cache.remove_stale_tmp()
    if n:
        log.warning("cache: removed %d stale temporary %s (%.1f MB) left by killed builds",
                    n, "directory" if n == 1 else "directories", freed / 1e6)
    old = cache.path_keyed()
    if old:
        log.warning("cache: %d %s in %s keyed by data paths (built before content keys) and no run finds them; "
                    "`python -m less.cache_cli rekey --cache-dir %s` moves them to their content keys (a dry run; add --yes)",
                    old, "artifact is" if old == 1 else "artifacts are", cache.root, cache.root)


def storage_error(e: BaseException, cache_root: Path, out_dir: Path,
                  building: tuple[Path, str] | None) -> LessError | None:
    """One line for a full disk (ENOSPC, EDQUOT) or a path that cannot be written (EROFS;
    EACCES/EPERM in the cache, the output directory or the build) found in ``e`` or its causes: it
    names the file the error names, else ``building``'s directory (with what was being built
    there), else the output directory. None for anything else."""
    seen: list[BaseException] = []
    x: BaseException | None = e
    while x is not None and not any(x is y for y in seen):
        seen.append(x)
        x = x.__cause__ or x.__context__
    built, what = building or (None, "")
    during = f" while building {what}" if what else ""
    mine = [cache_root, out_dir.resolve(), *([built] if built else [])]
    for x in seen:
        code = getattr(x, "errno", None) if isinstance(x, OSError) else None
        text = str(x)
        full = code in (errno.ENOSPC, errno.EDQUOT) or any(
            os.strerror(c) in text for c in (errno.ENOSPC, errno.EDQUOT))
        path = Path(os.fsdecode(x.filename)) if isinstance(x, OSError) and x.filename else built or out_dir
        if full:
            quota = " (Disk quota exceeded)" if code == errno.EDQUOT or os.strerror(errno.EDQUOT) in text else ""
            return LessError(f"{path}: no space left on device{quota}{during}; free some space and run the "
                             "same command again (finished artifacts are reused)")
        if code == errno.EROFS or (code in (errno.EACCES, errno.EPERM) and _within(path, mine)):
            return LessError(f"{path}: not writable ({x.strerror}){during}")
        if code in (errno.EACCES, errno.EPERM) and isinstance(x, OSError) and x.filename:
            return LessError(f"{path}: permission denied{during}")
    return None


def _why_not_writable(e: OSError, root: Path) -> str:
    """Why ``root`` cannot be made or written: a component that is a file, or the system's reason."""
    if isinstance(e, (NotADirectoryError, FileExistsError)):
        for p in [root, *root.parents]:
            if p.exists() and not p.is_dir():
                return f"{p} is a file, not a directory"
    return e.strerror or type(e).__name__


def _within(path: Path, roots: list[Path]) -> bool:
    path = Path(os.path.abspath(path))
    return any(path == r or r in path.parents for r in roots)

"""Row-range claims: how jobs that need the same resumable work (the pool's feature chunks) share it.

A job takes a range of rows to compute by creating a claim file ``<dir>/<tag>-<start>-<stop>`` and
holding an exclusive ``flock`` on it while it computes. Listing, creating and releasing claims
happen under one short-held directory lock, so two jobs never claim overlapping rows. A claim whose
file is not locked belongs to a job that is gone (killed: the kernel drops its locks), so its rows
are free again. A job with nothing left to claim but rows claimed by others waits on one of their
claim locks (a blocking ``flock``, no polling) and looks again when it is released.

Works wherever ``flock`` does across the jobs that share a cache: one machine, and NFS (Linux
emulates ``flock`` with byte-range locks there).
"""

from __future__ import annotations

import fcntl
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

Span = tuple[int, int]


def uncovered(spans: list[Span], lo: int, hi: int) -> list[Span]:
    """The parts of ``[lo, hi)`` that no span of ``spans`` covers, in order."""
    out, pos = [], lo
    for a, b in sorted(spans):
        if b <= pos:
            continue
        if a >= hi:
            break
        if a > pos:
            out.append((pos, min(a, hi)))
        pos = max(pos, b)
        if pos >= hi:
            break
    if pos < hi:
        out.append((pos, hi))
    return out


@dataclass
class Claim:
    tag: str
    start: int
    stop: int
    path: Path
    fh: IO


class Claims:
    """Claims on row ranges in ``dir`` (created on first use), serialised by ``lock``, a file
    outside ``dir`` so that removing ``dir`` never pulls a lock from under a waiting job."""

    def __init__(self, dir: Path, lock: Path):
        self.dir, self.lock = Path(dir), Path(lock)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """The directory lock (short: listing, claiming, releasing, removing the work)."""
        self.lock.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _live(self, tag: str) -> list[Span]:
        """Spans of ``tag`` claimed by jobs that are alive; stale claim files are removed. Call
        under :meth:`locked`."""
        live = []
        if not self.dir.is_dir():
            return live
        for f in self.dir.iterdir():
            t, _, span = f.name.rpartition("-")
            t, _, start = t.rpartition("-")
            if t != tag or not (start.isdigit() and span.isdigit()):
                continue
            try:
                fh = open(f, "r+")
            except FileNotFoundError:
                continue
            with fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    live.append((int(start), int(span)))
                    continue
                f.unlink()  # nobody holds it: its job is gone
        return live

    def claim(self, tag: str, wanted: list[Span], done: list[Span]) -> Claim | None:
        """Claim the first part of ``wanted`` that is neither in ``done`` nor claimed by a live job
        (up to the end of the wanted span it starts in), or None. Call under :meth:`locked`."""
        taken = done + self._live(tag)
        for lo, hi in wanted:
            free = uncovered(taken, lo, hi)
            if free:
                a, b = free[0]
                self.dir.mkdir(parents=True, exist_ok=True)
                path = self.dir / f"{tag}-{a}-{b}"
                fh = open(path, "w")
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # new file, under the directory lock
                fh.write(f"{socket.gethostname()} {os.getpid()}\n")
                fh.flush()
                return Claim(tag, a, b, path, fh)
        return None

    def busy(self, tag: str, wanted: list[Span], done: list[Span]) -> list[Span]:
        """Live claims of other jobs on rows of ``wanted`` not in ``done``. Call under :meth:`locked`."""
        todo = [s for lo, hi in wanted for s in uncovered(done, lo, hi)]
        return [(a, b) for a, b in self._live(tag) if any(a < y and x < b for x, y in todo)]

    def release(self, claim: Claim) -> None:
        with self.locked():
            claim.path.unlink(missing_ok=True)
            claim.fh.close()

    def wait(self, tag: str, span: Span) -> None:
        """Block until the job holding claim ``span`` of ``tag`` releases it or dies."""
        try:
            fh = open(self.dir / f"{tag}-{span[0]}-{span[1]}", "r")
        except FileNotFoundError:  # released meanwhile
            return
        with fh:
            fcntl.flock(fh, fcntl.LOCK_SH)

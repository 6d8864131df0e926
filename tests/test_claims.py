"""Row-range claims (less.claims) and the assembly of chunk files of any size (less.gradients.store):
the pieces that let jobs share an extraction and resume it under another ``chunk_size``."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from less.claims import Claims, uncovered
from less.gradients.store import assemble, assembly_plan, done_chunks, write_chunk

ROOT = Path(__file__).resolve().parents[1]


def test_uncovered_against_brute_force():
    rng = random.Random(0)
    for _ in range(500):
        spans = [(a, a + rng.randint(1, 15)) for a in (rng.randint(0, 60) for _ in range(rng.randint(0, 6)))]
        lo = rng.randint(0, 50)
        hi = lo + rng.randint(1, 30)
        got = uncovered(spans, lo, hi)
        free = [r for r in range(lo, hi) if not any(a <= r < b for a, b in spans)]
        assert [r for a, b in got for r in range(a, b)] == free
        assert all(b1 < a2 for (_, b1), (a2, _) in zip(got, got[1:]))  # maximal runs


def claims(tmp_path: Path) -> Claims:
    return Claims(tmp_path / "work" / "claims", tmp_path / "work.lock")


def test_two_jobs_never_claim_the_same_rows(tmp_path):
    a, b = claims(tmp_path), claims(tmp_path)  # two handles: flock is per open file, as in two jobs
    wanted = [(0, 10), (10, 20), (20, 25)]
    with a.locked():
        ca = a.claim("ckpt1", wanted, done=[])
    with b.locked():
        cb = b.claim("ckpt1", wanted, done=[])
        assert sorted(b.busy("ckpt1", wanted, done=[])) == [(0, 10), (10, 20)]
    assert (ca.start, ca.stop, cb.start, cb.stop) == (0, 10, 10, 20)
    with b.locked():  # a finished chunk counts as done; another checkpoint's claims are separate
        cc = b.claim("ckpt1", wanted, done=[(20, 25)])
        assert cc is None
        other = b.claim("ckpt2", wanted, done=[])
        assert (other.start, other.stop) == (0, 10)
    # a finished chunk of another size: only the rest of a wanted chunk is claimed
    with b.locked():
        part = b.claim("ckpt3", [(0, 10)], done=[(0, 4)])
    assert (part.start, part.stop) == (4, 10)
    for c in (ca, cb, other, part):
        a.release(c)
    with a.locked():
        assert a.busy("ckpt1", wanted, done=[]) == []
    assert not list((tmp_path / "work" / "claims").iterdir())


HOLD = """
import sys, time
from pathlib import Path
from less.claims import Claims
c = Claims(Path(sys.argv[1]) / "work" / "claims", Path(sys.argv[1]) / "work.lock")
with c.locked():
    claim = c.claim("ckpt1", [(0, 10), (10, 20)], done=[])
print(claim.start, claim.stop, flush=True)
sys.stdin.readline()  # hold the claim until told
c.release(claim)
print("released", flush=True)
"""


def hold(tmp_path: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.stdout.readline().split() == ["0", "10"]
    return p


def test_a_killed_jobs_claim_is_free_again(tmp_path):
    p = hold(tmp_path)
    c = claims(tmp_path)
    with c.locked():
        assert c.busy("ckpt1", [(0, 20)], done=[]) == [(0, 10)]
        mine = c.claim("ckpt1", [(0, 10), (10, 20)], done=[])
    assert (mine.start, mine.stop) == (10, 20)  # the live job's rows are left to it
    p.send_signal(signal.SIGKILL)
    p.wait()
    with c.locked():  # its claim file is still there, but nobody holds its lock
        assert (tmp_path / "work" / "claims" / "ckpt1-0-10").exists()
        again = c.claim("ckpt1", [(0, 10), (10, 20)], done=[])
    assert (again.start, again.stop) == (0, 10)
    c.release(mine), c.release(again)


def test_waiting_on_a_claim_returns_when_it_is_released(tmp_path):
    p = hold(tmp_path)
    c = claims(tmp_path)
    waiter = threading.Thread(target=c.wait, args=("ckpt1", (0, 10)))
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive()  # blocked while the other job holds the claim
    p.stdin.write("go\n")
    p.stdin.flush()
    assert p.stdout.readline().strip() == "released"
    waiter.join(60)
    assert not waiter.is_alive()
    p.wait()


def write_rows(work: Path, epoch: int, a: int, b: int, dims=(4, 8), dtype="float32") -> None:
    """A chunk whose rows hold their own row index (+ 0.5 so int8 scales are not 0)."""
    rows = np.arange(a, b, dtype=np.float32)[:, None] + 0.5
    write_chunk(work, epoch, {d: np.repeat(rows, d, axis=1) for d in dims}, a, b, dtype)


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_chunks_of_different_sizes_assemble_every_row_once(tmp_path, dtype):
    work, out = tmp_path / "work", tmp_path / "out"
    out.mkdir()
    # a run with chunk_size=100 was killed after two chunks, one with 64 after three (overlapping
    # them), a smaller dim's file exists without the largest (a kill inside write_chunk)
    for a, b in [(0, 100), (100, 200), (0, 64), (64, 128), (128, 192), (192, 250), (250, 300)]:
        write_rows(work, 1, a, b, dtype=dtype)
    write_rows(work, 1, 300, 320, dims=(4,), dtype=dtype)
    assert done_chunks(work, 1, 8)[-1] == (250, 300)
    plan = assembly_plan(work, 1, 8, 300)
    assert [p[:2] for p in plan] == [(0, 100), (100, 200), (200, 250), (250, 300)]
    for d in (4, 8):
        name = assemble(work, out, 1, d, plan, dtype)
        x = np.load(out / name).astype(np.float32)
        if dtype == "int8":
            x = x * np.load(out / name.replace(".npy", ".scale.npy"))[:, None]
        np.testing.assert_allclose(x, np.repeat(np.arange(300, dtype=np.float32)[:, None] + 0.5, d, axis=1),
                                   rtol=1e-2 if dtype == "int8" else 0)
    with pytest.raises(RuntimeError, match="no chunk has rows 300.. of 320"):
        assembly_plan(work, 1, 8, 320)  # rows 300..320 exist only in the smaller dim: not done

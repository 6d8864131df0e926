"""Feature storage: chunk files written as extraction goes (resumable, shardable), assembled into
one memory-mappable array per (checkpoint, dim), in float16/float32 or quantised (int8 with a
per-row scale, or 1 bit per coordinate as in QLESS), and read back as float32 chunk by chunk."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import numpy as np

DTYPES = ("float16", "float32", "int8", "bit")
CHUNK_RE = re.compile(r"^(\d+)-(\d+)\.npy$")


def save_npy_atomic(path: Path, x: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, x)
    os.replace(tmp, path)


def quantize(x: np.ndarray, dtype: str) -> dict[str, np.ndarray]:
    """Arrays to store for float32 rows ``x``: {"": data} plus {".scale": per-row scale} for int8."""
    if dtype in ("float16", "float32"):
        return {"": x.astype(dtype)}
    if dtype == "int8":
        scale = np.abs(x).max(axis=1) / 127.0
        scale[scale == 0] = 1.0
        return {"": np.round(x / scale[:, None]).astype(np.int8), ".scale": scale.astype(np.float32)}
    if dtype == "bit":
        return {"": np.packbits(x > 0, axis=1)}
    raise ValueError(f"unknown storage dtype {dtype!r}")


class NpyRows:
    """Row slices of a 2-D (or 1-D) ``.npy`` file read with plain file reads: unlike a memory map,
    pages read for one chunk do not stay in the process's resident memory."""

    def __init__(self, path: Path):
        self.path = Path(path)
        with open(self.path, "rb") as fh:
            major, _ = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, fortran, self.dtype = read(fh)
            self.offset = fh.tell()
        if fortran:
            raise ValueError(f"{path}: Fortran-ordered arrays are not supported")
        self.shape = shape
        self.row = int(np.prod(shape[1:])) if len(shape) > 1 else 1

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, step = rows.indices(self.shape[0])
        if step != 1:
            raise ValueError("only contiguous row slices")
        n = max(0, stop - start)
        with open(self.path, "rb") as fh:
            fh.seek(self.offset + start * self.row * self.dtype.itemsize)
            x = np.fromfile(fh, dtype=self.dtype, count=n * self.row)
        return x.reshape((n, *self.shape[1:]))


class NpyRowWriter:
    """A 2-D ``.npy`` file filled row by row, in any order, with plain file writes (written rows do
    not stay in the process's resident memory, as a memory map's dirty pages would); ``close``
    checks that every row was written exactly once."""

    def __init__(self, path: Path, n_rows: int, width: int, dtype=np.float32):
        self.path, self.n_rows, self.width, self.dtype = Path(path), n_rows, width, np.dtype(dtype)
        self.fh = open(self.path, "wb+")
        np.lib.format.write_array_header_1_0(self.fh, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                       "fortran_order": False, "shape": (n_rows, width)})
        self.offset = self.fh.tell()
        self.fh.truncate(self.offset + n_rows * width * self.dtype.itemsize)
        self.written = np.zeros(n_rows, dtype=bool)

    def write(self, rows, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, dtype=self.dtype)
        if values.shape != (len(rows), self.width):
            raise ValueError(f"{self.path}: expected {(len(rows), self.width)} values, got {values.shape}")
        for r, i in enumerate(rows):
            if self.written[i]:
                raise ValueError(f"{self.path}: row {i} written twice")
            self.fh.seek(self.offset + int(i) * self.width * self.dtype.itemsize)
            self.fh.write(values[r].tobytes())
            self.written[i] = True

    def close(self) -> None:
        self.fh.close()
        if not self.written.all():
            raise RuntimeError(f"{self.path}: {int((~self.written).sum())} of {self.n_rows} rows never written")


class FeatureArray:
    """Read-only (rows, dim) float32 view of a stored feature array, decoded slice by slice."""

    def __init__(self, path: Path, dtype: str, dim: int):
        self.path, self.dtype, self.dim = Path(path), dtype, dim
        self.data = NpyRows(self.path)
        self.scale = NpyRows(self.path.with_suffix(".scale.npy")) if dtype == "int8" else None
        self.shape = (self.data.shape[0], dim)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        x = self.data[rows]
        if self.dtype == "int8":
            return x.astype(np.float32) * self.scale[rows][:, None]
        if self.dtype == "bit":  # signs, scaled to unit rows
            return (np.unpackbits(x, axis=1, count=self.dim).astype(np.float32) * 2 - 1) / np.sqrt(self.dim)
        return np.asarray(x, dtype=np.float32)

    def __array__(self, dtype=None, copy=None):
        x = self[0: len(self)]
        return x if dtype is None else x.astype(dtype)


def chunk_dir(work: Path, epoch: int, dim: int) -> Path:
    return work / f"ckpt{epoch}" / f"d{dim}"


def chunk_path(work: Path, epoch: int, dim: int, start: int, stop: int) -> Path:
    return chunk_dir(work, epoch, dim) / f"{start:010d}-{stop:010d}.npy"


def write_chunk(work: Path, epoch: int, feats: dict[int, np.ndarray], start: int, stop: int, dtype: str) -> None:
    """Write one chunk's rows for every dim; the largest dim goes last and marks the chunk done."""
    for d in sorted(feats):
        p = chunk_path(work, epoch, d, start, stop)
        p.parent.mkdir(parents=True, exist_ok=True)
        for suffix, arr in quantize(feats[d], dtype).items():
            save_npy_atomic(p.with_suffix(suffix + ".npy") if suffix else p, arr)


def done_chunks(work: Path, epoch: int, dim: int) -> list[tuple[int, int]]:
    """Row spans ``[start, stop)`` of the finished chunk files of a (checkpoint, dim), sorted. With
    the largest dim, these are the finished chunks (of any chunk size: runs with different
    ``datastore.chunk_size`` may have left them)."""
    d = chunk_dir(work, epoch, dim)
    if not d.is_dir():
        return []
    return sorted((int(m[1]), int(m[2])) for f in d.iterdir() if (m := CHUNK_RE.match(f.name)))


def assembly_plan(work: Path, epoch: int, dmax: int, n_rows: int) -> list[tuple[int, int, int, int]]:
    """Which rows of which finished chunk make rows ``[0, n_rows)`` of a checkpoint: (first row,
    last row + 1, chunk start, chunk stop). From each row on, the chunk that has it and reaches
    furthest gives its rows not given yet (fewest pieces), so chunks of different sizes that
    overlap (left by runs with different ``chunk_size``) serve as well as an exact tiling; a row no
    chunk has is an error. One plan (from the largest dim, whose file marks a chunk done) serves
    every dim."""
    spans = done_chunks(work, epoch, dmax)
    parts, pos, i = [], 0, 0
    while pos < n_rows:
        best = None
        while i < len(spans) and spans[i][0] <= pos:
            if best is None or spans[i][1] > best[1]:
                best = spans[i]
            i += 1
        if best is None or best[1] <= pos:
            raise RuntimeError(f"{chunk_dir(work, epoch, dmax)}: no chunk has rows {pos}.. of {n_rows}")
        parts.append((pos, best[1], *best))
        pos = best[1]
    return parts


def assemble(work: Path, out: Path, epoch: int, dim: int, plan: list[tuple[int, int, int, int]], dtype: str) -> str:
    """Write a (checkpoint, dim)'s rows into ``out/ckpt<e>_d<dim>.npy`` from its chunk files, as
    :func:`assembly_plan` says."""
    n_rows = plan[-1][1]
    name = f"ckpt{epoch}_d{dim}.npy"
    paths = [chunk_path(work, epoch, dim, a, b) for _, _, a, b in plan]
    first = np.load(paths[0], mmap_mode="r")
    dst = np.lib.format.open_memmap(out / name, mode="w+", dtype=first.dtype, shape=(n_rows, first.shape[1]))
    scale = np.lib.format.open_memmap(out / name.replace(".npy", ".scale.npy"), mode="w+", dtype=np.float32,
                                      shape=(n_rows,)) if dtype == "int8" else None
    for (lo, hi, a, _), path in zip(plan, paths):
        dst[lo:hi] = np.load(path, mmap_mode="r")[lo - a: hi - a]
        if scale is not None:
            scale[lo:hi] = np.load(path.with_suffix(".scale.npy"))[lo - a: hi - a]
    dst.flush()
    del dst
    if scale is not None:
        scale.flush()
    return name


def read_manifest(datastore_dir: Path) -> dict:
    """A datastore's manifest.json with absolute paths added (``abspath``, ``idspath``)."""
    import json

    man = json.loads((Path(datastore_dir) / "manifest.json").read_text())
    for f in man["files"]:
        f["abspath"] = (Path(datastore_dir) / f["path"]).resolve()
        f["idspath"] = (Path(datastore_dir) / f["ids"]).resolve()
    return man

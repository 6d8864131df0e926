"""Deterministic Rademacher random projection: entry (row, col) of parameter p's matrix is a pure
function of (seed, p, row, col).

Bits come from a counter-based hash (splitmix64-style mixing in int64 tensor ops, logical shifts
emulated by masking), one 64-bit word per (row, 64 columns), so the matrix is identical on CPU and
CUDA, for any batching, chunking or shard, and the first k columns of a d-dim projection are
exactly the k-dim projection: every smaller dim of a sweep comes out of one pass at the largest.
Blocks are generated on the compute device, once per projected batch, in row chunks that are
multiplied in as they are made; a parameter's whole matrix is cached only when it fits the budget.
"""

from __future__ import annotations

import torch

WORD = 64
ROW_CHUNK = 512
_M1, _M2 = -7723592293110705685, -4658895280553007687  # 0x94D049BB133111EB, 0xBF58476D1CE4E5B9
_GOLD = -7046029254386353131                            # 0x9E3779B97F4A7C15
_COL = 0x632BE59BD9B4E019


def _srl(x: torch.Tensor, k: int) -> torch.Tensor:
    return (x >> k) & ((1 << (64 - k)) - 1)


def _mix(x: torch.Tensor) -> torch.Tensor:
    x = x ^ _srl(x, 31)
    x = x * _M1
    x = x ^ _srl(x, 29)
    x = x * _M2
    return x ^ _srl(x, 32)


def param_key(seed: int, param_index: int) -> int:
    k = _mix(torch.tensor([seed * 1_000_003 + param_index], dtype=torch.int64))
    return int(k.item())


_SIGNS: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}


def _signs(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(256, 8): row b holds bit j of byte b as -1 or +1 (bit 0 first)."""
    key = (torch.device(device), dtype)
    if key not in _SIGNS:
        bits = (torch.arange(256)[:, None] >> torch.arange(8)) & 1
        _SIGNS[key] = (bits * 2 - 1).to(device=device, dtype=dtype)
    return _SIGNS[key]


def rademacher_rows(seed: int, param_index: int, row_start: int, row_stop: int, n_cols: int,
                    device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Rows [row_start, row_stop) of parameter ``param_index``'s matrix, first ``n_cols`` columns (+-1).
    Each byte of the hash becomes its 8 signs in one table lookup (one pass writing the matrix,
    where unpacking bits, converting and scaling took five)."""
    rows = torch.arange(row_start, row_stop, dtype=torch.int64, device=device)
    words = torch.arange(-(-n_cols // WORD), dtype=torch.int64, device=device)
    h = _mix(_mix(rows * _GOLD + param_key(seed, param_index))[:, None] + words[None, :] * _COL)
    byte = h.view(torch.uint8).view(len(rows), -1).to(torch.int32)
    return torch.nn.functional.embedding(byte, _signs(device, dtype)).view(len(rows), -1)[:, :n_cols]


class RademacherProjector:
    """Projects per-parameter gradient blocks to ``dim`` unscaled columns (entries +-1)."""

    def __init__(self, dim: int, seed: int, device: torch.device, cache_bytes: int = 2**30):
        self.dim, self.seed, self.device = dim, seed, device
        self.cache_bytes = cache_bytes
        self._cache: dict[int, torch.Tensor] = {}
        self._cached_bytes = 0

    def matrix(self, param_index: int, numel: int) -> torch.Tensor:
        """The whole (numel, dim) matrix (cached if it fits the budget)."""
        if param_index in self._cache:
            return self._cache[param_index]
        m = rademacher_rows(self.seed, param_index, 0, numel, self.dim, self.device)
        if self._cached_bytes + m.numel() * 4 <= self.cache_bytes:
            self._cache[param_index] = m
            self._cached_bytes += m.numel() * 4
        return m

    def project(self, param_index: int, grads: torch.Tensor) -> torch.Tensor:
        """grads (B, numel) for one parameter -> its contribution (B, dim) to the projection."""
        numel = grads.shape[1]
        grads = grads.float()
        if param_index in self._cache or numel * self.dim * 4 + self._cached_bytes <= self.cache_bytes:
            return grads @ self.matrix(param_index, numel)
        out = torch.zeros((grads.shape[0], self.dim), device=grads.device)
        for r0 in range(0, numel, ROW_CHUNK):  # generate and multiply in row chunks
            r1 = min(numel, r0 + ROW_CHUNK)
            out.addmm_(grads[:, r0:r1], rademacher_rows(self.seed, param_index, r0, r1, self.dim, self.device))
        return out

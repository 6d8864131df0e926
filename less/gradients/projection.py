"""Deterministic Rademacher random projection, a pure function of (seed, parameter index, column).

Column block c of parameter i's matrix is drawn from a CPU generator seeded by hash(seed, i, c), so
the projection is the same on CPU and GPU, for any batching or chunking, and the first k columns of
a d-dim projection are exactly the k-dim projection: every smaller dim of a sweep comes out of one
pass at the largest dim.
"""

from __future__ import annotations

import hashlib

import torch

BLOCK_COLS = 256


def block_seed(seed: int, param_index: int, block: int) -> int:
    h = hashlib.sha256(f"less-proj:{seed}:{param_index}:{block}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def rademacher_block(seed: int, param_index: int, block: int, numel: int) -> torch.Tensor:
    g = torch.Generator(device="cpu").manual_seed(block_seed(seed, param_index, block))
    bits = torch.randint(0, 2, (numel, BLOCK_COLS), generator=g, dtype=torch.int8)
    return bits.mul_(2).sub_(1)


class RademacherProjector:
    """Projects per-parameter gradient blocks to ``dim`` unscaled columns (entries +-1)."""

    def __init__(self, dim: int, seed: int, device: torch.device, cache_bytes: int = 2**30):
        self.dim, self.seed, self.device = dim, seed, device
        self.cache_bytes = cache_bytes
        self._cache: dict[int, torch.Tensor] = {}
        self._cached_bytes = 0

    def matrix(self, param_index: int, numel: int) -> torch.Tensor:
        if param_index in self._cache:
            return self._cache[param_index]
        n_blocks = -(-self.dim // BLOCK_COLS)
        m = torch.cat([rademacher_block(self.seed, param_index, b, numel) for b in range(n_blocks)], 1)
        m = m[:, : self.dim].to(self.device, torch.float32)
        if self._cached_bytes + m.numel() * 4 <= self.cache_bytes:
            self._cache[param_index] = m
            self._cached_bytes += m.numel() * 4
        return m

    def project(self, param_index: int, grads: torch.Tensor) -> torch.Tensor:
        """grads (B, numel) for one parameter -> its contribution (B, dim) to the projection."""
        return grads.float() @ self.matrix(param_index, grads.shape[1])

"""Gradient features of a set of examples at one warmup checkpoint.

Per-example gradients arrive module by module during the backward pass; each is mapped at once
(Adam direction for pool features with ``moments``, g / sqrt(v + eps) with ``mapping="precond"``,
identity for plain gradients) and written into
a flat buffer. Every ``projection_batch`` examples (and at the end) the buffer is projected with
the deterministic Rademacher projection at the largest requested dim; every smaller dim is its
column prefix. ``projection=None`` keeps the flat features (small models, tests). Rows are
L2-normalised when asked (cosine scoring), otherwise scaled by 1/sqrt(k) so inner products
estimate the unprojected ones.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from less.data.formats import Encoded
from less.gradients.adam import adam_direction, second_moment_preconditioned
from less.gradients.per_example import PerExampleGradients
from less.gradients.projection import RademacherProjector


def token_budget_batches(lengths: list[int], token_budget: int, max_batch: int) -> list[list[int]]:
    """Indices sorted by length, grouped so that ``longest * count <= token_budget`` (and at most
    ``max_batch``); a single over-long example forms its own batch."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches, cur, width = [], [], 0
    for i in order:
        w = max(width, lengths[i])
        if cur and (w * (len(cur) + 1) > token_budget or len(cur) >= max_batch):
            batches.append(cur)
            cur, w = [], lengths[i]
        cur.append(i)
        width = w
    if cur:
        batches.append(cur)
    return batches


def pad_batch(enc: Encoded, idx: list[int], pad_id: int, device: torch.device):
    width = max(len(enc.input_ids[i]) for i in idx)
    ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
    labels = torch.full((len(idx), width), -100, dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    for r, i in enumerate(idx):
        n = len(enc.input_ids[i])
        ids[r, :n] = torch.tensor(enc.input_ids[i])
        labels[r, :n] = torch.tensor(enc.labels[i])
        mask[r, :n] = 1
    return ids.to(device), mask.to(device), labels.to(device)


class FeatureExtractor:
    """Projected (or flat) per-example gradient features of one model state."""

    def __init__(self, model, *, pad_id: int, dims: list[int] | None, seed: int, device: torch.device,
                 moments: dict | None = None, betas=(0.9, 0.999), eps: float = 1e-8, mapping: str = "adam",
                 token_budget: int = 4096, max_batch: int = 64, projection_batch: int = 64,
                 cache_bytes: int = 2**30):
        model.eval()  # LoRA dropout off while features are taken
        self.model, self.pad_id, self.device = model, pad_id, device
        self.grads = PerExampleGradients(model)
        self.offsets = np.concatenate([[0], np.cumsum(self.grads.numels)]).tolist()
        self.total = self.offsets[-1]
        self.dims = sorted(dims) if dims else None  # None: no projection
        self.projector = RademacherProjector(self.dims[-1], seed, device, cache_bytes) if self.dims else None
        self.betas, self.eps, self.mapping = betas, eps, mapping  # with moments: adam | precond
        self.mv = None
        if moments is not None:
            self.mv = [(moments[n][0].to(device).flatten(), moments[n][1].to(device).flatten())
                       for n in self.grads.names]
        self.token_budget, self.max_batch, self.projection_batch = token_budget, max_batch, projection_batch

    def close(self) -> None:
        self.grads.close()

    def _flat(self, enc: Encoded, idx: list[int]) -> torch.Tensor:
        """(len(idx), total) mapped per-example gradients of one micro-batch."""
        buf = torch.empty((len(idx), self.total), device=self.device)

        def store(p: int, g: torch.Tensor) -> None:
            g = g.flatten(1)
            if self.mv is not None and self.mapping == "precond":
                g = second_moment_preconditioned(g, self.mv[p][1], self.eps)
            elif self.mv is not None:
                g = adam_direction(g, self.mv[p][0], self.mv[p][1], self.betas[0], self.betas[1], self.eps)
            buf[:, self.offsets[p]: self.offsets[p + 1]] = g

        self.grads.run(*pad_batch(enc, idx, self.pad_id, self.device), on_grad=store)
        return buf

    def project(self, flat: torch.Tensor) -> torch.Tensor:
        """(n, total) mapped gradients -> (n, dmax) unscaled features (linear; flat without projection)."""
        if self.projector is None:
            return flat
        out = torch.zeros((flat.shape[0], self.dims[-1]), device=self.device)
        for p in range(len(self.grads.numels)):
            out += self.projector.project(p, flat[:, self.offsets[p]: self.offsets[p + 1]])
        return out

    def raw(self, enc: Encoded, rows: list[int]) -> Iterator[tuple[list[int], torch.Tensor]]:
        """Unnormalised features of ``rows`` of ``enc``: yields (row indices, (n, dmax) features)."""
        batches = token_budget_batches([len(enc.input_ids[i]) for i in rows], self.token_budget, self.max_batch)
        pending_idx, pending = [], []
        for b in batches:
            idx = [rows[i] for i in b]
            pending_idx.extend(idx)
            pending.append(self._flat(enc, idx))
            if len(pending_idx) >= self.projection_batch or b is batches[-1]:
                yield pending_idx, self.project(torch.cat(pending)).cpu()
                pending_idx, pending = [], []

    def unscaled(self, enc: Encoded, rows: list[int]) -> torch.Tensor:
        """(len(rows), dmax) unnormalised features in the order of ``rows``; dim k is the prefix."""
        out = torch.zeros((len(rows), self.dims[-1] if self.dims else self.total))
        where = {r: i for i, r in enumerate(rows)}
        for idx, x in self.raw(enc, rows):
            out[[where[r] for r in idx]] = x
        return out

    def features(self, enc: Encoded, rows: list[int], normalize: bool = True) -> dict[int, np.ndarray]:
        """{dim: (len(rows), dim) float32} in the order of ``rows``."""
        x = self.unscaled(enc, rows)
        return {d: finish(x[:, :d], normalize).numpy() for d in (self.dims or [self.total])}


def finish(x: torch.Tensor, normalize: bool) -> torch.Tensor:
    """Row-normalise (cosine scoring) or scale by 1/sqrt(k) (inner products)."""
    if normalize:
        return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return x / x.shape[1] ** 0.5

"""Gradient features of a set of examples at one warmup checkpoint.

Pool features are Adam directions (``gradient_type: adam``) or plain gradients (``sgd``); target
features are always plain gradients. Each is projected to the largest requested dim once; every
smaller dim is its column prefix. Rows are L2-normalised when asked (cosine scoring), otherwise
scaled by 1/sqrt(k) so inner products estimate the unprojected ones.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from less.data.formats import Encoded
from less.gradients.adam import adam_direction
from less.gradients.per_example import PerExampleGradients
from less.gradients.projection import RademacherProjector


def length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped by similar length (less padding); the caller restores the original order."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]


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


def compute_features(model, enc: Encoded, *, pad_id: int, dims: list[int], seed: int,
                     batch_size: int, device: torch.device, moments=None, betas=(0.9, 0.999),
                     eps: float = 1e-8, normalize: bool = True, desc: str = "features"
                     ) -> dict[int, np.ndarray]:
    """Return {dim: (N, dim) float32 features} in the order of ``enc``."""
    model.eval()  # LoRA dropout off while features are taken
    grads_of = PerExampleGradients(model)
    projector = RademacherProjector(max(dims), seed, device)
    if moments is not None:
        mv = [(moments[n][0].to(device).flatten(), moments[n][1].to(device).flatten())
              for n in grads_of.names]
    out = torch.zeros((len(enc), max(dims)), dtype=torch.float32)
    try:
        for idx in tqdm(length_batches([len(x) for x in enc.input_ids], batch_size), desc=desc,
                        leave=False):
            ids, mask, labels = pad_batch(enc, idx, pad_id, device)
            acc = torch.zeros((len(idx), max(dims)), device=device)
            for p, g in grads_of(ids, mask, labels):
                g = g.flatten(1)
                if moments is not None:
                    g = adam_direction(g, mv[p][0], mv[p][1], betas[0], betas[1], eps)
                acc += projector.project(p, g)
            out[idx] = acc.cpu()
    finally:
        grads_of.close()
    result = {}
    for d in dims:
        x = out[:, :d]
        x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12) if normalize else x / d ** 0.5
        result[d] = x.numpy()
    return result

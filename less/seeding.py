"""Seeding a build: the runner seeds before each one (less.graph), so that an artifact's bytes
depend only on its key."""

from __future__ import annotations

import hashlib
import random

import numpy as np


def seed_everything(kind: str, seed: int | None) -> int:
    """Seed python, numpy and torch (every device) for a build of ``kind``: from the run seed when
    the stage's config holds it (``seed``), else from the kind alone. Both are part of the key, so
    an artifact's bytes depend only on its key; and an ablation (say ``warmup.epochs``) starts its
    warmup from the same LoRA initialisation as the baseline, as in the reference code."""
    import torch

    s = int.from_bytes(hashlib.sha256(f"{kind}:{seed}".encode()).digest()[:4], "little")
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)
    return s

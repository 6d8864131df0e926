"""LESS scores and top-fraction selection.

score(z) = max over subtasks s of  mean over target z' in s of  sum_i w_i <f_i(z), f_i(z')>
with w_i the checkpoints' average learning rates renormalised to sum to 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def checkpoint_weights(lrs: Sequence[float]) -> np.ndarray:
    w = np.asarray(lrs, dtype=np.float64)
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"checkpoint learning rates must be non-negative with a positive sum, got {list(lrs)}")
    return w / w.sum()


def subtask_groups(subtasks: Sequence[str]) -> dict[str, np.ndarray]:
    """Target row indices per subtask, grouped explicitly (in first-seen order)."""
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(subtasks):
        groups.setdefault(s, []).append(i)
    return {s: np.asarray(ix) for s, ix in groups.items()}


def less_scores(pool: Sequence[np.ndarray], target: Sequence[np.ndarray], weights: np.ndarray,
                subtasks: Sequence[str], chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Return (score per pool row, per-subtask mean score (N, S)); pool arrays may be memory-mapped."""
    if not (len(pool) == len(target) == len(weights)):
        raise ValueError("one pool array, one target array and one weight per checkpoint")
    groups = subtask_groups(subtasks)
    n = pool[0].shape[0]
    per_sub = np.empty((n, len(groups)), dtype=np.float32)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        sim = sum(w * (np.asarray(p[start:stop], np.float32) @ np.asarray(t, np.float32).T)
                  for w, p, t in zip(weights, pool, target))
        for j, ix in enumerate(groups.values()):
            per_sub[start:stop, j] = sim[:, ix].mean(1)
    return per_sub.max(1), per_sub


def top_indices(scores: np.ndarray, fraction: float | None, k: int | None,
                n_pool: int | None = None) -> tuple[np.ndarray, int]:
    """One global descending order (ties by index) and how many of its head are selected.

    ``fraction`` is of ``n_pool`` (the whole pool, default: the scored rows), capped at the rows.
    """
    order = np.lexsort((np.arange(len(scores)), -scores))
    if k is not None:
        n_sel = int(k)
    else:
        n_sel = int(round(fraction * (n_pool if n_pool is not None else len(scores))))
    return order, max(1, min(n_sel, len(scores)))

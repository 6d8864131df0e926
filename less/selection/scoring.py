"""LESS scores and top-fraction selection.

score(z) = max over subtasks s of  mean over target z' in s of  sum_i w_i <f_i(z), f_i(z')>
with w_i the checkpoints' average learning rates renormalised to sum to 1.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

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


def subtask_score_chunks(pool: Sequence, target: Sequence[np.ndarray], weights: np.ndarray,
                         subtasks: Sequence[str], chunk: int = 16384) -> Iterator[tuple[int, int, np.ndarray]]:
    """``(start, stop, scores)`` for consecutive pool row chunks, ``scores[r, j]`` = sum over
    checkpoints of w_i x the mean over subtask j's target rows of <f_i(pool row), f_i(target row)>
    (subtasks in first-seen order); the score of a row is the max (or mean) of its row."""
    if not (len(pool) == len(target) == len(weights)):
        raise ValueError("one pool array, one target array and one weight per checkpoint")
    groups = list(subtask_groups(subtasks).values())
    # mean within a subtask = one product with the subtask's mean target row (linearity)
    means = [np.stack([np.asarray(t, np.float32)[ix].mean(0) for ix in groups], 1) for t in target]
    n = len(pool[0])
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        yield start, stop, sum(np.float32(w) * (np.asarray(p[start:stop], np.float32) @ m)
                               for w, p, m in zip(weights, pool, means))


def less_scores(pool: Sequence, target: Sequence[np.ndarray], weights: np.ndarray,
                subtasks: Sequence[str], chunk: int = 16384, reduce: str = "max") -> np.ndarray:
    """Score per pool row, computed chunk by chunk: pool arrays may be memory-mapped (or any
    object whose row slices decode to float32), so peak memory is one chunk plus the scores.
    ``reduce="mean"`` averages over subtasks instead of taking the max (an ablation)."""
    scores = np.empty(len(pool[0]) if len(pool) else 0, dtype=np.float32)
    for start, stop, per_sub in subtask_score_chunks(pool, target, weights, subtasks, chunk):
        scores[start:stop] = per_sub.max(1) if reduce == "max" else per_sub.mean(1)
    return scores


def n_selected(n_scored: int, fraction: float | None, k: int | None, n_pool: int | None = None) -> int:
    """How many to select: ``k``, or ``int(fraction * n_pool)`` (floored, as the reference's
    ``write_selected_data``; ``n_pool`` is the whole pool, default: the scored rows), at least one
    and at most the scored rows."""
    n_sel = int(k) if k is not None else int(fraction * (n_pool if n_pool is not None else n_scored))
    return max(1, min(n_sel, n_scored))


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best scores, best first (ties by index), by partial sort."""
    k = min(k, len(scores))
    part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    # ties at the boundary: argpartition may pick any of them; keep the lowest indices
    cut = scores[part].min()
    part = np.union1d(part[scores[part] > cut], np.flatnonzero(scores == cut))
    part = part[np.lexsort((part, -scores[part]))]
    return part[:k]


def ranking_order(scores: np.ndarray) -> np.ndarray:
    """Every row, best score first, ties by index (the ranking file; its head is the selection)."""
    return np.lexsort((np.arange(len(scores)), -scores))


def aggregate(similarity, subtasks: Sequence[str], reduce: str = "max") -> np.ndarray:
    """score = reduce over subtasks of the mean of ``similarity(target indices)`` over the subtask's
    target examples (``similarity`` returns (N, len(ix)) or, already averaged, (N,)); reduced as
    the subtasks come, so memory is two score vectors whatever the number of subtasks."""
    out, groups = None, subtask_groups(subtasks)
    for ix in groups.values():
        sim = similarity(ix)
        sim = np.asarray(sim.mean(axis=1) if sim.ndim == 2 else sim, dtype=np.float64)
        out = sim if out is None else (np.maximum(out, sim) if reduce == "max" else out + sim)
    return out if reduce == "max" else out / len(groups)

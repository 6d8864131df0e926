"""Selection methods over the selector model's representations (mean-pooled last hidden states,
no LoRA): RDS (cosine to the target, aggregated like LESS) and KCenter (diversity).

- rds: cosine of the selector model's mean-pooled last hidden states;
- kcenter: KMeans + KCenterGreedy over the same representations (``centered_on_target``
  restricts it to the pool examples that share a KMeans cluster with a target example).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from less.selection.registry import Request, Scored, method
from less.selection.scoring import aggregate

if TYPE_CHECKING:
    import torch

    from less.data.formats import Encoded


def mean_pooled(model, enc: "Encoded", pad_id: int, device: "torch.device", token_budget: int = 4096,
                max_batch: int = 64, desc: str = "representations") -> np.ndarray:
    """(N, hidden) float32: the last layer's hidden states averaged over each example's tokens."""
    import torch
    from tqdm.auto import tqdm

    from less.gradients.features import pad_batch, token_budget_batches

    model.eval()
    out = np.zeros((len(enc), model.config.hidden_size), dtype=np.float32)
    with torch.no_grad():
        for idx in tqdm(token_budget_batches([len(x) for x in enc.input_ids], token_budget, max_batch),
                        desc=desc, leave=False):
            ids, mask, _ = pad_batch(enc, idx, pad_id, device)
            hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1].float()
            m = mask.unsqueeze(-1).float()
            out[idx] = ((hidden * m).sum(1) / m.sum(1)).cpu().numpy()
    return out


def cosine_scores(pool_reps: np.ndarray, target_reps: np.ndarray, subtasks: Sequence[str],
                  reduce: str = "max") -> np.ndarray:
    p = pool_reps / np.linalg.norm(pool_reps, axis=1, keepdims=True).clip(1e-12)
    t = target_reps / np.linalg.norm(target_reps, axis=1, keepdims=True).clip(1e-12)
    return aggregate(lambda ix: p @ t[ix].T, subtasks, reduce)


def kcenter_scores(pool_reps: np.ndarray, n_select: int, seed: int, n_clusters: int,
                   target_reps: np.ndarray | None = None) -> np.ndarray:
    """Scores that rank the KCenterGreedy picks first, in pick order; the rest by distance to them.

    Centres start at the pool points nearest the KMeans centroids; each step adds the point
    farthest from every chosen point. With ``target_reps``, KMeans runs over pool and target and
    only pool points in clusters that hold a target example are candidates.
    """
    from sklearn.cluster import KMeans

    x = pool_reps / np.linalg.norm(pool_reps, axis=1, keepdims=True).clip(1e-12)
    candidates = np.arange(len(x))
    if target_reps is not None:
        t = target_reps / np.linalg.norm(target_reps, axis=1, keepdims=True).clip(1e-12)
        k = min(n_clusters, len(x) + len(t))
        labels = KMeans(n_clusters=k, random_state=seed, n_init=3).fit(np.concatenate([x, t])).labels_
        near = np.isin(labels[: len(x)], np.unique(labels[len(x):]))
        if near.sum() >= n_select:
            candidates = np.flatnonzero(near)
    xc = x[candidates]
    k = min(n_clusters, len(xc), n_select)
    km = KMeans(n_clusters=k, random_state=seed, n_init=3).fit(xc)
    start = np.unique([int(np.argmin(((xc - c) ** 2).sum(1))) for c in km.cluster_centers_])
    dist = np.min(((xc[:, None, :] - xc[start][None, :, :]) ** 2).sum(-1), axis=1)
    order = list(start)
    while len(order) < min(n_select, len(xc)):
        nxt = int(np.argmax(dist))
        order.append(nxt)
        dist = np.minimum(dist, ((xc - xc[nxt]) ** 2).sum(1))
    scores = np.full(len(x), -np.inf)
    rest = np.setdiff1d(np.arange(len(xc)), order)
    # picks first (in pick order), then the remaining candidates by distance to the picks, then others
    scores[candidates[order]] = 1e6 - np.arange(len(order))
    scores[candidates[rest]] = dist[rest] - 10.0
    others = np.setdiff1d(np.arange(len(x)), candidates)
    scores[others] = -100.0
    return scores


def _read(reps: Path, split: str) -> tuple[np.ndarray, list[str]]:
    ids = [json.loads(line)["id"] for line in open(reps / f"{split}_ids.jsonl")]
    return np.load(reps / f"{split}.npy"), ids


@method("rds", needs="representations")
def rds_method(req: Request) -> Scored:
    pool, ids = _read(req.representations, "pool")
    target, t_ids = _read(req.representations, "target")
    subtask = {str(r["id"]): r["subtask"] for r in req.target}
    return Scored(cosine_scores(pool, target, [subtask[t] for t in t_ids], req.selection.subtask_reduce), ids)


@method("kcenter", needs="representations")
def kcenter_method(req: Request) -> Scored:
    s = req.selection.kcenter
    pool, ids = _read(req.representations, "pool")
    target = _read(req.representations, "target")[0] if s.centered_on_target else None
    return Scored(kcenter_scores(pool, req.n_select(len(ids)), req.seed, s.n_clusters, target), ids)

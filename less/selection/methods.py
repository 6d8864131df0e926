"""Selection baselines. Each returns one score per pool example (higher = selected first), so every
method shares LESS's ranking, selection and reporting; target-based ones aggregate like LESS (mean
over a subtask's target examples, then max over subtasks).

- random: seeded uniform scores; full: every example;
- length: the response length (characters of the assistant turns);
- bm25: target examples as BM25 queries over the pool (bm25s);
- dsir: DSIR importance weights from hashed unigram+bigram features, log p_target(x) - log p_pool(x)
  (Xie et al. 2023), top by weight or, with ``resample``, a seeded Gumbel-top-k sample;
- rds: cosine of the selector model's mean-pooled last hidden states;
- kcenter: KMeans + KCenterGreedy over the same representations (diversity; ``centered_on_target``
  restricts it to the pool examples that share a KMeans cluster with a target example).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from less.selection.scoring import subtask_groups

Example = dict[str, Any]


def example_text(ex: Example) -> str:
    if "messages" in ex:
        return "\n".join(m["content"] for m in ex["messages"])
    return ex["prompt"] + ex["completion"]


def response_text(ex: Example) -> str:
    if "messages" in ex:
        return "\n".join(m["content"] for m in ex["messages"] if m["role"] == "assistant")
    return ex["completion"]


def aggregate(similarity: Callable[[np.ndarray], np.ndarray], subtasks: Sequence[str], reduce: str = "max"
              ) -> np.ndarray:
    """score = reduce over subtasks of the mean of ``similarity(target indices)`` (N,) over the subtask."""
    per_sub = []
    for ix in subtask_groups(subtasks).values():
        sim = similarity(ix)
        per_sub.append(sim.mean(axis=1) if sim.ndim == 2 else sim)
    stack = np.stack(per_sub, 1)
    return stack.max(1) if reduce == "max" else stack.mean(1)


def random_scores(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(n)


def length_scores(pool: Sequence[Example]) -> np.ndarray:
    return np.array([len(response_text(ex)) for ex in pool], dtype=np.float64)


def bm25_scores(pool: Sequence[Example], target: Sequence[Example], subtasks: Sequence[str],
                reduce: str = "max") -> np.ndarray:
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([example_text(ex) for ex in pool], stopwords=None, return_ids=False,
                                   show_progress=False), show_progress=False)
    queries = bm25s.tokenize([example_text(ex) for ex in target], stopwords=None, return_ids=False,
                             show_progress=False)

    def sim(ix: np.ndarray) -> np.ndarray:  # (N,) mean over this subtask's queries
        return np.mean([retriever.get_scores(queries[i]) for i in ix], axis=0)

    return aggregate(sim, subtasks, reduce)


WORD = re.compile(r"\w+")


def hashed_ngrams(text: str, buckets: int) -> np.ndarray:
    """DSIR features: counts of hashed unigrams and bigrams of the lower-cased words."""
    words = WORD.findall(text.lower())
    grams = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
    ids = np.fromiter((zlib.crc32(g.encode()) % buckets for g in grams), dtype=np.int64, count=len(grams))
    return np.bincount(ids, minlength=buckets)


def dsir_scores(pool: Sequence[Example], target: Sequence[Example], buckets: int = 10000,
                resample: bool = False, seed: int = 0) -> np.ndarray:
    pool_counts = np.stack([hashed_ngrams(example_text(ex), buckets) for ex in pool]).astype(np.float64)
    target_counts = sum(hashed_ngrams(example_text(ex), buckets) for ex in target).astype(np.float64)
    log_p = np.log((target_counts + 1) / (target_counts.sum() + buckets))  # add-one smoothing
    q = pool_counts.sum(0)
    log_q = np.log((q + 1) / (q.sum() + buckets))
    logw = pool_counts @ (log_p - log_q)
    if resample:  # sampling without replacement proportional to the weights (Gumbel top-k)
        logw = logw + np.random.default_rng(seed).gumbel(size=len(logw))
    return logw


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

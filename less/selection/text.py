"""Selection methods that read only the text: random, full, length, BM25 and DSIR. Each returns one
score per pool example (higher = selected first); target-based ones aggregate like LESS (mean over
a subtask's target examples, then max over subtasks).

- random: seeded uniform scores; full: every example;
- length: the response length (characters of the assistant turns);
- bm25: target examples as BM25 queries over the pool (bm25s);
- dsir: DSIR importance weights from hashed unigram+bigram features, log p_target(x) - log p_pool(x)
  (Xie et al. 2023), top by weight or, with ``resample``, a seeded Gumbel-top-k sample.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from less.selection.registry import Request, Scored, method
from less.selection.scoring import aggregate

Example = dict[str, Any]


def example_text(ex: Example) -> str:
    if "messages" in ex:
        return "\n".join(m["content"] for m in ex["messages"])
    return ex["prompt"] + ex["completion"]


def response_text(ex: Example) -> str:
    if "messages" in ex:
        return "\n".join(m["content"] for m in ex["messages"] if m["role"] == "assistant")
    return ex["completion"]


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


def _subtasks(req: Request) -> list[str]:
    return [r["subtask"] for r in req.target]


@method("random", target_free=True)
def random_method(req: Request) -> np.ndarray:
    return random_scores(len(req.pool), req.seed)


@method("full", target_free=True)
def full_method(req: Request) -> Scored:
    return Scored(np.zeros(len(req.pool)), n_selected=len(req.pool))


@method("length", target_free=True)
def length_method(req: Request) -> np.ndarray:
    return length_scores(req.pool)


@method("bm25")
def bm25_method(req: Request) -> np.ndarray:
    return bm25_scores(req.pool, req.target, _subtasks(req), req.selection.subtask_reduce)


@method("dsir")
def dsir_method(req: Request) -> np.ndarray:
    d = req.selection.dsir
    return dsir_scores(req.pool, req.target, d.buckets, d.resample, req.seed)

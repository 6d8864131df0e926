"""Selection methods that read only the text: random, full, length, BM25 and DSIR. Each returns one
score per pool example (higher = selected first); target-based ones aggregate like LESS (mean over
a subtask's target examples, then max over subtasks).

- random: seeded uniform scores; full: every example;
- length: the response length (characters of the assistant turns);
- bm25: target examples as BM25 queries over the pool (bm25s);
- dsir: DSIR (Xie et al. 2023): importance weights log p_target(x) - log p_pool(x) over hashed
  unigram+bigram counts, then importance resampling (seeded Gumbel top-k, the default) or the top
  by weight (``resample: false``).
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import Any

import numpy as np
from omegaconf import DictConfig

from less.errors import ConfigError
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
    """BM25 (bm25s, its default Lucene variant) of each target example as a query over the pool,
    tokenized as ``bm25s.tokenize`` does (lower-cased ``\\w\\w+`` words, no stopwords or stemming).
    Documents are held as compact int32 token arrays and each subtask's scores are accumulated query
    by query, so memory is the index plus a few score vectors whatever the number of queries."""
    import bm25s
    from bm25s.tokenization import Tokenizer

    tok = Tokenizer(lower=True, stopwords=None)
    docs = [array("i", ids) for ids in tok.streaming_tokenize((example_text(ex) for ex in pool), update_vocab=True)]
    retriever = bm25s.BM25()
    retriever.index((docs, tok.get_vocab_dict()), show_progress=False)
    del docs
    # words the pool never uses score nothing (bm25s drops them from a query as well)
    queries = list(tok.streaming_tokenize([example_text(ex) for ex in target], update_vocab=False))

    def sim(ix: np.ndarray) -> np.ndarray:  # (N,) mean over this subtask's queries
        acc = np.zeros(len(pool), dtype=np.float64)
        for i in ix:
            acc += retriever.get_scores(queries[i])
        return acc / len(ix)

    return aggregate(sim, subtasks, reduce)


# DSIR's tokens: nltk's WordPunctTokenizer pattern (runs of word characters, runs of punctuation)
DSIR_TOKENS = r"\w+|[^\w\s]+"
DSIR_EPS = 1e-8  # inside both logs, as the DSIR package


def ngram_vectorizer(buckets: int):
    """Counts of hashed unigrams and bigrams of the lower-cased tokens, as a sparse matrix."""
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(n_features=buckets, ngram_range=(1, 2), token_pattern=DSIR_TOKENS, lowercase=True,
                             alternate_sign=False, norm=None, dtype=np.float32)


def dsir_weights(pool: Sequence[Example], target: Sequence[Example], buckets: int = 10000,
                 target_smoothing: float = 1.0, chunk: int = 8192) -> np.ndarray:
    """log importance weights: sum over an example's hashed n-grams of log p_target - log p_pool,
    with p the bucket frequencies of the target (plus ``target_smoothing`` per bucket) and of the
    pool. The pool is hashed ``chunk`` examples at a time; each chunk's sparse counts are kept in
    compact form (uint16 buckets and counts where they fit: 4 bytes per distinct n-gram bucket of
    an example) until the pool's frequencies are known."""
    hv = ngram_vectorizer(buckets)
    t = np.asarray(hv.transform([example_text(ex) for ex in target]).sum(0), dtype=np.float64).ravel()
    t += target_smoothing
    blocks, q = [], np.zeros(buckets)
    for s in range(0, len(pool), chunk):
        x = hv.transform([example_text(ex) for ex in pool[s: s + chunk]])
        q += np.bincount(x.indices, weights=x.data, minlength=buckets)
        counts = x.data.astype(np.uint16 if x.nnz == 0 or x.data.max() < 2**16 else np.uint32)
        blocks.append((np.diff(x.indptr), x.indices.astype(np.uint16 if buckets <= 2**16 else np.int32), counts))
    log_diff = np.log(t / t.sum() + DSIR_EPS) - np.log(q / max(q.sum(), 1.0) + DSIR_EPS)
    out = []
    for lengths, indices, counts in blocks:  # each row's sum of count x log ratio
        rows = np.repeat(np.arange(len(lengths)), lengths)
        out.append(np.bincount(rows, weights=counts * log_diff[indices], minlength=len(lengths)))
    return np.concatenate(out) if out else np.zeros(0)


def dsir_scores(pool: Sequence[Example], target: Sequence[Example], buckets: int = 10000,
                resample: bool = True, seed: int = 0, target_smoothing: float = 1.0) -> np.ndarray:
    """DSIR scores: with ``resample`` (DSIR's importance resampling), the log weights plus seeded
    Gumbel noise, whose top k is a sample of k examples without replacement with probabilities
    proportional to the weights; else the log weights themselves (top k by weight)."""
    logw = dsir_weights(pool, target, buckets, target_smoothing)
    if resample:
        logw = logw + np.random.default_rng(seed).gumbel(size=len(logw))
    return logw


def _subtasks(req: Request) -> list[str]:
    return [r["subtask"] for r in req.target]


@method("random", target_free=True)
def random_method(req: Request) -> np.ndarray:
    return random_scores(len(req.pool), req.seed)


@method("full", target_free=True, scored=False)
def full_method(req: Request) -> Scored:
    return Scored(np.zeros(len(req.pool)), n_selected=len(req.pool))


@method("length", target_free=True)
def length_method(req: Request) -> np.ndarray:
    return length_scores(req.pool)


@method("bm25")
def bm25_method(req: Request) -> np.ndarray:
    return bm25_scores(req.pool, req.target, _subtasks(req), req.selection.subtask_reduce)


def check_dsir(cfg: DictConfig) -> None:
    d = cfg.selection.dsir
    if not isinstance(d.buckets, int) or isinstance(d.buckets, bool) or d.buckets < 1:
        raise ConfigError(f"selection.dsir.buckets must be a positive integer, got {d.buckets!r}")
    if not isinstance(d.resample, bool):
        raise ConfigError(f"selection.dsir.resample must be true or false, got {d.resample!r}")
    ts = d.target_smoothing
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or ts < 0:
        raise ConfigError(f"selection.dsir.target_smoothing must be a number >= 0, got {d.target_smoothing!r}")


@method("dsir", check=check_dsir)
def dsir_method(req: Request) -> np.ndarray:
    d = req.selection.dsir
    return dsir_scores(req.pool, req.target, d.buckets, d.resample, req.seed, d.target_smoothing)

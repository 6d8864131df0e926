"""Held-out target items planted in the pool (``plant.*``; ``experiment=planted`` on the embedded
default, ``planted_small`` on real data): a check of a model, pool and selection method before
the full pipeline. ``plant.n`` items of the target's test split (never D_val) join the pool in a
rendering (``plant.rendering``):

- ``dval``: asked and answered as D_val asks (MMLU: the subject header, the question, lettered
  choices and "Answer:"; answered "The answer is: C");
- ``chat``: a plain chat turn, the question alone answered with the answer's text.

Each planted row has id ``planted_<k>``, source (``dataset``) ``planted``, ``planted: true`` and
the test item's own id (``source_id``). Which items: a seeded draw (``plant.seed``) spread over the
target's subtasks in turn; where: seeded positions in the pool, whose own order is kept. After a
selection, :func:`recovery` reports precision@k (k = the number planted) against the base rate.

Held-out items exist for ``target.kind`` mmlu (its test CSVs under ``data.root``) and synthetic
(its lm-eval test questions); :data:`HELD_OUT` maps a kind to its reader.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from omegaconf import DictConfig

from less.errors import ConfigError, DataError

RENDERINGS = ("dval", "chat")
MMLU_TEST = ["mmlu/test/*", "eval/mmlu/test/*", "data/eval/mmlu/test/*"]


@dataclass(frozen=True)
class Item:
    """One held-out test item: D_val's form of it (user turn, assistant prefix, completion) and its
    plain form (the question alone, the answer's text)."""

    id: str
    subtask: str
    user: str
    prefix: str
    completion: str
    question: str
    answer: str


def render(item: Item, rendering: str) -> list[dict[str, str]]:
    if rendering == "dval":
        reply = (item.prefix + item.completion).strip()
        return [{"role": "user", "content": item.user}, {"role": "assistant", "content": reply}]
    if rendering == "chat":
        return [{"role": "user", "content": item.question}, {"role": "assistant", "content": item.answer}]
    raise ConfigError(f"plant.rendering: unknown rendering {rendering!r}; choose from {', '.join(RENDERINGS)}")


def mmlu_items(target_cfg: DictConfig, data_cfg: DictConfig) -> list[Item]:
    from less.data.formats import read_csv
    from less.data.locate import data_root, find
    from less.data.targets import mmlu_user

    root = data_root(data_cfg, "the MMLU test questions", MMLU_TEST)
    test = find(root, ["mmlu/test", "eval/mmlu/test", "data/eval/mmlu/test"], "MMLU test CSVs")
    items = []
    for f in sorted(test.glob("*_test.csv")):
        subject = f.name.removesuffix("_test.csv")
        for i, row in enumerate(read_csv(f)):
            letter = row[5].strip() if len(row) == 6 else ""
            if letter not in ("A", "B", "C", "D"):
                raise DataError(f"{f}:{i + 1}: expected question, 4 choices and an answer letter")
            items.append(Item(f"mmlu_test_{subject}_{i}", subject, mmlu_user(subject, row), "The answer is:",
                              " " + letter, row[0].strip(), row[1 + "ABCD".index(letter)].strip()))
    if not items:
        raise DataError(f"{test}: no *_test.csv files (set by data.root)")
    return items


def synthetic_items(target_cfg: DictConfig, data_cfg: DictConfig) -> list[Item]:
    from less.data.synthetic import eval_questions

    return [Item(f"eval_{i}", "four_words", q, "", f"Answer: {color}.", q, color)
            for i, (q, color, _) in enumerate(eval_questions(target_cfg.n_eval, target_cfg.seed))]


def _mmlu_reads(target_cfg: DictConfig, data_cfg: DictConfig) -> dict[str, Any]:
    from less.identity import data_id

    return {"data": data_id(data_cfg, MMLU_TEST)}


# target.kind -> (its held-out test items, what they depend on: the target settings the reader
# uses and the files it reads, by content (less.identity); they enter the pool's key)
HELD_OUT: dict[str, tuple[Callable[[DictConfig, DictConfig], list[Item]], Callable[[DictConfig, DictConfig], dict]]] = {
    "mmlu": (mmlu_items, _mmlu_reads),
    "synthetic": (synthetic_items, lambda t, d: {"n_eval": t.n_eval, "seed": t.seed}),
}


def check(cfg: DictConfig) -> None:
    """``plant.*``: a count, a known rendering, a target with held-out items, and no evaluation on
    the test set the pool now holds items of."""
    p = cfg.get("plant")
    if p is None:
        return
    unknown = sorted(set(p) - {"n", "rendering", "seed"})
    if unknown:
        raise ConfigError(f"plant: unknown key(s) {unknown}; plant takes n, rendering, seed")
    if not isinstance(p.n, int) or isinstance(p.n, bool) or p.n < 0:
        raise ConfigError(f"plant.n must be a whole number >= 0, got {p.n!r}")
    if p.rendering not in RENDERINGS:
        raise ConfigError(f"plant.rendering: unknown rendering {p.rendering!r}; choose from {', '.join(RENDERINGS)}")
    if not p.n:
        return
    if cfg.target.kind not in HELD_OUT:
        raise ConfigError(f"plant.n={p.n}: target.kind={cfg.target.kind} has no held-out items to plant; "
                          f"planting works with target.kind {', '.join(sorted(HELD_OUT))}")
    tainted = [s for s in ("eval", "validate") if s in cfg.stages]
    if tainted:
        raise ConfigError(f"plant.n={p.n}: the pool holds test items of {cfg.target.name}, so stages {tainted} "
                          "would score a model on items it may have trained on; end stages at select")


def spec(cfg: DictConfig) -> dict[str, Any] | None:
    """What the planted rows depend on (None when nothing is planted: the pool's key is unchanged)."""
    p = cfg.get("plant")
    if p is None or not p.n:
        return None
    reads = HELD_OUT[cfg.target.kind][1](cfg.target, cfg.data)
    return {"n": p.n, "rendering": p.rendering, "seed": p.seed, "target_kind": cfg.target.kind,
            "skill": cfg.target.get("skill"), "reads": reads}


def sample(items: list[Item], n: int, seed: int) -> list[Item]:
    """``n`` items drawn in turn from the subtasks (seeded order of subtasks and of items in each)."""
    if n > len(items):
        raise ConfigError(f"plant.n={n}: the target's test split has only {len(items)} items")
    rng = random.Random(f"plant-{seed}")
    by: dict[str, list[Item]] = {}
    for it in items:
        by.setdefault(it.subtask, []).append(it)
    subtasks = sorted(by)
    rng.shuffle(subtasks)
    for s in subtasks:
        rng.shuffle(by[s])
    out: list[Item] = []
    while len(out) < n:
        for s in subtasks:
            if by[s] and len(out) < n:
                out.append(by[s].pop())
    return out


def plant(pool: list[dict[str, Any]], cfg: DictConfig) -> list[dict[str, Any]]:
    """The pool with ``plant.n`` held-out items inserted at seeded positions (its own order kept)."""
    p = cfg.plant
    items = sample(HELD_OUT[cfg.target.kind][0](cfg.target, cfg.data), p.n, p.seed)
    skill = cfg.target.get("skill")  # the synthetic pool labels every row with its skill
    rows = [{"id": f"planted_{k}", "dataset": "planted", "planted": True, "subtask": it.subtask,
             "source_id": it.id, **({"skill": skill} if skill else {}), "messages": render(it, p.rendering)}
            for k, it in enumerate(items)]
    taken = {str(r["id"]) for r in pool} & {r["id"] for r in rows}
    if taken:
        raise DataError(f"plant: the pool already has id(s) {sorted(taken)[:3]}; planted rows are named planted_<k>")
    rng = random.Random(f"plant-positions-{p.seed}")
    at = set(rng.sample(range(len(pool) + len(rows)), len(rows)))
    out, planted, rest = [], iter(rows), iter(pool)
    for i in range(len(pool) + len(rows)):
        out.append(next(planted) if i in at else next(rest))
    return out


def recovery(ranked: list[str], planted: set[str], n_selected: int, seed: int = 0) -> dict[str, Any]:
    """Precision@k of a ranking (k = the number planted) with a 95% bootstrap interval over its top
    k, against the base rate (the planted share of the ranked pool); the planted items among the
    selected, and their mean rank percentile (0 = first) with a bootstrap interval over the items."""
    from less.stats import bootstrap_mean

    k = len(planted)
    pos = {i: r for r, i in enumerate(ranked)}
    top = np.array([i in planted for i in ranked[:k]], dtype=np.float64)
    # a planted item the method could not rank (no labelled token) counts as ranked last
    pct = np.array([pos.get(i, len(ranked)) / max(1, len(ranked)) for i in sorted(planted)], dtype=np.float64)
    base = sum(i in planted for i in ranked) / len(ranked)  # what a random order of the ranked rows gives
    precision = float(top.mean())
    (lo, hi), (plo, phi) = bootstrap_mean(top, seed), bootstrap_mean(pct, seed)
    return {"n": k, "k": k, "hits": int(top.sum()), "precision": precision, "ci_low": lo, "ci_high": hi,
            "base_rate": base, "lift": precision / base,
            "in_selection": sum(i in planted for i in ranked[:n_selected]), "n_selected": n_selected,
            "mean_rank_percentile": float(pct.mean()), "rank_percentile_ci_low": plo, "rank_percentile_ci_high": phi}

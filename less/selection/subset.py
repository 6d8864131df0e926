"""``subset``: the k-th seeded random subset of the pool, for counterfactual validation (the
validate step trains on M of them; docs/selection-methods.md). Scores are uniform draws from
``numpy.random.default_rng([seed, 1 + index])``: a stream of its own for every subset index,
independent of the ``random`` method's ``default_rng(seed)`` (the control whose LDS must be ~0),
so the top ``fraction`` is a uniform random subset of that size."""

from __future__ import annotations

import numpy as np
from omegaconf import DictConfig

from less.errors import require
from less.selection.registry import Request, method


def check(cfg: DictConfig) -> None:
    i = cfg.selection.get("index")
    require(isinstance(i, int) and not isinstance(i, bool) and i >= 0,
            f"selection.index must be a non-negative integer (which random subset), got {i!r}")


def subset_scores(n: int, seed: int, index: int) -> np.ndarray:
    return np.random.default_rng([seed, 1 + index]).random(n)


@method("subset", target_free=True, check=check)
def subset_method(req: Request) -> np.ndarray:
    s, n = req.selection, len(req.pool)
    require(s.k is not None or int(s.fraction * n) >= 1,
            f"selection.fraction (validate.alpha) = {s.fraction} of a pool of {n} is less than one example")
    return subset_scores(n, req.seed, s.index)

"""The statistics a comparison of selections reports: paired differences with their standard
error, seeded bootstrap intervals, Spearman correlation and the linear datamodeling score (LDS).

- ``paired(a, b)``: per-example differences ``d_i = a_i - b_i`` of two runs evaluated on the same
  examples; mean, standard error ``sd(d, ddof=1) / sqrt(n)`` and a seeded percentile bootstrap
  95% interval of the mean (resampling examples).
- ``spearman(x, y)``: Pearson correlation of the average ranks (ties share their mean rank).
- ``lds(scores, members, losses)``: TRAK's linear datamodeling score as this harness uses it: over
  M subsets S_k of the pool, the Spearman correlation between the subset's summed score
  ``sum_{i in S_k} score_i`` (what the method predicts) and ``-loss_k`` (the target loss measured
  after training on S_k: lower loss = better), with a bootstrap interval over subsets.

Every interval draws from ``numpy.random.default_rng(seed)``: the same inputs and seed give the
same interval, bit for bit. Pure numpy; no torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from less.errors import ConfigError

BOOTSTRAP = 2000  # resamples of every interval unless told otherwise
LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A statistic with its standard error (NaN where none applies) and bootstrap interval over ``n``
    units (examples or subsets)."""

    value: float
    stderr: float
    ci_low: float
    ci_high: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        return bool(self.ci_low > 0 or self.ci_high < 0)

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _interval(stats: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.quantile(stats, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def bootstrap_mean(x: np.ndarray, seed: int, n_boot: int = BOOTSTRAP, level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``x`` (resampling its entries)."""
    x = np.asarray(x, dtype=np.float64)
    idx = np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))
    return _interval(x[idx].mean(axis=1), level)


def paired(a, b, seed: int = 0, n_boot: int = BOOTSTRAP, level: float = LEVEL) -> Estimate:
    """Mean of ``a - b`` over the same examples, its standard error and bootstrap interval."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"paired: need two equal-length vectors of at least 2 examples, got {a.shape} and {b.shape}")
    d = a - b
    lo, hi = bootstrap_mean(d, seed, n_boot, level)
    return Estimate(float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))), lo, hi, len(d))


def ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (1-based; ties share their mean rank) along the last axis."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, axis=-1, kind="stable")
    sorted_x = np.take_along_axis(x, order, axis=-1)
    n = x.shape[-1]
    out = np.empty_like(x)
    for idx in np.ndindex(x.shape[:-1]):
        s, o = sorted_x[idx], order[idx]
        r = np.empty(n)
        start = 0
        while start < n:
            end = start
            while end + 1 < n and s[end + 1] == s[start]:
                end += 1
            r[start:end + 1] = (start + end) / 2 + 1
            start = end + 1
        out[idx][o] = r
    return out


def _finite(name: str, x: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(x))
    if len(bad):
        raise ValueError(f"{name}: {len(bad)} value(s) not finite, first at position {int(bad[0])} ({x[bad[0]]})")


def spearman(x, y) -> float:
    """Spearman's rank correlation of ``x`` and ``y``; NaN when either is constant. A NaN or an
    infinity in either raises ValueError (it would take a rank of its own and give a plausible value)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    _finite("spearman x", x)
    _finite("spearman y", y)
    return _spearman(x, y)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """``spearman`` on inputs already checked finite (the LDS's bootstrap resamples)."""
    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / den) if den > 0 else float("nan")


def subset_sums(scores, members) -> np.ndarray:
    """``members @ scores``: each subset's summed score (``members``: M x N, 1 where example i is in S_k)."""
    return np.asarray(members, dtype=np.float64) @ np.asarray(scores, dtype=np.float64)


def lds(scores, members, losses, seed: int = 0, n_boot: int = BOOTSTRAP, level: float = LEVEL) -> Estimate:
    """Linear datamodeling score: Spearman(summed score of S_k, -loss_k) over the M subsets, with a
    percentile bootstrap interval over subsets (resamples where either side is constant are
    dropped); ``stderr`` is the bootstrap standard deviation."""
    members, losses = np.asarray(members), np.asarray(losses, dtype=np.float64)
    if members.ndim != 2 or members.shape[0] != len(losses) or members.shape[1] != len(scores):
        raise ValueError(f"lds: members must be M x N with M = {len(losses)} losses and N = {len(scores)} scores, "
                         f"got {members.shape}")
    if len(losses) < 3:
        raise ConfigError(f"lds: needs at least 3 subsets, got {len(losses)}")
    _finite("lds scores", np.asarray(scores, dtype=np.float64))
    _finite("lds subset losses", losses)
    pred, actual = subset_sums(scores, members), -losses
    value = _spearman(pred, actual)
    idx = np.random.default_rng(seed).integers(0, len(losses), size=(n_boot, len(losses)))
    boot = np.array([_spearman(pred[i], actual[i]) for i in idx])
    boot = boot[np.isfinite(boot)]
    lo, hi = _interval(boot, level) if len(boot) else (float("nan"), float("nan"))
    return Estimate(value, float(boot.std(ddof=1)) if len(boot) > 1 else float("nan"), lo, hi, len(losses))

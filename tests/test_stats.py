"""less.stats against direct computations: paired standard error, seeded bootstrap, Spearman, LDS."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from less.errors import ConfigError
from less.stats import bootstrap_mean, lds, paired, ranks, spearman


def test_paired_stderr_is_the_direct_numpy_one():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=200), rng.normal(size=200)
    got = paired(a, b, seed=1)
    d = a - b
    assert got.value == pytest.approx(d.mean(), abs=1e-15)
    assert got.stderr == pytest.approx(np.sqrt(((d - d.mean()) ** 2).sum() / (len(d) - 1) / len(d)), rel=1e-12)
    assert got.n == 200 and got.ci_low < got.value < got.ci_high
    # the percentile interval of the mean is close to mean +- 1.96 s.e. for 200 normal draws
    assert got.ci_high - got.ci_low == pytest.approx(2 * 1.96 * got.stderr, rel=0.15)


def test_bootstrap_is_seeded_and_reproducible():
    x = np.random.default_rng(0).exponential(size=50)
    assert bootstrap_mean(x, seed=7) == bootstrap_mean(x, seed=7)
    assert bootstrap_mean(x, seed=7) != bootstrap_mean(x, seed=8)
    a, b = x, x[::-1]
    assert paired(a, b, seed=5) == paired(a.copy(), b.copy(), seed=5)
    m = (np.random.default_rng(1).random((10, 40)) < 0.5)
    s = np.random.default_rng(2).normal(size=40)
    y = np.random.default_rng(3).normal(size=10)
    assert lds(s, m, y, seed=4) == lds(s, m, y, seed=4)


def test_ranks_and_spearman_match_scipy_with_ties():
    rng = np.random.default_rng(11)
    x = rng.integers(0, 6, size=40).astype(float)  # many ties
    y = x + rng.normal(size=40)
    assert ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert spearman(x, y) == pytest.approx(spearmanr(x, y)[0], abs=1e-12)
    assert np.isnan(spearman(np.ones(5), np.arange(5.0)))


def test_lds_is_one_for_a_planted_linear_datamodel():
    rng = np.random.default_rng(0)
    theta = rng.normal(size=300)  # each example's additive effect on -loss
    members = rng.random((32, 300)) < 0.5
    losses = 2.0 - members @ theta  # the loss after training on S_k: exactly additive
    got = lds(theta, members, losses, seed=0)
    assert got.value == pytest.approx(1.0) and got.ci_low == pytest.approx(1.0) and got.n == 32
    # monotone transforms of the effects keep it at 1 (a rank statistic); the opposite sign is -1
    assert lds(theta, members, np.exp(-(members @ theta) / 10), seed=0).value == pytest.approx(1.0)
    assert lds(-theta, members, losses, seed=0).value == pytest.approx(-1.0)


def test_lds_of_random_scores_is_near_zero():
    rng = np.random.default_rng(1)
    theta = rng.normal(size=300)
    # subsets of one size, as the validate step draws them (sizes that vary would correlate any
    # positive scores' sums with the subset's size)
    members = np.argsort(rng.random((32, 300)), axis=1) < 150
    losses = 2.0 - members @ theta + rng.normal(scale=0.5, size=32)
    values = [lds(np.random.default_rng(100 + i).random(300), members, losses, seed=i, n_boot=200) for i in range(40)]
    assert abs(np.mean([v.value for v in values])) < 0.08  # s.d. of one ~ 1/sqrt(31) = 0.18; of the mean ~0.03
    covered = sum(v.ci_low <= 0 <= v.ci_high for v in values)
    assert covered >= 34  # a 95% interval covers the true 0 in most of 40 draws
    assert lds(theta, members, losses, seed=0).ci_low > 0.5  # the true effects, with noise, are still found


def test_bad_input():
    with pytest.raises(ConfigError, match="at least 3 subsets"):
        lds(np.ones(4), np.ones((2, 4)), [1.0, 2.0])
    with pytest.raises(ValueError, match="M x N"):
        lds(np.ones(4), np.ones((3, 5)), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="equal-length"):
        paired([1.0, 2.0], [1.0, 2.0, 3.0])
    # a NaN would take a rank of its own and give a plausible correlation
    with pytest.raises(ValueError, match="lds subset losses: 1 value.* not finite, first at position 1"):
        lds(np.arange(4.0), np.eye(4)[:3], [1.0, np.nan, 2.0])
    with pytest.raises(ValueError, match="lds scores: .* not finite"):
        lds(np.array([1.0, np.inf, 0.0, 2.0]), np.eye(4)[:3], [1.0, 3.0, 2.0])
    with pytest.raises(ValueError, match="spearman x"):
        spearman([1.0, np.nan, 2.0], [1.0, 2.0, 3.0])

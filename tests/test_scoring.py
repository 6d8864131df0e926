"""LESS scoring against a brute-force loop, and top-fraction selection."""

from __future__ import annotations

import numpy as np
import pytest

from less.selection.scoring import checkpoint_weights, less_scores, n_selected, ranking_order, top_k


def brute_force(pool, target, lrs, subtasks):
    w = [x / sum(lrs) for x in lrs]
    n = pool[0].shape[0]
    scores = []
    for z in range(n):
        best = -np.inf
        for s in dict.fromkeys(subtasks):
            members = [j for j, t in enumerate(subtasks) if t == s]
            total = 0.0
            for j in members:
                total += sum(w[i] * float(np.dot(pool[i][z], target[i][j])) for i in range(len(lrs)))
            best = max(best, total / len(members))
        scores.append(best)
    return np.array(scores)


def unit_rows(rng, n, d):
    x = rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("chunk", [3, 1000])
def test_less_scores_match_brute_force(chunk):
    rng = np.random.default_rng(0)
    lrs = [1.69e-5, 1.29e-5, 7.70e-6, 2.56e-6]
    pool = [unit_rows(rng, 11, 8) for _ in lrs]
    target = [unit_rows(rng, 7, 8) for _ in lrs]
    subtasks = ["b", "a", "b", "c", "a", "b", "c"]  # unequal sizes, interleaved order
    got = less_scores(pool, target, checkpoint_weights(lrs), subtasks, chunk=chunk)
    np.testing.assert_allclose(got, brute_force(pool, target, lrs, subtasks), rtol=1e-5, atol=1e-6)


def test_single_subtask_is_the_mean():
    rng = np.random.default_rng(1)
    pool, target = [unit_rows(rng, 5, 4)], [unit_rows(rng, 3, 4)]
    got = less_scores(pool, target, np.array([1.0]), ["x"] * 3)
    np.testing.assert_allclose(got, (pool[0] @ target[0].T).mean(1), rtol=1e-6)


def test_checkpoint_weights_renormalise():
    np.testing.assert_allclose(checkpoint_weights([2.0, 6.0]), [0.25, 0.75])
    with pytest.raises(ValueError):
        checkpoint_weights([0.0, 0.0])


def test_ranking_and_how_many_are_selected():
    scores = np.array([0.1, 0.9, 0.5, 0.9, -1.0, 0.3, 0.2, 0.0, 0.4, 0.6])
    order, n = ranking_order(scores), n_selected(len(scores), 0.2, None)
    assert order.tolist()[:4] == [1, 3, 9, 2] and n == 2  # ties broken by index
    assert n_selected(len(scores), None, 3) == 3
    assert n_selected(len(scores), 0.001, None) == 1  # at least one
    assert n_selected(len(scores), 0.2, None, n_pool=20) == 4  # a fraction of the whole pool
    assert n_selected(len(scores), 1.0, None, n_pool=20) == 10  # capped at the scored rows
    assert sorted(order.tolist()) == list(range(10))
    # floored as the reference's write_selected_data (int(p * total)): 5% of the 270,679-example pool
    assert n_selected(270_679, 0.05, None) == int(0.05 * 270_679) == 13_533
    assert n_selected(100, 0.29, None) == int(0.29 * 100) == 28  # its float rounding included


def test_warmup_subset_is_the_references_permutation():
    """less/data_selection/get_training_dataset.py: temp_seed(42), np.random.permutation, first
    int(N * percentage), in permutation order."""
    from less.stages.warmup import warmup_indices

    for n_pool, frac in ((270_679, 0.05), (240, 0.05), (37, 0.05)):
        state = np.random.get_state()
        np.random.seed(42)
        expected = np.random.permutation(n_pool)[:int(n_pool * frac)]
        np.random.set_state(state)
        assert warmup_indices(n_pool, frac, 42) == expected.tolist()
    assert len(warmup_indices(10, 0.05, 42)) == 1  # at least one


def test_top_k_partial_sort_equals_full_sort():
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=5000), 2).astype(np.float32)  # many ties
    order = np.lexsort((np.arange(len(scores)), -scores))
    for k in (1, 7, 250, 4999, 5000):
        assert top_k(scores, k).tolist() == order[:k].tolist()


def test_chunked_scoring_from_memmaps_equals_in_memory(tmp_path):
    from less.gradients.store import FeatureArray, quantize

    rng = np.random.default_rng(2)
    lrs = [3.0, 1.0]
    pool = [unit_rows(rng, 1000, 64) for _ in lrs]
    target = [unit_rows(rng, 9, 64) for _ in lrs]
    subtasks = ["a", "b", "c"] * 3
    arrays = []
    for i, p in enumerate(pool):
        np.save(tmp_path / f"p{i}.npy", quantize(p, "float32")[""])
        arrays.append(FeatureArray(tmp_path / f"p{i}.npy", "float32", 64))
    mem = less_scores(pool, target, checkpoint_weights(lrs), subtasks, chunk=10**6)
    chunked = less_scores(arrays, target, checkpoint_weights(lrs), subtasks, chunk=37)
    np.testing.assert_allclose(chunked, mem, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(mem, brute_force(pool, target, lrs, subtasks), rtol=1e-5, atol=1e-6)

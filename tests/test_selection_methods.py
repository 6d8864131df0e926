"""Selection baselines, LESS ablation flags and every registered method through the pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from less.data import synthetic
from less.gradients.adam import adam_direction
from less.gradients.features import finish
from less.selection import embed, text
from less.selection.scoring import checkpoint_weights, less_scores, top_k
from tests.conftest import run_expecting_error, run_pipeline

POOL = synthetic.make_pool(60, seed=0)
TARGET = synthetic.make_target(4, seed=0)
SUBTASKS = [r["subtask"] for r in TARGET]
BASE = 1 / len(synthetic.SKILLS)


def share(scores, k=30):
    chosen = top_k(np.asarray(scores, dtype=np.float64), k)
    return np.mean([POOL[i]["skill"] == "arithmetic" for i in chosen])


def test_text_methods_on_the_synthetic_pool():
    assert share(text.bm25_scores(POOL, TARGET, SUBTASKS)) >= 3 * BASE
    assert share(text.dsir_scores(POOL, TARGET)) >= 3 * BASE
    # random: within 4 binomial standard deviations of the base share (k=30 draws)
    assert abs(share(text.random_scores(len(POOL), 0)) - BASE) <= 4 * np.sqrt(BASE * (1 - BASE) / 30)
    lengths = text.length_scores(POOL)
    chosen = top_k(lengths, 30)
    assert lengths[chosen].min() >= np.sort(lengths)[-30]


def test_every_method_is_deterministic_for_a_seed():
    rng = np.random.default_rng(0)
    reps, treps = rng.normal(size=(len(POOL), 16)), rng.normal(size=(len(TARGET), 16))
    runs = [lambda s: text.random_scores(len(POOL), s), lambda s: text.length_scores(POOL),
            lambda s: text.bm25_scores(POOL, TARGET, SUBTASKS), lambda s: text.dsir_scores(POOL, TARGET, resample=True, seed=s),
            lambda s: embed.cosine_scores(reps, treps, SUBTASKS), lambda s: embed.kcenter_scores(reps, 20, s, 5),
            lambda s: embed.kcenter_scores(reps, 20, s, 5, treps)]
    for fn in runs:
        assert np.array_equal(fn(3), fn(3))
    assert not np.array_equal(runs[0](3), runs[0](4))
    assert not np.array_equal(runs[3](3), runs[3](4))


def test_kcenter_picks_spread_out_points():
    x = np.concatenate([np.random.default_rng(0).normal(0, 0.01, size=(50, 2)) + [1, 0], [[0, 1], [-1, 0], [0, -1]]])
    chosen = top_k(embed.kcenter_scores(x, 4, 0, 1), 4)
    assert {50, 51, 52} <= set(chosen.tolist())  # the three isolated directions, plus one of the cluster


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_no_normalisation_favours_large_gradient_norms():
    target = [unit([[1.0, 0.0]])]
    pool_raw = np.array([[3.0, 4.0], [0.9, 0.1]], dtype=np.float32)  # 0: long (short example), 1: aligned
    cos = less_scores([finish(torch.from_numpy(pool_raw), True).numpy()], target, np.array([1.0]), ["a"])
    dot = less_scores([pool_raw], target, np.array([1.0]), ["a"])
    assert cos[1] > cos[0] and dot[0] > dot[1]


def test_checkpoint_weights_subset_and_subtask_reduce():
    t = [unit([[1.0, 0.0]]), unit([[1.0, 0.0]])]
    # example 0 aligned at checkpoint 1 only, example 1 at checkpoint 2 only
    p = [unit([[1.0, 0.0], [0.0, 1.0]]), unit([[0.0, 1.0], [1.0, 0.0]])]
    lr = less_scores(p, t, checkpoint_weights([3.0, 1.0]), ["a"])
    uniform = less_scores(p, t, checkpoint_weights([1.0, 1.0]), ["a"])
    only2 = less_scores(p[1:], t[1:], checkpoint_weights([1.0]), ["a"])
    assert lr[0] > lr[1] and uniform[0] == pytest.approx(uniform[1]) and only2[1] > only2[0]
    # one example matches subtask "x" perfectly and "y" not at all; the other matches both halfway
    tgt = [unit([[1.0, 0.0], [0.0, 1.0]])]
    pool = [unit([[1.0, 0.0], [1.0, 1.0]])]
    mx = less_scores(pool, tgt, np.array([1.0]), ["x", "y"], reduce="max")
    mean = less_scores(pool, tgt, np.array([1.0]), ["x", "y"], reduce="mean")
    assert mx[0] > mx[1] and mean[1] > mean[0]


def test_adam_features_amplify_low_variance_coordinates():
    m, v = torch.zeros(2), torch.tensor([1e-8, 1.0])  # coordinate 0 rarely moved during warmup
    target = [unit([[1.0, 0.0]])]
    pool = torch.tensor([[0.1, 1.0], [1.0, 3.0]])
    sgd = less_scores([unit(pool.numpy())], target, np.array([1.0]), ["a"])
    adam = less_scores([unit(adam_direction(pool, m, v).numpy())], target, np.array([1.0]), ["a"])
    assert sgd[1] > sgd[0] and adam[0] > adam[1]


METHODS = ("less", "random", "bm25", "dsir", "rds", "kcenter", "length", "full")


@pytest.fixture(scope="module")
def sweep(default_run, shared_cache, tmp_path_factory):
    """Every method on the default pool and target (LESS's datastore from the default run)."""
    return {m: run_pipeline([f"selection={m}", "stages=[prepare,warmup,datastore,select]"], shared_cache,
                            tmp_path_factory.mktemp(m)) for m in METHODS}


def test_methods_through_the_pipeline(sweep):
    from less.selection.registry import names

    assert set(METHODS) <= set(names())
    for m in ("bm25", "rds", "less", "dsir"):
        assert sweep[m]["selection"]["target_share"] > 2 * sweep[m]["selection"]["base_share"], m
    assert sweep["full"]["selection"]["n_selected"] == 600
    for m, res in sweep.items():
        assert (("warmup" in res["stages"]) == (m == "less")) and (("datastore" in res["stages"]) == (m == "less"))
        assert ("representations" in res["artifacts"]) == (m in ("rds", "kcenter"))
        rows = open(res["selection"]["ranking"]).read().splitlines()
        assert rows[0] == "rank,id,source,score" and len(rows) == 601
        selected = [json.loads(x) for x in open(res["selection"]["selected"])]
        assert len(selected) == res["selection"]["n_selected"]
    assert sweep["less"]["selection"]["jaccard_vs_less"] == 1.0
    for m in ("random", "bm25", "rds", "kcenter"):  # the default LESS selection is cached
        assert 0 <= sweep[m]["selection"]["jaccard_vs_less"] < 1


def test_no_warmup_ablation(shared_cache, tmp_path, capsys):
    err = run_expecting_error(["datastore.use_warmup=false", "stages=[prepare,datastore]"], shared_cache,
                              tmp_path / "a", capsys)
    assert "set datastore.gradient_type=sgd" in err
    res = run_pipeline(["datastore.use_warmup=false", "datastore.gradient_type=sgd",
                        "stages=[prepare,warmup,datastore,select]"], shared_cache, tmp_path / "b")
    assert "warmup" not in res["stages"] and "init_adapter" in res["artifacts"]
    man = json.loads((Path(res["selection"]["datastore"]) / "manifest.json").read_text())
    assert {f["checkpoint"] for f in man["files"]} == {0} and {f["lr_weight"] for f in man["files"]} == {1.0}

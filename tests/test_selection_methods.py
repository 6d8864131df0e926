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
from tests.conftest import compose, run_expecting_error, run_pipeline

POOL = synthetic.make_pool(60, seed=0)
TARGET = synthetic.make_target(4, seed=0)
SUBTASKS = [r["subtask"] for r in TARGET]
BASE = 1 / len(synthetic.SKILLS)


def share(scores, k=30):
    chosen = top_k(np.asarray(scores, dtype=np.float64), k)
    return np.mean([POOL[i]["skill"] == synthetic.TARGET_SKILL for i in chosen])


def test_text_methods_on_the_synthetic_pool():
    assert share(text.bm25_scores(POOL, TARGET, SUBTASKS)) >= 3 * BASE
    # DSIR's hashed n-gram weights miss the skill on this pool (the near miss and other skills share
    # its words; README, Selection methods) but still select by content: a few skills dominate
    for resample in (False, True):
        chosen = top_k(np.asarray(text.dsir_scores(POOL, TARGET, resample=resample, seed=0), dtype=np.float64), 30)
        skills = np.unique([POOL[i]["skill"] for i in chosen], return_counts=True)[1]
        assert skills.max() >= 3 * BASE * 30
    # random: within 4 binomial standard deviations of the base share (k=30 draws)
    assert abs(share(text.random_scores(len(POOL), 0)) - BASE) <= 4 * np.sqrt(BASE * (1 - BASE) / 30)
    lengths = text.length_scores(POOL)
    chosen = top_k(lengths, 30)
    assert lengths[chosen].min() >= np.sort(lengths)[-30]


def test_every_method_is_deterministic_for_a_seed():
    rng = np.random.default_rng(0)
    reps, treps = rng.normal(size=(len(POOL), 16)), rng.normal(size=(len(TARGET), 16))
    runs = [lambda s: text.random_scores(len(POOL), s), lambda s: text.length_scores(POOL),
            lambda s: text.bm25_scores(POOL, TARGET, SUBTASKS), lambda s: text.dsir_scores(POOL, TARGET, seed=s),
            lambda s: embed.cosine_scores(reps, treps, SUBTASKS), lambda s: embed.kcenter_scores(reps, 20, s, 5),
            lambda s: embed.kcenter_scores(reps, 20, s, 5, treps)]
    for fn in runs:
        assert np.array_equal(fn(3), fn(3))
    assert not np.array_equal(runs[0](3), runs[0](4))
    assert not np.array_equal(runs[3](3), runs[3](4))


def test_bm25_accumulated_equals_bm25s_per_query_mean():
    """The compact index and the query-by-query accumulation give bm25s's own scores: the mean over
    a subtask's queries of ``get_scores`` on a plainly built index, then the max over subtasks."""
    import bm25s

    from less.selection.scoring import subtask_groups

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([text.example_text(ex) for ex in POOL], stopwords=None, return_ids=False,
                                   show_progress=False), show_progress=False)
    queries = bm25s.tokenize([text.example_text(ex) for ex in TARGET], stopwords=None, return_ids=False,
                             show_progress=False)
    per_sub = np.stack([np.mean([retriever.get_scores(queries[i]) for i in ix], axis=0)
                        for ix in subtask_groups(SUBTASKS).values()], 1)
    np.testing.assert_allclose(text.bm25_scores(POOL, TARGET, SUBTASKS), per_sub.max(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(text.bm25_scores(POOL, TARGET, SUBTASKS, "mean"), per_sub.mean(1), rtol=1e-5, atol=1e-6)


def test_dsir_weights_equal_a_dense_brute_force():
    """Hashed unigram+bigram counts of DSIR's word/punctuation tokens; weight = sum over an example's
    n-grams of log p_target - log p_pool (target counts + pseudo-count, 1e-8 inside the logs)."""
    import re

    from sklearn.utils import murmurhash3_32

    pool, buckets = POOL[::7] + [{"id": "odd", "messages": [
        {"role": "user", "content": "Hello, World!! It's 3.14 -- ok?"}, {"role": "assistant", "content": "A b"}]}], 97

    def counts(ex):
        toks = re.findall(r"\w+|[^\w\s]+", text.example_text(ex).lower())
        c = np.zeros(buckets)
        for g in toks + [f"{a} {b}" for a, b in zip(toks, toks[1:])]:
            c[abs(murmurhash3_32(g, seed=0)) % buckets] += 1
        return c

    x = np.stack([counts(ex) for ex in pool])
    for smoothing in (0.0, 1.0):
        t = sum(counts(ex) for ex in TARGET) + smoothing
        log_diff = np.log(t / t.sum() + 1e-8) - np.log(x.sum(0) / x.sum() + 1e-8)
        got = text.dsir_weights(pool, TARGET, buckets, smoothing, chunk=4)  # several pool chunks
        np.testing.assert_allclose(got, x @ log_diff, rtol=1e-9, atol=1e-6)
    # top-k mode ranks by weight; resampling is seeded
    w = text.dsir_weights(pool, TARGET, buckets)
    assert np.array_equal(text.dsir_scores(pool, TARGET, buckets, resample=False), w)
    a, b = (text.dsir_scores(pool, TARGET, buckets, resample=True, seed=s) for s in (1, 2))
    assert np.array_equal(a, text.dsir_scores(pool, TARGET, buckets, resample=True, seed=1))
    assert not np.array_equal(top_k(a, 10), top_k(b, 10))


def test_dsir_resampling_follows_the_weights():
    """Gumbel top-1 over log weights picks example i with probability w_i / sum(w) (here 3 examples)."""
    logw = np.log(np.array([0.6, 0.3, 0.1]))
    picks = np.bincount([int(np.argmax(logw + np.random.default_rng(s).gumbel(size=3))) for s in range(4000)],
                        minlength=3) / 4000
    np.testing.assert_allclose(picks, [0.6, 0.3, 0.1], atol=0.03)


def test_kcenter_picks_spread_out_points():
    x = np.concatenate([np.random.default_rng(0).normal(0, 0.01, size=(50, 2)) + [1, 0], [[0, 1], [-1, 0], [0, -1]]])
    chosen = top_k(embed.kcenter_scores(x, 4, 0, 1), 4)
    assert {50, 51, 52} <= set(chosen.tolist())  # the three isolated directions, plus one of the cluster


def brute_kcenter_greedy(x, start, n_pick):
    x = np.asarray(x, dtype=np.float64)
    dist = np.min(((x[:, None, :] - x[start][None, :, :]) ** 2).sum(-1), axis=1)
    order = list(start)
    while len(order) < n_pick:
        order.append(int(np.argmax(dist)))
        dist = np.minimum(dist, ((x - x[order[-1]]) ** 2).sum(1))
    return order


def test_kcenter_greedy_equals_brute_force():
    x = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    order, dist = embed.kcenter_greedy(x, [3, 77, 150], 40)
    assert order == brute_kcenter_greedy(x, [3, 77, 150], 40)
    brute = np.min(((x[:, None, :].astype(np.float64) - x[order][None]) ** 2).sum(-1), axis=1)
    np.testing.assert_allclose(dist, brute, rtol=1e-4, atol=1e-5)


def test_kcenter_scores_from_a_file_in_chunks_equal_brute_force(tmp_path):
    """kcenter over a stored .npy read in row chunks: KMeans starts (nearest pool point to each
    centroid), then the brute-force greedy over the normalised rows; projection only above ``dim``."""
    from sklearn.cluster import KMeans

    from less.gradients.store import NpyRows

    x = np.random.default_rng(1).normal(size=(200, 24)).astype(np.float32)
    np.save(tmp_path / "pool.npy", x)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    km = KMeans(n_clusters=5, random_state=0, n_init=3).fit(xn)
    start = sorted({int(np.argmin(((xn - c) ** 2).sum(1))) for c in km.cluster_centers_})
    expect = brute_kcenter_greedy(xn, start, 30)
    rows = NpyRows(tmp_path / "pool.npy")
    got = embed.kcenter_scores(rows, 30, 0, 5, dim=24)
    assert top_k(got, 30).tolist() == expect
    np.testing.assert_array_equal(embed.project(rows, 24, 0, chunk=7), xn.astype(np.float32))


def test_random_projection_preserves_distances():
    x = np.random.default_rng(2).normal(size=(40, 2048)).astype(np.float32)
    y = embed.project(x, 256, seed=0, chunk=16)
    assert y.shape == (40, 256)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    iu = np.triu_indices(40, 1)
    d = lambda a: ((a[:, None] - a[None]) ** 2).sum(-1)[iu]  # noqa: E731
    ratio = d(y) / d(xn)
    assert abs(np.median(ratio) - 1) < 0.05 and np.abs(ratio - 1).max() < 0.5  # JL: spread ~ sqrt(2/256)
    assert np.array_equal(y, embed.project(x, 256, seed=0, chunk=40))
    assert not np.array_equal(y, embed.project(x, 256, seed=1))


def test_rds_streams_chunks_and_equals_dense_cosine(tmp_path):
    from less.gradients.store import NpyRows
    from less.selection.scoring import subtask_groups

    rng = np.random.default_rng(3)
    pool, target = rng.normal(size=(50, 8)).astype(np.float32), rng.normal(size=(len(TARGET), 8)).astype(np.float32)
    np.save(tmp_path / "pool.npy", pool)
    cos = unit(pool) @ unit(target).T
    per_sub = np.stack([cos[:, ix].mean(1) for ix in subtask_groups(SUBTASKS).values()], 1)
    for reduce, expect in (("max", per_sub.max(1)), ("mean", per_sub.mean(1))):
        got = embed.cosine_scores(NpyRows(tmp_path / "pool.npy"), target, SUBTASKS, reduce, chunk=7)
        np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)


def test_pooling_takes_the_last_unmasked_position_on_either_padding_side():
    hidden = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 1, 1]])
    assert torch.equal(embed.pool_hidden(hidden, right, "last"), hidden[[0, 1], [2, 4]])
    assert torch.equal(embed.pool_hidden(hidden, left, "last"), hidden[[0, 1], [4, 4]])
    means = torch.stack([hidden[0, 2:].mean(0), hidden[1, 1:].mean(0)])
    assert torch.allclose(embed.pool_hidden(hidden, left, "mean"), means)


def test_representations_equal_batch_size_one(tiny_model_dir, tiny_model_cfg, tiny_tokenizer):
    """Last-token (and mean) pooling of a padded batch of mixed lengths equals each example run alone."""
    from less.data.formats import encode_examples
    from less.models import load_model

    model = load_model(tiny_model_cfg, str(tiny_model_dir), torch.device("cpu"))
    enc = encode_examples(POOL[::31], tiny_tokenizer, 1024)
    assert len({len(x) for x in enc.input_ids}) > 3
    for pooling in ("last", "mean"):
        got = embed.representations(model, enc, tiny_tokenizer.pad_token_id, torch.device("cpu"), pooling,
                                    token_budget=10**6, max_batch=64)  # one padded batch
        with torch.no_grad():
            for i, ids in enumerate(enc.input_ids):
                h = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]
                np.testing.assert_allclose(got[i], (h[-1] if pooling == "last" else h.mean(0)).numpy(), atol=1e-5)


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
    # rds with its default last-token pooling is not asserted: a pool example's last token is its
    # EOS, a target example's is the answer (as in the reference), and on the tiny model that picks
    # little of the target skill; mean pooling is (test_representations_stage_model_and_pooling)
    for m in ("bm25", "less"):
        assert sweep[m]["selection"]["target_share"] > 2 * sweep[m]["selection"]["base_share"], m
    # the near miss (same words, the other answer) fools word overlap, not gradients
    assert sweep["less"]["selection"]["target_share"] > sweep["bm25"]["selection"]["target_share"]
    assert sweep["full"]["selection"]["n_selected"] == 600
    for m, res in sweep.items():  # rds and kcenter take representations from the last warmup checkpoint
        assert ("warmup" in res["stages"]) == (m in ("less", "rds", "kcenter"))
        assert ("datastore" in res["stages"]) == (m == "less")
        assert ("representations" in res["artifacts"]) == (m in ("rds", "kcenter"))
        rows = open(res["selection"]["ranking"]).read().splitlines()
        assert rows[0] == "rank,id,source,score" and len(rows) == 601
        selected = [json.loads(x) for x in open(res["selection"]["selected"])]
        assert len(selected) == res["selection"]["n_selected"]
    assert sweep["less"]["selection"]["jaccard_vs_less"] == 1.0
    for m in ("random", "bm25", "rds", "kcenter"):  # the default LESS selection is cached
        assert 0 <= sweep[m]["selection"]["jaccard_vs_less"] < 1


def test_representations_stage_model_and_pooling(sweep, shared_cache, tmp_path):
    """model=warmup: the selector with the last warmup checkpoint's adapter (as a manual PeftModel
    load computes them); model=base differs; each option is its own cached artifact; rds and
    kcenter share one when their options agree."""
    from peft import PeftModel

    from less.checkpoints import last_checkpoint
    from less.data.formats import encode_examples, read_examples
    from less.models import load_model, load_tokenizer

    art = lambda res: Path(res["artifacts"]["representations"]["dir"])  # noqa: E731
    warm = sweep["rds"]
    assert art(warm) == art(sweep["kcenter"]) and "warmup" in warm["artifacts"]
    base = run_pipeline(["selection=rds", "selection.rds.model=base", "stages=[prepare,select]"], shared_cache,
                        tmp_path / "base")
    mean = run_pipeline(["selection=rds", "selection.rds.pooling=mean", "stages=[prepare,warmup,select]"],
                        shared_cache, tmp_path / "mean")
    assert len({art(warm), art(base), art(mean)}) == 3 and "warmup" not in base["artifacts"]
    assert mean["selection"]["target_share"] > 2 * mean["selection"]["base_share"]

    cfg = compose(hydra=False)
    model_dir = Path(warm["artifacts"]["selector"]["dir"])
    tok = load_tokenizer(cfg.model, str(model_dir))
    pool = read_examples(Path(warm["artifacts"]["pool"]["dir"]) / "pool.jsonl")[::50]
    enc = encode_examples(pool, tok, cfg.datastore.max_length)
    rows = {json.loads(x)["id"]: i for i, x in enumerate(open(art(warm) / "pool_ids.jsonl"))}
    pick = [rows[i] for i in enc.ids]
    cpu = torch.device("cpu")
    peft = PeftModel.from_pretrained(load_model(cfg.model, str(model_dir), cpu),
                                     str(last_checkpoint(Path(warm["artifacts"]["warmup"]["dir"]))))
    manual = embed.representations(peft, enc, tok.pad_token_id, cpu, "last")
    plain = embed.representations(load_model(cfg.model, str(model_dir), cpu), enc, tok.pad_token_id, cpu, "last")
    np.testing.assert_allclose(np.load(art(warm) / "pool.npy")[pick], manual, atol=1e-5)
    np.testing.assert_allclose(np.load(art(base) / "pool.npy")[pick], plain, atol=1e-5)
    assert np.abs(manual - plain).max() > 1e-3


@pytest.mark.parametrize("override, message", [
    ("selection=rds selection.rds.pooling=foo", "selection.rds.pooling must be one of ['last', 'mean'], got 'foo'"),
    ("selection=kcenter selection.kcenter.model=bar",
     "selection.kcenter.model must be one of ['warmup', 'base'], got 'bar'"),
    ("selection=kcenter selection.kcenter.dim=0", "selection.kcenter.dim must be a positive integer, got 0"),
    ("selection=dsir selection.dsir.resample=maybe", "selection.dsir.resample must be true or false, got 'maybe'"),
    ("selection=dsir selection.dsir.target_smoothing=-1", "selection.dsir.target_smoothing must be a number >= 0"),
])
def test_bad_baseline_settings_name_their_key(override, message, shared_cache, tmp_path, capsys):
    err = run_expecting_error([*override.split(), "stages=[prepare]"], shared_cache, tmp_path, capsys)
    assert message in err


def test_no_warmup_ablation(shared_cache, tmp_path, capsys):
    err = run_expecting_error(["datastore.use_warmup=false", "stages=[prepare,datastore]"], shared_cache,
                              tmp_path / "a", capsys)
    assert "set datastore.gradient_type=sgd" in err
    res = run_pipeline(["datastore.use_warmup=false", "datastore.gradient_type=sgd",
                        "stages=[prepare,warmup,datastore,select]"], shared_cache, tmp_path / "b")
    assert "warmup" not in res["stages"] and "init_adapter" in res["artifacts"]
    man = json.loads((Path(res["selection"]["datastore"]) / "manifest.json").read_text())
    assert {f["checkpoint"] for f in man["files"]} == {0} and {f["lr_weight"] for f in man["files"]} == {1.0}

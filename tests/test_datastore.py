"""The datastore at scale: batched per-example features vs batch size 1, optimizer layouts,
projection invariance, gradient checkpointing, quantised storage, shards and resume."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from less.data.formats import Encoded
from less.errors import DataError
from less.gradients.adam import adam_direction, load_moments
from less.gradients.features import FeatureExtractor, token_budget_batches
from less.gradients.per_example import per_example_loss
from less.gradients.projection import RademacherProjector, rademacher_rows
from less.gradients.store import FeatureArray, quantize
from tests.conftest import kill_run, linked_cache, ok, run_cli, run_cli_together, run_expecting_error, run_pipeline
from tests.test_gradients import tiny_lora_model, variable_batch


def encoded(lengths, seed=1):
    ids, mask, labels = variable_batch(lengths, seed=seed)
    n = [int(mask[r].sum()) for r in range(len(lengths))]
    return Encoded([f"e{i}" for i in range(len(lengths))], [ids[r, : n[r]].tolist() for r in range(len(n))],
                   [labels[r, : n[r]].tolist() for r in range(len(n))])


def fake_moments(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: (torch.randn(p.shape, generator=g) * 1e-3, torch.rand(p.shape, generator=g) * 1e-6)
            for n, p in model.named_parameters() if p.requires_grad}


def bs1_reference(model, enc, moments, dims, seed):
    """Batch size 1, full flat gradient via autograd, Adam map, one projection per example."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p for p in model.parameters() if p.requires_grad]
    proj = RademacherProjector(max(dims), seed, torch.device("cpu"), cache_bytes=0) if dims else None
    rows = []
    for i in range(len(enc)):
        ids = torch.tensor([enc.input_ids[i]])
        loss = per_example_loss(model(input_ids=ids).logits, torch.tensor([enc.labels[i]])).sum()
        grads = torch.autograd.grad(loss, params)
        if moments is not None:
            grads = [adam_direction(g, *moments[n]) for g, n in zip(grads, names)]
        if proj is None:
            rows.append(torch.cat([g.flatten() for g in grads]))
        else:
            rows.append(sum(proj.project(k, g.flatten()[None])[0] for k, g in enumerate(grads)))
    return torch.stack(rows)


@pytest.mark.parametrize("adam", [True, False])
@pytest.mark.parametrize("dims", [[64, 256], None])
def test_batched_features_equal_batch_size_one(adam, dims):
    model = tiny_lora_model()
    model.eval()
    enc = encoded([9, 5, 12, 7, 4, 11])
    moments = fake_moments(model) if adam else None
    ex = FeatureExtractor(model, pad_id=0, dims=dims, seed=3, device=torch.device("cpu"), moments=moments,
                          token_budget=30, max_batch=4, projection_batch=3)
    assert max(len(b) for b in token_budget_batches([len(x) for x in enc.input_ids], 30, 4)) > 1
    got = ex.unscaled(enc, list(range(len(enc))))
    ex.close()
    ref = bs1_reference(model, enc, moments, dims, seed=3)
    assert got.shape == ref.shape
    rel = ((got - ref).norm(dim=1) / ref.norm(dim=1)).max().item()
    assert rel <= 1e-4, rel


def test_features_independent_of_batching_and_projection_batch():
    model = tiny_lora_model()
    enc = encoded([9, 5, 12, 7, 4, 11, 8])
    out = []
    for budget, proj_batch in ((1000, 100), (12, 1), (40, 2)):
        ex = FeatureExtractor(model, pad_id=0, dims=[128], seed=0, device=torch.device("cpu"),
                              token_budget=budget, max_batch=8, projection_batch=proj_batch)
        out.append(ex.unscaled(enc, [6, 0, 3, 1, 2, 5, 4]))
        ex.close()
    for x in out[1:]:
        assert ((x - out[0]).norm(dim=1) / out[0].norm(dim=1)).max() <= 1e-5


def test_gradient_checkpointing_gives_the_same_features():
    model = tiny_lora_model()
    enc = encoded([9, 5, 12])
    ex = FeatureExtractor(model, pad_id=0, dims=[64], seed=0, device=torch.device("cpu"))
    plain = ex.unscaled(enc, [0, 1, 2])
    ex.close()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ex = FeatureExtractor(model, pad_id=0, dims=[64], seed=0, device=torch.device("cpu"))
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.eval()
    assert model.base_model.model.model.gradient_checkpointing
    ckpt = ex.unscaled(enc, [0, 1, 2])
    ex.close()
    assert ((ckpt - plain).norm(dim=1) / plain.norm(dim=1)).max() <= 1e-5


def test_token_budget_batches():
    lengths = [5, 50, 7, 30, 6, 200]
    batches = token_budget_batches(lengths, 60, 3)
    assert sorted(i for b in batches for i in b) == list(range(6))
    for b in batches:
        assert len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 60
        assert len(b) <= 3
    assert [5] in batches  # an over-long example alone


def test_projection_rows_are_pure_and_chunk_invariant():
    full = rademacher_rows(7, 2, 0, 1000, 300, torch.device("cpu"))
    part = torch.cat([rademacher_rows(7, 2, a, b, 300, torch.device("cpu")) for a, b in ((0, 333), (333, 1000))])
    assert torch.equal(full, part)
    assert torch.equal(rademacher_rows(7, 2, 0, 1000, 100, torch.device("cpu")), full[:, :100])
    assert abs(full.mean().item()) < 0.01 and set(full.unique().tolist()) == {-1.0, 1.0}
    gram = full.T @ full / 1000
    assert (gram - torch.eye(300)).abs().max() < 0.2
    x = torch.randn(3, 1000)
    chunked = RademacherProjector(300, 7, torch.device("cpu"), cache_bytes=0).project(2, x)
    cached = RademacherProjector(300, 7, torch.device("cpu")).project(2, x)
    torch.testing.assert_close(chunked, cached, rtol=1e-5, atol=1e-4)


def test_projection_signs_are_the_bits_of_the_hash_words():
    """Entry (row, col) is +1 where bit col % 64 of the row's hash word col // 64 is set, else -1
    (the definition, bit by bit in Python integers, against the table lookup that builds it)."""
    from less.gradients.projection import _COL, _GOLD, _mix, param_key

    got = rademacher_rows(5, 4, 10, 14, 130, torch.device("cpu"))
    for i, row in enumerate(range(10, 14)):
        base = _mix(torch.tensor([row], dtype=torch.int64) * _GOLD + param_key(5, 4))  # int64 arithmetic wraps
        words = [int(_mix(base + w * _COL).item()) % 2**64 for w in range(3)]
        want = [1.0 if (words[c // 64] >> (c % 64)) & 1 else -1.0 for c in range(130)]
        assert got[i].tolist() == want


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_projection_identical_on_cuda():
    cpu = rademacher_rows(1, 3, 0, 4096, 512, torch.device("cpu"))
    assert torch.equal(cpu, rademacher_rows(1, 3, 0, 4096, 512, torch.device("cuda")).cpu())


def _opt_state(model, tmp_path, layout):
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=0.1, betas=(0.8, 0.99), eps=1e-6)
    model(input_ids=torch.tensor([[1, 2, 3]])).logits.sum().backward()
    opt.step()
    sd = opt.state_dict()
    truth = {n: opt.state[p]["exp_avg"] for n, p in zip(names, params)}
    if layout == "bin_by_name":
        sd["state"] = {names[i]: s for i, s in sd["state"].items()}
    if layout == "fsdp_flat":
        sd["state"] = {names[i]: {k: (v.flatten() if k.startswith("exp") else v) for k, v in s.items()}
                       for i, s in sd["state"].items()}
    torch.save(sd, tmp_path / ("optimizer.pt" if layout == "pt_by_index" else "optimizer.bin"))
    return names, truth


@pytest.mark.parametrize("layout", ["pt_by_index", "bin_by_name", "fsdp_flat"])
def test_optimizer_layouts_load_with_betas_and_eps(layout, tmp_path):
    model = tiny_lora_model()
    _, truth = _opt_state(model, tmp_path, layout)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad}
    mom = load_moments(tmp_path, None, shapes)  # integer keys: trainable-parameter order
    assert mom.betas == (0.8, 0.99) and mom.eps == 1e-6
    for n, m in truth.items():
        torch.testing.assert_close(mom.by_name[n][0], m)
    bad = dict(shapes)
    first = next(iter(bad))
    bad[first] = (3, 3)
    with pytest.raises(DataError, match=f"moments of {first.replace('.', '.')}"):
        load_moments(tmp_path, None, bad)


def test_quantised_storage_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for dtype, tol in (("float32", 0), ("float16", 1e-3), ("int8", 1e-2)):
        arrs = quantize(x, dtype)
        np.save(tmp_path / f"{dtype}.npy", arrs[""])
        if ".scale" in arrs:
            np.save(tmp_path / f"{dtype}.scale.npy", arrs[".scale"])
        back = FeatureArray(tmp_path / f"{dtype}.npy", dtype, 64)[0:50]
        assert np.abs(back - x).max() <= tol
    np.save(tmp_path / "bit.npy", quantize(x, "bit")[""])
    bits = FeatureArray(tmp_path / "bit.npy", "bit", 64)
    assert bits.data.nbytes == 50 * 8  # 1 bit per coordinate
    np.testing.assert_allclose(np.linalg.norm(bits[0:50], axis=1), 1, rtol=1e-6)
    assert (np.sign(bits[0:50]) == np.where(x > 0, 1, -1)).all()


# ------------------------------------------------------------- shards, speed settings, external runs
SMALL = ["datastore.chunk_size=16", "pool.n_per_skill=40"]


def store_arrays(res: dict) -> dict[str, np.ndarray]:
    d = Path(res["selection"]["datastore"])
    man = json.loads((d / "manifest.json").read_text())
    return {f["path"].split("/")[-1] + f["split"]: np.load(d / f["path"]) for f in man["files"]}


@pytest.fixture(scope="module")
def unsharded(shared_cache, tmp_path_factory):
    return run_pipeline([*SMALL, "stages=[prepare,warmup,datastore,select]"], shared_cache,
                        tmp_path_factory.mktemp("unsharded"))


def test_shards_equal_one_job_bitwise(unsharded, shared_cache, tmp_path):
    """Shards run one after another in this process compute the very chunks a single job does."""
    cache = linked_cache(shared_cache, tmp_path / "cache")
    first = run_pipeline([*SMALL, "datastore.num_shards=2", "datastore.shard=0", "stages=[prepare,warmup,datastore]"],
                         cache, tmp_path / "s0")
    assert first["stages"]["datastore"]["complete"] is False and first["stages"]["datastore"]["missing_chunks"] > 0
    assert "features" not in first["accounting"]["tokens"]  # no store yet: its cost is not counted
    run_pipeline([*SMALL, "datastore.num_shards=2", "datastore.shard=1", "stages=[prepare,warmup,datastore]"],
                 cache, tmp_path / "s1")
    res = run_pipeline([*SMALL, "stages=[select]"], cache, tmp_path / "select")
    a, b = store_arrays(unsharded), store_arrays(res)
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    assert Path(unsharded["selection"]["ranking"]).read_text() == Path(res["selection"]["ranking"]).read_text()
    assert not list(cache.glob("features/.work-*"))  # chunk files removed once assembled


# README, "What is reproducible": unit-norm features move by less than FEATURE_TOL before storage
# rounding (measured: 8.9e-7), scores by less than SCORE_TOL (measured: 9.3e-7).
FEATURE_TOL, SCORE_TOL = 1e-6, 1e-5


def assert_equal_up_to_rounding(a: dict, b: dict, k: int) -> None:
    """Two runs that differ only in speed settings (batching, chunks, shards, threads): every stored
    feature within FEATURE_TOL plus one float16 rounding step, every score within SCORE_TOL, ranks
    swapped only between scores that close, and the same top ``k`` unless its boundary is that close."""
    import csv

    fa, fb = store_arrays(a), store_arrays(b)
    assert fa.keys() == fb.keys()
    for key in fa:
        x, y = fa[key].astype(np.float64), fb[key].astype(np.float64)
        assert (np.abs(x - y) <= 2.0**-10 * np.maximum(np.abs(x), np.abs(y)) + FEATURE_TOL).all(), key
    rank = lambda r: [(row["id"], float(row["score"])) for row in csv.DictReader(open(r["selection"]["ranking"]))]  # noqa: E731
    ra, rb = rank(a), rank(b)
    sa, sb = dict(ra), dict(rb)
    assert sa.keys() == sb.keys() and max(abs(sa[i] - sb[i]) for i in sa) < SCORE_TOL
    for (ia, _), (ib, _) in zip(ra, rb):
        if ia != ib:  # a swap: the two were (nearly) tied
            assert abs(sa[ia] - sa[ib]) < 2 * SCORE_TOL, (ia, ib)
    if ra[k - 1][1] - ra[k][1] > 2 * SCORE_TOL:
        assert {i for i, _ in ra[:k]} == {i for i, _ in rb[:k]}


def test_speed_settings_change_features_only_by_rounding(unsharded, shared_cache, tmp_path):
    cache = linked_cache(shared_cache, tmp_path / "cache")
    fast = run_pipeline([*SMALL, "datastore.token_budget=64", "datastore.max_batch_size=3", "datastore.chunk_size=50",
                         "datastore.projection.batch_size=7", "stages=[prepare,warmup,datastore,select]"],
                        cache, tmp_path / "out")
    assert fast["artifacts"]["datastore"]["key"] == unsharded["artifacts"]["datastore"]["key"]
    assert_equal_up_to_rounding(unsharded, fast, unsharded["selection"]["n_selected"])


@pytest.mark.slow
def test_shards_under_joblib_equal_one_job_up_to_rounding(unsharded, shared_cache, tmp_path):
    """The README's sharded sweep: two parallel jobs (each limited to fewer threads by joblib's
    workers) fill one store; the result equals a single job's up to float rounding."""
    cache = linked_cache(shared_cache, tmp_path / "cache")
    ok(run_cli([*SMALL, "logger=none", "datastore.shard=0,1", "datastore.num_shards=2", "hydra/launcher=joblib",
                "hydra.launcher.n_jobs=2", "stages=[prepare,warmup,datastore]"], cache, tmp_path / "sweep",
               multirun=True))
    jobs = [json.loads((tmp_path / "sweep" / str(j) / "results.json").read_text()) for j in (0, 1)]
    assert any(j["stages"]["datastore"].get("complete", True) for j in jobs)
    res = run_pipeline([*SMALL, "stages=[select]"], cache, tmp_path / "select")
    assert_equal_up_to_rounding(unsharded, res, unsharded["selection"]["n_selected"])
    assert not list(cache.glob("features/.work-*"))


POOL_ROWS = 40 * 8 * 4  # SMALL's pool (40 per skill x 8 skills) x the warmup's 4 checkpoints


@pytest.mark.slow
def test_a_killed_extraction_resumes_under_another_chunk_size(unsharded, shared_cache, tmp_path):
    """Chunks of 16 rows left by a killed job serve a rerun with chunks of 50 (rows no finished
    chunk has are computed, the store takes every row once), and the run after that as well."""
    cache = linked_cache(shared_cache, tmp_path / "cache")
    proc = kill_run("features:3", [*SMALL, "stages=[prepare,warmup,datastore]"], cache, tmp_path / "killed")
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert len(list(cache.glob("features/.work-*/ckpt1/d1024/*.npy"))) == 3
    res = run_pipeline([*SMALL, "datastore.chunk_size=50", "stages=[prepare,warmup,datastore,select]"],
                       cache, tmp_path / "resumed")
    assert res["artifacts"]["pool_features"]["rows_computed"] == POOL_ROWS - 3 * 16
    assert_equal_up_to_rounding(unsharded, res, unsharded["selection"]["n_selected"])
    again = run_pipeline([*SMALL, "datastore.chunk_size=100", "stages=[prepare,warmup,datastore,select]"],
                         cache, tmp_path / "again")
    assert again["stages"]["datastore"]["cached"]
    assert not list(cache.glob("features/.work-*"))


@pytest.mark.slow
def test_two_jobs_share_one_extraction(unsharded, shared_cache, tmp_path):
    """Two identical jobs started together on one cache: each computes the chunks nobody else has
    claimed, together every chunk once, and the store equals a single job's."""
    cache = linked_cache(shared_cache, tmp_path / "cache")
    jobs = run_cli_together([[*SMALL, "stages=[prepare,warmup,datastore,select]"]] * 2, cache, tmp_path / "jobs")
    assert sum(j["artifacts"]["pool_features"].get("rows_computed", 0) for j in jobs) == POOL_ROWS
    for j in jobs:
        assert j["artifacts"]["datastore"]["key"] == unsharded["artifacts"]["datastore"]["key"]
        a, b = store_arrays(unsharded), store_arrays(j)
        assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not list(cache.glob("features/.work-*"))


@pytest.mark.slow
def test_jobs_with_different_chunk_sizes_share_one_extraction(unsharded, shared_cache, tmp_path):
    """The sweep ``datastore.chunk_size=100,256`` under joblib, as two jobs started together (one
    thread each, as joblib's workers): the rows each claims never overlap, and the store equals a
    single job's up to rounding."""
    cache = linked_cache(shared_cache, tmp_path / "cache")
    jobs = run_cli_together([[*SMALL, f"datastore.chunk_size={c}", "stages=[prepare,warmup,datastore,select]"]
                             for c in (16, 50)], cache, tmp_path / "jobs", env={"OMP_NUM_THREADS": "1"})
    assert sum(j["artifacts"]["pool_features"].get("rows_computed", 0) for j in jobs) == POOL_ROWS
    for j in jobs:
        assert_equal_up_to_rounding(unsharded, j, unsharded["selection"]["n_selected"])


def test_one_shard_alone_cannot_be_selected_from(shared_cache, tmp_path, capsys):
    cache = linked_cache(shared_cache, tmp_path / "cache")
    err = run_expecting_error([*SMALL, "datastore.shard=1", "datastore.num_shards=3",
                               "stages=[prepare,warmup,datastore,select]"], cache, tmp_path / "out", capsys)
    assert "pool_features is incomplete (shard 1 of 3 done" in err and "stages=[select]" in err


def test_external_warmup_run_in_the_reference_layout(unsharded, shared_cache, tmp_path, capsys):
    """Checkpoints made elsewhere: adapter + name-keyed optimizer.bin (reference LESS / FSDP), no
    metadata of ours; learning rates from trainer_state.json. Features match our own warmup's."""
    import shutil

    warm = Path(unsharded["stages"]["warmup"]["dir"]) / "trainer"
    ext = tmp_path / "external_run"
    for ckpt in sorted(warm.glob("checkpoint-*")):
        dst = ext / ckpt.name
        dst.mkdir(parents=True)
        for f in ("adapter_model.safetensors", "adapter_config.json", "trainer_state.json"):
            shutil.copy(ckpt / f, dst / f)
        names = json.loads((ckpt / "less_checkpoint.json").read_text())["optimizer_param_names"]
        sd = torch.load(ckpt / "optimizer.pt", weights_only=True)
        order = [i for g in sd["param_groups"] for i in g["params"]]
        sd["state"] = {names[pos]: sd["state"][idx] for pos, idx in enumerate(order)}
        torch.save(sd, dst / "optimizer.bin")
    cache = linked_cache(shared_cache, tmp_path / "cache", kinds=("model", "pool", "target"))
    err = run_expecting_error([*SMALL, f"datastore.warmup_dir={ext}", "stages=[prepare,datastore]"], cache,
                              tmp_path / "out0", capsys)
    assert re.search(r"no learning rate recorded for epoch \d; set datastore.lr_weights", err), err
    lrs = [c["avg_lr"] for c in json.loads((warm.parent / "warmup.json").read_text())["checkpoints"]]
    res = run_pipeline([*SMALL, f"datastore.warmup_dir={ext}", f"datastore.lr_weights=[{','.join(map(str, lrs))}]",
                        "stages=[prepare,datastore,select]"], cache, tmp_path / "out")
    assert "warmup" not in res["stages"] and "warmup" not in res["artifacts"]
    ours, theirs = store_arrays(unsharded), store_arrays(res)
    for k in ours:
        np.testing.assert_allclose(theirs[k].astype(np.float32), ours[k].astype(np.float32), atol=2e-3)
    man = json.loads((Path(res["selection"]["datastore"]) / "manifest.json").read_text())
    assert sorted({f["avg_lr"] for f in man["files"]}) == sorted(set(lrs))
    err = run_expecting_error([*SMALL, f"datastore.warmup_dir={tmp_path / 'nowhere'}", "stages=[prepare,datastore]"],
                              cache, tmp_path / "out2", capsys)
    assert "warmup run not found (set by datastore.warmup_dir)" in err


def test_learning_rates_from_a_trainer_log(tmp_path):
    from omegaconf import OmegaConf

    from less.checkpoints import warmup_checkpoints

    for step, epoch in ((4, 1), (8, 2)):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        log = [{"learning_rate": lr, "epoch": e} for lr, e in ((1.0, 0.5), (0.8, 1.0), (0.4, 1.5), (0.2, 2.0))]
        (d / "trainer_state.json").write_text(json.dumps({"log_history": log[: 2 * epoch]}))
    ds = OmegaConf.create({"checkpoints": None, "lr_weights": None})
    got = warmup_checkpoints(tmp_path, ds)
    assert [(c["epoch"], c["step"]) for c in got] == [(1, 4), (2, 8)]
    assert [c["avg_lr"] for c in got] == pytest.approx([0.9, 0.3])

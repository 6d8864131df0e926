"""Artifact cache: keys, atomic builds, concurrent builders; the pipeline's stage keys."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import pytest

from less.cache import Cache, cache_key
from tests.conftest import compose


def test_key_depends_on_content_not_order():
    assert cache_key("k", {"a": 1, "b": [1, 2]}) == cache_key("k", {"b": [1, 2], "a": 1})
    assert cache_key("k", {"a": 1}) != cache_key("k", {"a": 2})
    assert cache_key("k", {"a": 1}) != cache_key("j", {"a": 1})


def test_build_once_then_hit(tmp_path):
    cache, calls = Cache(tmp_path), []

    def build(d: Path):
        calls.append(d)
        (d / "x.txt").write_text("hi")

    a = cache.get_or_build("thing", {"v": 1}, build)
    b = cache.get_or_build("thing", {"v": 1}, build)
    assert (not a.cached, b.cached, len(calls)) == (True, True, 1)
    assert (b.dir / "x.txt").read_text() == "hi" and (b.dir / "key.json").is_file()


def test_crashed_build_leaves_nothing(tmp_path):
    cache = Cache(tmp_path)

    def build(d: Path):
        (d / "half.txt").write_text("partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        cache.get_or_build("thing", {"v": 1}, build)
    assert not cache.lookup("thing", {"v": 1}).cached
    assert [p.name for p in (tmp_path / "thing").iterdir() if not p.name.endswith(".lock")] == []


def test_a_killed_builds_leftover_is_replaced_by_the_next_build(tmp_path):
    cache = Cache(tmp_path)
    key = cache.lookup("thing", {"v": 1}).key
    stale = tmp_path / "thing" / f".tmp-{key}"
    stale.mkdir(parents=True)
    (stale / "half.txt").write_text("from a killed build")
    art = cache.get_or_build("thing", {"v": 1}, lambda d: (d / "x.txt").write_text("ok"))
    assert sorted(p.name for p in art.dir.iterdir()) == ["key.json", "x.txt"] and not stale.exists()


def _slow_build(root: str, log: str) -> None:
    def build(d: Path):
        with open(log, "a") as fh:
            fh.write("built\n")
        time.sleep(0.5)
        (d / "x.txt").write_text("ok")

    Cache(root).get_or_build("shared", {"v": 1}, build)


def test_two_jobs_build_a_missing_artifact_once(tmp_path):
    log = tmp_path / "log.txt"
    procs = [mp.get_context("spawn").Process(target=_slow_build, args=(str(tmp_path / "c"), str(log)))
             for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert log.read_text().count("built") == 1
    assert (Cache(tmp_path / "c").lookup("shared", {"v": 1}).dir / "x.txt").read_text() == "ok"


def stage_keys(overrides, tmp_path):
    from less.runner import Runner

    r = Runner(compose([f"cache_dir={tmp_path}", "logger=none", *overrides], hydra=False), tmp_path / "out")
    return {n: r.key(n) for n in ("pool", "target", "warmup", "pool_features", "target_features", "datastore",
                                  "select", "train", "eval")}


def test_fraction_change_reuses_warmup_and_datastore(tmp_path):
    a = stage_keys([], tmp_path)
    b = stage_keys(["selection.fraction=0.1"], tmp_path)
    for k in ("pool", "target", "warmup", "pool_features", "target_features", "datastore"):
        assert a[k] == b[k], k
    for k in ("select", "train", "eval"):
        assert a[k] != b[k], k


def test_selector_pool_and_projection_changes_recompute(tmp_path):
    a = stage_keys([], tmp_path)
    sel = stage_keys(["selector=tiny", "selector.tiny.hidden_size=32"], tmp_path)
    assert sel["warmup"] != a["warmup"] and sel["datastore"] != a["datastore"]
    assert sel["pool"] == a["pool"]
    pool = stage_keys(["pool.n_per_skill=50"], tmp_path)
    assert pool["warmup"] != a["warmup"] and pool["datastore"] != a["datastore"]
    proj = stage_keys(["datastore.projection.dims=[128]"], tmp_path)
    assert proj["warmup"] == a["warmup"] and proj["datastore"] != a["datastore"]
    target = stage_keys(["target.n_per_subtask=2"], tmp_path)
    assert target["pool_features"] == a["pool_features"] and target["target_features"] != a["target_features"]
    assert target["warmup"] == a["warmup"] and target["pool"] == a["pool"]
    # selecting with the same model as `model` is the same as leaving selector unset
    assert stage_keys(["selector=tiny"], tmp_path)["warmup"] == a["warmup"]
    # the target model changes training, not selection
    tgt = stage_keys(["model.tiny.hidden_size=32"], tmp_path)
    assert tgt["warmup"] != a["warmup"]  # selector follows model when unset
    lesst = stage_keys(["selector=tiny", "model.tiny.hidden_size=32"], tmp_path)
    assert lesst["warmup"] == a["warmup"] and lesst["train"] != a["train"]


def test_speed_settings_and_the_target_stay_out_of_keys(tmp_path):
    a = stage_keys([], tmp_path)
    fast = stage_keys(["datastore.token_budget=64", "datastore.max_batch_size=2", "datastore.chunk_size=7",
                       "datastore.num_shards=3", "datastore.shard=1", "datastore.projection.batch_size=5"], tmp_path)
    assert fast == a
    # a target-free selection (and the model trained on it) is shared by every target
    r1 = stage_keys(["selection=random"], tmp_path)
    r2 = stage_keys(["selection=random", "target.n_per_subtask=2"], tmp_path)
    assert r1["select"] == r2["select"] and r1["train"] == r2["train"] and r1["target"] != r2["target"]
    l2 = stage_keys(["target.n_per_subtask=2"], tmp_path)
    assert l2["select"] != a["select"]


def test_only_this_hosts_dead_jobs_work_dirs_are_removed(tmp_path):
    import os
    import subprocess
    import sys

    from less.cache import process_tag, remove_stale_work

    host = process_tag().rsplit("-", 1)[0]
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dirs = {name: tmp_path / f".work-k-{name}" for name in
            (f"{host}-{gone.stdout.strip()}", process_tag(), f"otherhost-{gone.stdout.strip()}", f"{host}-{os.getppid()}")}
    for d in dirs.values():
        d.mkdir()
    remove_stale_work(tmp_path, "k")
    assert [n for n, d in dirs.items() if d.exists()] == list(dirs)[1:]  # the dead job's alone is gone

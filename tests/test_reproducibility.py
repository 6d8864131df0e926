"""Same key, same bytes, whatever ran before: every build starts from random state seeded by its
key, so a stage built after others in one process, in a new process, after a kill or inside a
cached sweep gives the artifact a clean run gives.

Bitwise comparisons across processes hold at the same thread count: the subprocesses here inherit
this process's environment and so torch's default (one thread per core). Other thread counts
change float rounding only (tests/test_datastore.py, README "What is reproducible")."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from less.graph import Stage
from tests.conftest import ROOT, compose, kill_run, linked_cache, ok, run_cli, run_pipeline


def noise(ctx, inputs, out: Path) -> None:
    draws = [torch.rand(4).numpy().tobytes(), np.random.rand(4).tobytes(), repr(random.random()).encode()]
    (out / "noise.bin").write_bytes(b"".join(draws))


def test_every_build_is_seeded_from_its_key(tmp_path):
    from less.runner import Runner

    graph = (Stage("noise", step="prepare", build=noise, config=lambda ctx: {"seed": ctx.cfg.seed}),)

    def build(cache: str, seed: int, disturb: int) -> tuple[str, bytes]:
        torch.manual_seed(disturb), np.random.seed(disturb), random.seed(disturb)  # whatever ran before
        torch.rand(disturb), np.random.rand(disturb)
        cfg = compose([f"cache_dir={tmp_path / cache}", f"seed={seed}", "logger=none"], hydra=False)
        art = Runner(cfg, tmp_path / "out", graph=graph, check=False).get("noise")
        return art.key, (art.dir / "noise.bin").read_bytes()

    a, b, c = build("a", 0, 1), build("b", 0, 7), build("c", 1, 1)
    assert a == b  # same key, same bytes, different history
    assert a[0] != c[0] and a[1] != c[1]  # another key starts elsewhere


def same_files(a: Path, b: Path, skip=()) -> list[str]:
    """Relative paths of every file under artifact ``a``, asserting artifact ``b`` has the same files
    with the same bytes, up to the path of the cache each lives in (adapter configs name their base
    model, for the tiny model a directory of the cache). torch pickles are compared tensor by
    tensor; ``skip``: files recording wall time."""
    files = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    roots = [str(a.parents[1]).encode(), str(b.parents[1]).encode()]  # <cache>/<kind>/<key>
    for f in files:
        if Path(f).name in skip:
            continue
        if f.endswith((".pt", ".pth")):
            x, y = torch.load(a / f, weights_only=False), torch.load(b / f, weights_only=False)
            assert repr(x) == repr(y) and _tensors_equal(x, y), f
        else:
            x, y = (a / f).read_bytes(), (b / f).read_bytes()
            assert x.replace(roots[0], b"<cache>") == y.replace(roots[1], b"<cache>"), f
    return files


def _tensors_equal(x, y) -> bool:
    if isinstance(x, torch.Tensor):
        return torch.equal(x, y)
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(_tensors_equal(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)):
        return len(x) == len(y) and all(_tensors_equal(u, v) for u, v in zip(x, y))
    return True


@pytest.mark.slow
def test_warmup_in_a_new_process_equals_warmup_built_beside_the_model(default_run, shared_cache, tmp_path):
    """(a) The default run built the tiny model and then the warmup in one process; here the model
    is cached and the warmup is built by a new process."""
    cache = linked_cache(shared_cache, tmp_path / "cache", kinds=("model",))
    ok(run_cli(["logger=none", "stages=[prepare,warmup]"], cache, tmp_path / "out"))
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["artifacts"]["warmup"]["key"] == default_run[1]["artifacts"]["warmup"]["key"]
    files = same_files(Path(default_run[1]["stages"]["warmup"]["dir"]), Path(res["stages"]["warmup"]["dir"]))
    assert any(f.endswith("adapter_model.safetensors") for f in files) and any(f.endswith("optimizer.pt") for f in files)


@pytest.mark.slow
def test_runs_killed_during_warmup_datastore_and_train_resume_to_a_clean_runs_bytes(default_run, shared_cache,
                                                                                     tmp_path):
    """(b) Killed inside warmup, then inside the pool features, the target features and train; each
    rerun resumes. Every artifact equals the clean default run's."""
    cache = linked_cache(shared_cache, tmp_path / "cache", kinds=("model",))
    # features: 3 pool chunks x 4 checkpoints, then 1 target chunk x 4; the second kill lands in the
    # target's extraction (7 pool chunks left + 2), whose work directory belongs to the killed job
    for i, where in enumerate(("warmup:6", "features:5", "features:9", "train:5")):
        proc = kill_run(where, [], cache, tmp_path / f"killed{i}")
        assert proc.returncode == -9, proc.stderr[-3000:]  # SIGKILL, at the point asked for
        stage = where.split(":")[0]
        pattern = {"features:5": "features/.work-*", "features:9": "features/.work-*-*"}.get(where, f"{stage}/.tmp-*")
        assert list(cache.glob(pattern)), f"nothing of {where} was under way when the kill came"
    assert not (tmp_path / "killed3" / "results.json").exists()
    ok(run_cli(["logger=none"], cache, tmp_path / "done"))
    assert not list(cache.rglob(".tmp-*")) and not list(cache.rglob(".work-*"))  # leftovers of the kills gone
    res, clean = json.loads((tmp_path / "done" / "results.json").read_text()), default_run[1]
    for step in ("warmup", "datastore", "select", "train", "eval"):
        assert res["stages"][step]["key"] == clean["stages"][step]["key"], step
    for step in ("warmup", "select", "train"):
        same_files(Path(clean["stages"][step]["dir"]), Path(res["stages"][step]["dir"]))
    stores = [Path(r["stages"]["datastore"]["dir"]) for r in (clean, res)]
    for split in ("pool", "target"):  # the feature arrays, through each datastore's manifest
        a, b = (d / json.loads((d / "manifest.json").read_text())[split] for d in stores)
        assert a.resolve().name == b.resolve().name  # the same key
        same_files(a.resolve(), b.resolve())
    assert res["eval"] == clean["eval"] and res["train"] == clean["train"]


@pytest.mark.slow
def test_a_cached_sweep_job_equals_a_fresh_one(default_run, shared_cache, tmp_path):
    """(c) A job of a sweep that finds warmup and datastore cached, built in a process where other
    jobs ran before (and its train built after its selection was read back from the cache), equals
    the same job run alone in a new process from an empty cache (but the tiny model)."""
    job = ["selection.fraction=0.15"]  # no other test builds this selection
    run_pipeline([*job, "stages=[prepare,warmup,datastore,select]"], shared_cache, tmp_path / "select")
    swept = run_pipeline(job, shared_cache, tmp_path / "swept")
    assert swept["stages"]["select"]["cached"] and not swept["stages"]["train"]["cached"]
    assert swept["stages"]["warmup"]["cached"] and swept["stages"]["datastore"]["cached"]
    ok(run_cli(["logger=none", *job], linked_cache(shared_cache, tmp_path / "fresh", kinds=("model",)),
               tmp_path / "alone"))
    alone = json.loads((tmp_path / "alone" / "results.json").read_text())
    assert not alone["stages"]["warmup"]["cached"]
    for step in ("select", "train", "eval"):
        assert swept["stages"][step]["key"] == alone["stages"][step]["key"], step
        same_files(Path(swept["stages"][step]["dir"]), Path(alone["stages"][step]["dir"]))
    assert swept["eval"] == alone["eval"] and swept["train"] == alone["train"]

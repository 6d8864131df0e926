"""The benchmarks' own machinery with tiny shapes: the GPU check's CPU rehearsal end to end (it runs
extract_features.py, peers.py and a one-process torchrun of the datastore stage), the peers' store
agreement, and the scaling script's exponent fit. Benchmarks are scripts, not tests: nothing here
times anything or compares speeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import DATA, ROOT, needs_data, with_session_models

sys.path.insert(0, str(ROOT / "benchmarks"))


def test_the_scaling_fit_recovers_a_power_law():
    from scaling import fit

    x = np.array([1e3, 3e3, 1e4, 3e4, 1e5])
    rng = np.random.default_rng(0)
    for b in (0.5, 1.0, 2.0):
        y = 3e-4 * x ** b * np.exp(rng.normal(0, 0.01, len(x)))
        assert fit(x, y) == pytest.approx(b, abs=0.02)
    assert fit([10, 10], [1.0, 2.0]) is None  # one size: no exponent
    assert fit([10, 20], [0.0, 1.0]) is None  # a zero time (below the clock's resolution) is no point


@needs_data
def test_gpu_check_dry_runs_every_step_and_writes_one_summary(shared_cache, tmp_path):
    """``benchmarks/gpu_check.sh --dry``: the GPU check's steps on the CPU with tiny shapes."""
    pytest.importorskip("bergson", reason="bergson (the peers extra) is not installed")
    cache = with_session_models(shared_cache, tmp_path / "cache")
    out = tmp_path / "out"
    env = {**os.environ, "PY": sys.executable, "OUT": str(out), "LESS_CACHE_DIR": str(cache),
           "DATA_ROOT": str(DATA), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    s = json.loads((out / "gpu_check.json").read_text())
    assert s["dry"] is True
    for step in ("extract", "peers", "datastore_torchrun"):
        assert s[step]["rc"] == 0 and s[step]["seconds"] > 0, step
    ex, peers = s["extract"]["figures"], s["peers"]["figures"]
    assert ex["examples"] == 8 and ex["extract_vs_fwdbwd"] > 0 and ex["speedup_vs_bs1"] > 0
    assert set(peers["seconds_median"]) == {"floor", "harness", "reference", "bergson"}
    assert all(v > 0 for v in (peers["vs_bergson"], peers["vs_reference"], peers["vs_floor"]))
    # the harness's unprojected SGD features are bergson's unprojected gradients
    assert peers["agreement_min_cosine"] >= 0.999
    assert list(s["datastore_torchrun"]["stages"]) == ["prepare", "warmup", "datastore"]
    assert "vs_bergson=" in proc.stdout


def test_gpu_check_rejects_an_unknown_argument(tmp_path):
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--fast"], cwd=ROOT,
                          env={**os.environ, "OUT": str(tmp_path)}, capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown argument '--fast'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_peers_without_bergson_says_what_to_install(monkeypatch):
    import builtins

    import peers

    real = builtins.__import__

    def no_bergson(name, *a, **k):
        if name == "bergson" or name.startswith("bergson."):
            raise ImportError("No module named 'bergson'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_bergson)
    msg = peers.bergson_missing()
    assert msg and 'pip install -e ".[peers]"' in msg and "\n" not in msg

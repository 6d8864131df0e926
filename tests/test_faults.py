"""Faults a run meets outside the config: an unwritable cache, a full disk, W&B without a key or a
network, k beyond the pool, builds killed half-way. Each ends in one line (or a warning), never a
traceback, and never leaves a half-written artifact that looks complete."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, compose, run_expecting_error


def _key(cache: Path, stage: str, overrides: list[str]) -> str:
    from less.runner import Runner

    return Runner(compose([f"cache_dir={cache}", "logger=none", *overrides], hydra=False), cache / "unused").key(stage)


def _refuse_writes_under(monkeypatch, root: Path, code: int) -> None:
    """Make every os.open that would create or write a file under ``root`` fail with ``code``, as the
    kernel does for a read-only directory (mode 0555) or file system: as root (tests may run as
    root, whom a 0555 directory does not stop) the refusal has to be played."""
    real_open = os.open

    def guarded(path, flags, *args, **kwargs):
        writes = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        if writes and str(Path(os.fsdecode(path)).absolute()).startswith(str(root) + os.sep):
            raise OSError(code, os.strerror(code), os.fsdecode(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded)


def test_cache_dir_under_a_file_is_one_line_naming_the_key(tmp_path, capsys):
    (tmp_path / "file").write_text("not a directory")
    cache = tmp_path / "file" / "cache"
    err = run_expecting_error(["stages=[prepare]"], cache, tmp_path / "out", capsys)
    assert err.startswith(f"error: cache_dir={cache} is not writable ({tmp_path / 'file'} is a file, not a directory)"), err
    assert "LESS_CACHE_DIR" in err


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS])
def test_read_only_cache_dir_is_one_line_before_any_work(code, tmp_path, capsys, monkeypatch):
    """A cache_dir that exists but cannot be written: stopped up front (before the tiny model or any
    stage is built), naming cache_dir and the path. As a normal user a 0555 directory is refused
    by the kernel; as root the refusal is played (see _refuse_writes_under)."""
    cache = tmp_path / "ro-cache"
    cache.mkdir()
    cache.chmod(0o555)
    if os.geteuid() == 0 or code == errno.EROFS:
        _refuse_writes_under(monkeypatch, cache, code)
    try:
        err = run_expecting_error(["stages=[prepare]"], cache, tmp_path / "out", capsys)
    finally:
        cache.chmod(0o755)
    assert err.startswith(f"error: cache_dir={cache} is not writable ({os.strerror(code)})"), err
    assert list(cache.iterdir()) == []


def _fail_writes(monkeypatch, code: int, with_filename: bool) -> None:
    """The prepare stage's JSONL writer fails with ``code``, as a full disk (or a read-only one)
    does half-way through an artifact: after writing part of the file."""
    from less.data import formats

    def write_jsonl(path, rows):
        Path(path).write_text("half a file\n")
        raise OSError(code, os.strerror(code), *([str(path)] if with_filename else []))

    monkeypatch.setattr(formats, "write_jsonl", write_jsonl)
    monkeypatch.setattr("less.stages.prepare.write_jsonl", write_jsonl)


@pytest.mark.parametrize("code,with_filename", [(errno.ENOSPC, False), (errno.EDQUOT, False), (errno.ENOSPC, True)])
def test_full_disk_is_one_line_naming_what_was_written(code, with_filename, tmp_path, capsys, monkeypatch):
    """ENOSPC / EDQUOT during a build: one line naming the file (when the error names it) or the
    artifact being built, exit 2, and nothing left that looks like an artifact."""
    cache, out = tmp_path / "cache", tmp_path / "out"
    _fail_writes(monkeypatch, code, with_filename)
    err = run_expecting_error(["stages=[prepare]"], cache, out, capsys)
    key = _key(cache, "target", ["stages=[prepare]"])
    building = cache / "target" / f".tmp-{key}"
    named = building / "target.jsonl" if with_filename else building
    assert err.startswith(f"error: {named}: no space left on device"), err
    assert f"while building the target artifact target/{key}" in err
    if code == errno.EDQUOT:
        assert "(Disk quota exceeded)" in err
    assert not list(cache.rglob(".tmp-*")) and not (cache / "target" / key).exists()
    assert not (out / "results.json").exists()


def test_read_only_file_system_during_a_build_is_one_line(tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    _fail_writes(monkeypatch, errno.EROFS, True)
    err = run_expecting_error(["stages=[prepare]"], cache, tmp_path / "out", capsys)
    key = _key(cache, "target", ["stages=[prepare]"])
    assert err.startswith(f"error: {cache / 'target' / f'.tmp-{key}' / 'target.jsonl'}: not writable "
                          f"(Read-only file system) while building the target artifact target/{key}"), err
    assert not list(cache.rglob(".tmp-*"))


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _online_without(tmp_path: Path, shared_cache: Path, env: dict[str, str]):
    """``logger.mode=online`` in a subprocess with no W&B credentials anywhere (HOME, netrc and
    W&B's config dir point at an empty directory) and WANDB_MODE=online, so the conftest's
    WANDB_MODE=offline cannot be what makes it offline."""
    from tests.conftest import run_cli

    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "NETRC": str(home / ".netrc"), "WANDB_CONFIG_DIR": str(home / "wandb-config"),
           "WANDB_MODE": "online", **env}
    proc = run_cli(["stages=[prepare,select]", "selection=random", "logger=wandb", "logger.mode=online",
                    "logger.init_timeout=10", f"logger.group={tmp_path.name}"], shared_cache, tmp_path / "out", env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(res["stages"]) == {"prepare", "select"} and res["selection"]["n_selected"] == 30
    w = res["wandb"]
    assert (w["mode"], w["requested_mode"]) == ("offline", "online") and list(Path(w["dir"]).glob("run-*.wandb"))
    lines = [line for line in proc.stderr.splitlines() if line.startswith("W&B:")]
    assert lines == [f"W&B: {w['fallback']}; logging offline to {w['dir']}, upload later with: wandb sync {w['dir']}"], \
        proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return w


def test_wandb_online_without_an_api_key_continues_offline(tiny_model_dir, shared_cache, tmp_path):
    w = _online_without(tmp_path, shared_cache, {})
    assert w["fallback"] == "no API key (set WANDB_API_KEY or run wandb login)"


def test_wandb_online_without_network_continues_offline(tiny_model_dir, shared_cache, tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}"
    w = _online_without(tmp_path, shared_cache, {"WANDB_API_KEY": "a" * 40, "WANDB_BASE_URL": url})
    assert w["fallback"].startswith(f"cannot reach {url} ("), w


def test_wandb_init_that_fails_online_falls_back_offline(tmp_path, monkeypatch, capsys):
    """Key and host look fine but wandb.init online raises (say the server refuses the key):
    one line, then the run logs offline."""
    import wandb

    import less.tracking as tracking

    real_init = wandb.init

    def init(*args, mode=None, **kwargs):
        if mode == "online":
            raise wandb.errors.CommError("server said no\nsecond line")
        return real_init(*args, mode=mode, **kwargs)

    monkeypatch.setattr(tracking, "online_problem", lambda cfg: None)
    monkeypatch.setattr(wandb, "init", init)
    cfg = compose(["logger=wandb", "logger.mode=online"], hydra=False).logger
    t = tracking.WandbTracker(cfg, {"x": 1}, tmp_path, name="test")
    try:
        assert (t.mode, t.requested_mode, t.fallback) == ("offline", "online", "wandb.init failed (CommError: server said no)")
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("W&B:")]
        assert err == [f"W&B: {t.fallback}; logging offline to {t.dir}, upload later with: wandb sync {t.dir}"]
    finally:
        t.finish()


def test_k_beyond_the_pool_is_a_warning_in_results_and_summary(tiny_model_dir, shared_cache, tmp_path, capsys):
    """selection.k larger than the ranked pool (600 synthetic examples) selects the whole pool and
    says so: selection.json, results.json ``warnings`` and the printed summary, built or cached."""
    from tests.conftest import run_pipeline

    msg = "selection.k=700 exceeds the 600 ranked pool examples: the whole pool is selected"
    for i, cached in enumerate((False, True)):
        out = tmp_path / f"run{i}"
        res = run_pipeline(["stages=[prepare,select]", "selection=random", "selection.k=700"], shared_cache, out)
        assert res["stages"]["select"]["cached"] is cached and res["selection"]["n_selected"] == 600
        assert res["warnings"] == [msg]
        assert json.loads((out / "results.json").read_text())["warnings"] == [msg]
        assert f"warning: {msg}" in capsys.readouterr().out.splitlines()
    assert json.loads((Path(res["stages"]["select"]["dir"]) / "selection.json").read_text())["warnings"] == [msg]
    res = run_pipeline(["stages=[prepare,select]", "selection=random", "selection.k=600"], shared_cache, tmp_path / "k600")
    assert res["warnings"] == [] and "warning:" not in capsys.readouterr().out


def _hold_lock(lock: Path):
    """A child process that holds the flock on ``lock`` (as a build under way does) until its
    stdin closes."""
    import subprocess
    import sys

    code = ("import fcntl, sys; fh = open(sys.argv[1], 'a+'); fcntl.flock(fh, fcntl.LOCK_EX); "
            "print('locked', flush=True); sys.stdin.read()")
    p = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_stale_build_dirs_are_removed_when_a_run_opens_the_cache(tiny_model_dir, shared_cache, tmp_path, caplog):
    """A killed build's .tmp-<key> (its lock free) goes when the next run opens the cache, stray
    atomic-write temporaries inside it too; one whose lock a live build holds stays, and so do
    resumable .work-<key> chunks."""
    import logging

    from tests.conftest import linked_cache, run_pipeline

    cache = linked_cache(shared_cache, tmp_path / "cache", kinds=("model",))
    stale = cache / "warmup" / ".tmp-0123456789abcdef"
    (stale / "checkpoint-1").mkdir(parents=True)
    (stale / "checkpoint-1" / "adapter.bin").write_bytes(b"x" * 1_500_000)
    (stale / ".key.json.0a1b2c.tmp").write_text("{")
    busy = cache / "features" / ".tmp-fedcba9876543210"
    busy.mkdir(parents=True)
    (busy / "part.npy").write_bytes(b"y" * 100)
    work = cache / "features" / ".work-fedcba9876543210"
    work.mkdir()
    (work / "chunk-000000.npy").write_bytes(b"z")
    holder = _hold_lock(cache / "features" / ".fedcba9876543210.lock")
    caplog.set_level(logging.INFO, logger="less")
    try:
        run_pipeline(["stages=[prepare]"], cache, tmp_path / "out")
    finally:
        holder.stdin.close()
        holder.wait(30)
    assert not stale.exists() and (busy / "part.npy").is_file() and (work / "chunk-000000.npy").is_file()
    said = [r.getMessage() for r in caplog.records if "stale temporary" in r.getMessage()]
    assert said == ["cache: removed 1 stale temporary directory (1.5 MB) left by killed builds"]


@pytest.mark.slow
def test_the_fault_injection_script_kills_and_finds_the_rerun_equal(tmp_path):
    """benchmarks/fault_injection.py on a cheap run (its figures for the default run are in the
    closing note of issue 12): kills land inside the stages aimed at, the rerun equals the clean run."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fault_injection.py"), "--kills-per-stage", "1",
                           "--only", "pool,select", "--dir", str(tmp_path / "faults"), "logger=none",
                           "stages=[prepare,warmup,datastore,select]", "model.tiny.pretrain_steps=20",
                           "warmup.epochs=1"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "faults" / "summary.json").read_text())
    assert [k["stage"] for k in summary["kills"]] == ["pool", "select"]
    assert all(k["rc"] == -9 for k in summary["kills"])
    assert summary["summary"]["differences"] == [] and summary["summary"]["leftovers_after_final_rerun"] == []

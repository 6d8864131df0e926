"""``python -m less.cache_cli list|show|clean|gc`` (less.cache_cli) on a small cache built with the
real ``Cache`` API (tiny files, no model) and fake run directories that refer to some of it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from less.cache import Cache, _tree_bytes
from less.cache_cli import human_size, main

ROOT = Path(__file__).resolve().parents[1]
DAY = 86400


def _build(cache: Cache, kind: str, config: dict, inputs: dict | None = None, size: int = 100):
    spec = {"config": config, "inputs": inputs or {}}
    return cache.get_or_build(kind, spec, lambda d: (d / "data.bin").write_bytes(b"x" * size))


@pytest.fixture
def fake(tmp_path):
    """model, pool, target; two selections; a model trained on each; an eval of the second."""
    cache = Cache(tmp_path / "cache")
    a = {}
    a["model"] = _build(cache, "model", {"kind": "tiny", "path": None, "tiny": {"hidden_size": 64, "num_layers": 2}},
                        size=50_000)
    a["pool"] = _build(cache, "pool", {"name": "synthetic", "n_per_skill": 100}, size=20_000)
    a["target"] = _build(cache, "target", {"name": "synthetic_color", "n_per_subtask": 4}, size=3_000)
    a["less"] = _build(cache, "select", {"selection": {"method": "less", "fraction": 0.05, "k": None}, "seed": 0},
                       {"pool": a["pool"].key, "target": a["target"].key}, size=4_000)
    a["random"] = _build(cache, "select", {"selection": {"method": "random", "fraction": 0.1, "k": None}, "seed": 0},
                         {"pool": a["pool"].key}, size=4_000)
    a["train_less"] = _build(cache, "train", {"train": {"mode": "lora", "epochs": 4, "lr": 0.002}},
                             {"selection": a["less"].key, "model": a["model"].key}, size=8_000)
    a["train_random"] = _build(cache, "train", {"train": {"mode": "lora", "epochs": 4, "lr": 0.002}},
                               {"selection": a["random"].key, "model": a["model"].key}, size=8_000)
    a["eval_random"] = _build(cache, "eval", {"eval": {"tasks": ["less_synthetic_color"], "limit": None}},
                              {"train": a["train_random"].key, "model": a["model"].key}, size=1_000)
    (cache.root / "_wandb").mkdir()  # not a kind: the W&B ledger
    (cache.root / "_wandb" / "0123.json").write_text("{}")
    return cache, a


def _run(args, capsys):
    """main(args) in this process: (exit code, stdout lines, stderr)."""
    code = main(args)
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def _hold_lock(lock: Path):
    """A child process holding the flock on ``lock`` (as a build under way does) until its stdin closes."""
    code = ("import fcntl, sys; fh = open(sys.argv[1], 'a+'); fcntl.flock(fh, fcntl.LOCK_EX); "
            "print('locked', flush=True); sys.stdin.read()")
    p = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def _release(p) -> None:
    p.stdin.close()
    p.wait(30)


def _present(cache: Cache, a: dict) -> set[str]:
    return {name for name, art in a.items() if art.dir.is_dir()}


def test_list_as_a_subprocess_shows_every_artifact_with_its_size(fake):
    cache, a = fake
    env = {**os.environ, "LESS_CACHE_DIR": str(cache.root), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", "less.cache_cli", "list"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr  # no runpy warning
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["KIND", "KEY", "SIZE", "AGE", "CONFIG"]
    rows = {line.split()[1]: line for line in lines[1:-1]}
    assert set(rows) == {art.key for art in a.values()}  # _wandb/ is not a kind
    for art in a.values():
        assert rows[art.key].split()[0] == art.kind
        assert f" {human_size(_tree_bytes(art.dir))} " in rows[art.key]
    assert "method=less fraction=0.05" in rows[a["less"].key]
    assert "kind=tiny hidden_size=64 num_layers=2" in rows[a["model"].key]
    total = sum(_tree_bytes(art.dir) for art in a.values())
    assert lines[-1] == f"8 artifacts, {human_size(total)} in {cache.root}"


def test_list_by_kind_and_as_json(fake, capsys):
    cache, a = fake
    code, out, _ = _run(["--cache-dir", str(cache.root), "list", "--kind", "select"], capsys)
    assert code == 0 and {line.split()[1] for line in out[1:-1]} == {a["less"].key, a["random"].key}
    assert out[-1].startswith("2 artifacts, ")
    code, out, _ = _run(["list", "--json", "--cache-dir", str(cache.root)], capsys)
    data = json.loads("\n".join(out))
    got = {d["key"]: d for d in data["artifacts"]}
    assert set(got) == {art.key for art in a.values()}
    assert got[a["less"].key]["bytes"] == _tree_bytes(a["less"].dir)
    assert got[a["less"].key]["inputs"] == {"pool": a["pool"].key, "target": a["target"].key}
    assert got[a["less"].key]["config"]["selection"]["method"] == "less"
    assert data["total_bytes"] == sum(d["bytes"] for d in data["artifacts"])


def test_show_config_inputs_and_users(fake, capsys):
    cache, a = fake
    code, out, _ = _run(["--cache-dir", str(cache.root), "show", a["less"].key[:6]], capsys)
    assert code == 0
    assert out[:3] == ["kind:   select", f"key:    {a['less'].key}", f"dir:    {a['less'].dir}"]
    assert f"size:   {human_size(_tree_bytes(a['less'].dir))}" in out
    text = "\n".join(out)
    assert "config:\n  selection:\n    method: less\n    fraction: 0.05\n    k: null\n  seed: 0\n" in text
    assert "inputs:\n" in text and f"  pool    pool/{a['pool'].key}" in out and f"  target  target/{a['target'].key}" in out
    assert out[out.index("used by:") + 1:] == [f"  train/{a['train_less'].key}  (selection)"]
    # a missing input is marked; kind/prefix works too
    gone = _build(cache, "select", {"selection": {"method": "less"}}, {"pool": "deadbeefdeadbeef"})
    code, out, _ = _run(["--cache-dir", str(cache.root), "show", f"select/{gone.key}"], capsys)
    assert code == 0 and "  pool  deadbeefdeadbeef (missing)" in out and out[-1] == "used by: (none)"
    code, out, _ = _run(["--cache-dir", str(cache.root), "show", str(a["pool"].dir) + "/"], capsys)
    assert code == 0 and out[1] == f"key:    {a['pool'].key}"
    assert set(out[out.index("used by:") + 1:]) == {f"  select/{a['less'].key}  (pool)",
                                                    f"  select/{a['random'].key}  (pool)"}


def test_ambiguous_or_unknown_key_is_a_one_line_error(fake, capsys):
    cache, a = fake
    by_first: dict[str, list] = {}
    for art in a.values():
        by_first.setdefault(art.key[0], []).append(art)
    i = 0
    while max(len(v) for v in by_first.values()) < 2:  # 17 keys always share a first character
        art = _build(cache, "pool", {"name": "extra", "i": i})
        by_first.setdefault(art.key[0], []).append(art)
        i += 1
    prefix, arts = max(by_first.items(), key=lambda kv: len(kv[1]))
    code, out, err = _run(["--cache-dir", str(cache.root), "show", prefix], capsys)
    assert code == 2 and out == [] and len(err.splitlines()) == 1
    assert err.startswith(f"error: key prefix '{prefix}' is ambiguous: ")
    assert all(f"{art.kind}/{art.key}" in err for art in arts)
    code, _, err = _run(["--cache-dir", str(cache.root), "show", "zzzz"], capsys)
    assert code == 2 and err == f"error: no artifact with key 'zzzz' in {cache.root}\n"
    code, _, err = _run(["--cache-dir", str(cache.root / "nope"), "list"], capsys)
    assert code == 2 and err.startswith("error: cache dir ") and len(err.splitlines()) == 1
    code, _, err = _run(["--cache-dir", str(cache.root), "clean", "--older-than", "7 days"], capsys)
    assert code == 2 and err.startswith("error: --older-than '7 days': ") and len(err.splitlines()) == 1
    code, _, err = _run(["--cache-dir", str(cache.root), "list", "--kind", "wandb"], capsys)
    assert code == 2 and err.startswith("error: no kind 'wandb'")


def test_clean_older_than_is_a_dry_run_unless_yes(fake, capsys):
    cache, a = fake
    old = time.time() - 10 * DAY
    for name in ("pool", "target", "random"):
        os.utime(a[name].dir, (old, old))
    code, out, _ = _run(["--cache-dir", str(cache.root), "clean", "--older-than", "7d"], capsys)
    assert code == 0 and _present(cache, a) == set(a)  # nothing removed
    assert out[0].startswith("would remove 3 artifacts (") and out[-1].startswith("dry run: nothing removed")
    assert {line.split()[1] for line in out[1:4]} == {a[n].key for n in ("pool", "target", "random")}
    code, out, _ = _run(["--cache-dir", str(cache.root), "clean", "--older-than", "7d", "--kind", "select", "--yes"],
                        capsys)
    assert code == 0 and out[0].startswith("removed 1 artifact (") and _present(cache, a) == set(a) - {"random"}
    code, out, _ = _run(["--cache-dir", str(cache.root), "clean", "--older-than", "7d", "--yes"], capsys)
    assert code == 0 and _present(cache, a) == set(a) - {"random", "pool", "target"}
    assert not any(p.name.startswith(".tmp-") for p in cache.root.glob("*/*"))
    assert (cache.root / "_wandb" / "0123.json").is_file()


def test_clean_skips_an_artifact_whose_lock_another_process_holds(fake, capsys):
    cache, a = fake
    holder = _hold_lock(cache.lock_path("select", a["less"].key))
    try:
        code, out, _ = _run(["--cache-dir", str(cache.root), "clean", "--kind", "select", "--yes"], capsys)
    finally:
        _release(holder)
    assert code == 0 and out[0].startswith("removed 1 artifact (")
    assert any(line.startswith(f"skipped select/{a['less'].key}: busy") for line in out)
    assert a["less"].dir.is_dir() and not a["random"].dir.exists()


def _results(path: Path, body: dict) -> None:
    path.mkdir(parents=True)
    (path / ".hydra").mkdir()
    (path / "results.json").write_text(json.dumps(body))


@pytest.fixture
def runs(fake, tmp_path, monkeypatch):
    """outputs/ names the LESS-trained model (artifacts and stages: its inputs are kept through
    key.json); a sweep job under multirun/ names the random selection by its dir only."""
    cache, a = fake
    t = a["train_less"]
    _results(tmp_path / "outputs" / "default" / "2025-01-01_00-00-00",
             {"stages": {"train": {"seconds": 1.0, "cached": True, "dir": str(t.dir), "key": t.key}},
              "artifacts": {"train": {"kind": "train", "key": t.key, "dir": str(t.dir), "cached": True}}})
    _results(tmp_path / "multirun" / "sweep" / "2025-01-01_00-00-00" / "0",
             {"stages": {"select": {"seconds": 1.0, "cached": True, "dir": str(a["random"].dir)}}})
    monkeypatch.chdir(tmp_path)
    return cache, a


def test_gc_keeps_what_runs_refer_to_with_their_inputs(runs, capsys):
    from less.cache import process_tag

    cache, a = runs
    sel = cache.root / "select"
    stale = sel / ".tmp-0123456789abcdef"  # a killed build: its lock is free
    stale.mkdir()
    (stale / "half.bin").write_bytes(b"h" * 5_000)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = process_tag().rsplit("-", 1)[0]
    dead = sel / f".work-{'f' * 16}-{host}-{gone.stdout.strip()}"  # a dead job's per-process work
    dead.mkdir()
    (dead / "chunk.npy").write_bytes(b"c" * 700)
    dead.with_name(dead.name + ".lock").touch()
    done_work = sel / f".work-{a['less'].key}"  # its artifact is finished: what discard() would remove
    (done_work / "claims").mkdir(parents=True)
    open_work = sel / f".work-{'e' * 16}"  # resumable work of an unfinished artifact: kept
    open_work.mkdir()
    (open_work / "chunk.npy").write_bytes(b"c")
    Path("outputs/default/still-running/.hydra").mkdir(parents=True)  # a job with no results.json yet

    code, out, _ = _run(["--cache-dir", str(cache.root), "gc"], capsys)
    assert code == 0 and _present(cache, a) == set(a) and stale.is_dir() and dead.is_dir() and done_work.is_dir()
    text = "\n".join(out)
    assert out[0].startswith("2 run results under outputs, multirun refer to 6 of 8 artifacts")
    assert "would remove 2 artifacts (" in text and "would remove 3 temporary leftovers (" in text
    assert out[-1].startswith("dry run: nothing removed; add --yes to free ")
    assert f"kept select/{open_work.name}: resumable work" in text
    assert out[1].startswith("note: 1 run directory without results.json (running or failed jobs)")

    code, out, _ = _run(["--cache-dir", str(cache.root), "gc", "--yes"], capsys)
    assert code == 0, out
    assert _present(cache, a) == set(a) - {"train_random", "eval_random"}
    assert not stale.exists() and not dead.exists() and not dead.with_name(dead.name + ".lock").exists()
    assert not done_work.exists() and open_work.is_dir() and (cache.root / "_wandb" / "0123.json").is_file()
    assert out[-1].startswith("freed ")
    # nothing is left to collect
    code, out, _ = _run(["--cache-dir", str(cache.root), "gc"], capsys)
    assert "would remove 0 artifacts (0 B)" in out and "would remove 0 temporary leftovers (0 B)" in out


def test_gc_never_removes_a_busy_artifact_or_an_input_of_a_build_under_way(runs, capsys):
    cache, a = runs
    # a build of eval_random's key holds its lock; another build under way takes train_random as input
    building = cache.root / "eval" / ".tmp-abcdefabcdefabcd"
    building.mkdir()
    (building / "key.json").write_text(json.dumps({"kind": "eval", "key": "abcdefabcdefabcd",
                                                   "spec": {"config": {}, "inputs": {"train": a["train_random"].key}}}))
    holders = [_hold_lock(cache.lock_path("eval", a["eval_random"].key)),
               _hold_lock(cache.lock_path("eval", "abcdefabcdefabcd"))]
    try:
        code, out, _ = _run(["--cache-dir", str(cache.root), "gc", "--yes"], capsys)
    finally:
        for h in holders:
            _release(h)
    assert code == 0, out
    assert _present(cache, a) == set(a) and building.is_dir()
    text = "\n".join(out)
    assert f"skipped eval/{a['eval_random'].key}: busy" in text
    assert f"skipped train/{a['train_random'].key}: an input of eval/abcdefabcdefabcd" in text
    assert "kept eval/.tmp-abcdefabcdefabcd: a build under way holds its lock" in text
    # once they are done, gc removes them
    code, out, _ = _run(["--cache-dir", str(cache.root), "gc", "--yes"], capsys)
    assert code == 0 and _present(cache, a) == set(a) - {"train_random", "eval_random"} and not building.exists()


def test_gc_refuses_without_run_results(fake, tmp_path, monkeypatch, capsys):
    cache, a = fake
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(["--cache-dir", str(cache.root), "gc", "--yes"], capsys)
    assert code == 2 and err.startswith("error: no run directories") and _present(cache, a) == set(a)
    (tmp_path / "outputs").mkdir()
    code, _, err = _run(["--cache-dir", str(cache.root), "gc", "--yes"], capsys)
    assert code == 2 and err.startswith("error: no results.json under outputs") and _present(cache, a) == set(a)
    code, _, err = _run(["--cache-dir", str(cache.root), "gc", "--runs", "missing"], capsys)
    assert code == 2 and err == "error: --runs missing: no such directory\n"

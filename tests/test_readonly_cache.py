"""Read-only cache roots (``cache_readonly``, ``$LESS_CACHE_READONLY``): an artifact found there is
used in place, never written, locked or removed; what is built goes to ``cache_dir``."""

from __future__ import annotations

import os
from pathlib import Path

from less.cache import Cache
from less.cache_cli import main as cache_main
from tests.conftest import run_pipeline, with_session_models

RUN = ["selection=random", "stages=[prepare,select]"]


def snapshot(root: Path) -> dict[str, int]:
    """Every path under ``root`` (hidden ones too) with its mtime: any write shows."""
    return {str(p.relative_to(root)): p.lstat().st_mtime_ns for p in root.rglob("*")}


def test_an_artifact_in_a_readonly_root_is_used_in_place_and_never_written(shared_cache, tmp_path, monkeypatch, capsys):
    shared, mine = with_session_models(shared_cache, tmp_path / "shared"), tmp_path / "mine"
    first = run_pipeline(RUN, shared, tmp_path / "o1")
    before = snapshot(shared)
    res = run_pipeline([*RUN, f"cache_readonly=[{shared}]"], mine, tmp_path / "o2")
    for name in ("pool", "target", "select"):
        a = res["artifacts"][name]
        assert a["cached"] and Path(a["dir"]).parent.parent == shared.resolve() and a["key"] == first["artifacts"][name]["key"]
    assert snapshot(shared) == before  # no lock, no index entry, no temporary directory
    # a new selection on top of the shared pool and target is built in the writable root
    more = run_pipeline([*RUN, "selection.fraction=0.2", f"cache_readonly=[{shared}]"], mine, tmp_path / "o3")
    assert not more["artifacts"]["select"]["cached"] and Path(more["artifacts"]["select"]["dir"]).is_relative_to(mine.resolve())
    assert more["artifacts"]["pool"]["cached"] and Path(more["artifacts"]["pool"]["dir"]).is_relative_to(shared.resolve())
    assert snapshot(shared) == before
    # the environment variable does the same; cache commands act on the writable root alone
    monkeypatch.setenv("LESS_CACHE_READONLY", f"{tmp_path / 'nowhere'}{os.pathsep}{shared}")
    assert Cache(mine).readonly == [(tmp_path / "nowhere").resolve(), shared.resolve()]
    again = run_pipeline(RUN, tmp_path / "third", tmp_path / "o4")
    assert all(again["artifacts"][n]["cached"] for n in ("pool", "target", "select"))
    capsys.readouterr()
    assert cache_main(["clean", "--cache-dir", str(tmp_path / "third"), "--yes"]) == 0
    assert snapshot(shared) == before

"""A new stage that reports, links and costs something is one declaration plus its place in the
graph: the runner, results.json, the summary, the accounting and the plan pick it up without an
edit (docs/extending.md)."""

from __future__ import annotations

import json
from pathlib import Path

from less.cache import write_json_atomic
from less.data.formats import read_examples
from less.graph import Context, Inputs, Stage
from less.results import Cost
from less.runner import Runner
from less.stages import GRAPH
from tests.conftest import compose


def build(ctx: Context, inputs: Inputs, out: Path) -> None:
    rows = read_examples(inputs["pool"].dir / "pool.jsonl")
    chars = [sum(len(m["content"]) for m in r["messages"]) for r in rows]
    write_json_atomic(out / "lengths.json", {"n": len(chars), "chars": sum(chars), "longest": max(chars)})


def read(art) -> dict:
    return json.loads((art.dir / "lengths.json").read_text())


POOL_LENGTHS = Stage(
    "pool_lengths", step="prepare", build=build, inputs=lambda ctx: {"pool": "pool"},
    config=lambda ctx: {"unit": "characters"}, links=("lengths.json",),
    report=lambda ctx, art: {"pool_lengths": read(art)},
    summary=lambda r: [f"pool lengths: {r['pool_lengths']['chars']} characters, longest {r['pool_lengths']['longest']}"],
    accounting=lambda ctx, art: {"tokens": {"pool_chars": read(art)["chars"]}} if art is not None else {},
    cost=lambda ctx, art: Cost("model", 2, read(art)["chars"] if art is not None else None, 1))


def test_a_new_stage_reports_links_and_costs_without_touching_the_engine(tmp_path, capsys):
    cfg = compose([f"cache_dir={tmp_path / 'cache'}", "logger=none", "stages=[prepare]"], hydra=False)
    res = Runner(cfg, tmp_path / "out", graph=(*GRAPH, POOL_LENGTHS)).run()
    mine = res["pool_lengths"]
    assert mine["n"] == res["data"]["pool"]["n"] == 600 and mine["longest"] > 0
    assert res["accounting"]["tokens"]["pool_chars"] == mine["chars"]
    assert res["accounting"]["flops"]["pool_lengths"] == 2 * res["accounting"]["params"]["model"] * mine["chars"]
    assert json.loads((tmp_path / "out" / "lengths.json").read_text()) == mine  # linked into the run directory
    assert f"pool lengths: {mine['chars']} characters" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "results.json").read_text())["pool_lengths"] == mine

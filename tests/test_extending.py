"""What a user adds is one file (plus its YAML): a pool kind and an eval task are registered here,
in this one module, and run through the pipeline as run.py composes it (docs/extending.md; the
selection method's twin is tests/test_registry.py). Their data enters the keys by content."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig

from less.data.kinds import POOLS, pool_kind
from less.errors import ConfigError
from less.evaluation.tasks import EVAL_TASKS, Built, eval_task
from less.identity import file_id
from tests.conftest import run_pipeline, with_session_models


# -- a pool kind: one prompt per line of a text file, answered by the line reversed ------------------
@pool_kind("lines_test", reads=lambda pool, data: {"file": file_id(pool.file)})
def lines_pool(pool: DictConfig, data: DictConfig) -> list[dict[str, Any]]:
    lines = Path(pool.file).read_text().splitlines()
    return [{"id": f"line_{i}", "dataset": "lines", "messages": [
        {"role": "user", "content": f"Reverse: {t}"}, {"role": "assistant", "content": t[::-1]}]}
        for i, t in enumerate(lines) if t]


# -- an eval task: multiple choice over questions under data.root/toy/ -------------------------------
@eval_task("toy_mc_test", reads=lambda e: ["toy"])
def toy_mc(root: Path, out: Path, e: DictConfig, tokenizer) -> Built:
    rows = [json.loads(x) for x in open(root / "toy" / "questions.jsonl")]
    data = out / "toy_mc_test.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "toy_mc_test.yaml").write_text(
        "task: toy_mc_test\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {data.resolve()}\ntest_split: test\noutput_type: multiple_choice\n"
        "doc_to_text: prompt\ndoc_to_choice: choices\ndoc_to_target: label\ntarget_delimiter: ''\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")
    return Built("toy_mc_test", "toy_mc_test")


def conf_dir(tmp_path: Path) -> str:
    """The pool kind's one YAML, on Hydra's search path as a user's own conf folder would be."""
    (tmp_path / "conf" / "pool").mkdir(parents=True)
    (tmp_path / "conf" / "pool" / "lines.yaml").write_text("name: lines\nkind: lines_test\nfile: ???\n")
    return f"hydra.searchpath=[file://{tmp_path / 'conf'}]"


def test_a_new_pool_kind_runs_through_the_pipeline_and_its_file_is_keyed_by_content(shared_cache, tmp_path):
    assert "lines_test" in POOLS.names()
    text = tmp_path / "lines.txt"
    text.write_text("\n".join(f"word{i} and more" for i in range(40)))
    cache = with_session_models(shared_cache, tmp_path / "cache")
    run = [conf_dir(tmp_path), "pool=lines", f"pool.file={text}", "selection=random", "stages=[prepare,select]"]
    res = run_pipeline(run, cache, tmp_path / "o1")
    pool = res["data"]["pool"]
    assert (pool["n"], pool["by_source"], res["selection"]["n_selected"]) == (40, {"lines": 40}, 2), pool
    moved = tmp_path / "elsewhere" / "lines.txt"  # the same file (name and bytes) in another directory
    moved.parent.mkdir()
    moved.write_bytes(text.read_bytes())
    again = run_pipeline([*run[:2], f"pool.file={moved}", *run[3:]], cache, tmp_path / "o2")
    assert again["artifacts"]["pool"]["cached"] and again["artifacts"]["pool"]["key"] == res["artifacts"]["pool"]["key"]


def test_a_new_eval_task_runs_through_the_pipeline(shared_cache, tmp_path):
    assert "toy_mc_test" in EVAL_TASKS.names()
    (tmp_path / "data" / "toy").mkdir(parents=True)
    rows = [{"prompt": f"<|user|>\nWhich is {w}?\n<|assistant|>\n", "choices": [f"Answer: {w}.", "Answer: none."],
             "label": 0} for w in ("red", "blue", "green", "pink")]
    (tmp_path / "data" / "toy" / "questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cache = with_session_models(shared_cache, tmp_path / "cache")
    res = run_pipeline([f"data.root={tmp_path / 'data'}", "eval.model=base", "eval.tasks=[toy_mc_test]", "eval.base=false",
                        "stages=[eval]"], cache, tmp_path / "o1")
    acc = res["eval"]["toy_mc_test"]["acc"]
    assert 0.0 <= acc <= 1.0 and res["artifacts"]["eval"]["cached"] is False


def test_kinds_and_tasks_are_found_by_name_or_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"pool.kind must be one of \[.*'jsonl'.*'lines_test'.*\], got 'nope'"):
        POOLS.get("nope")
    with pytest.raises(ValueError, match="registered twice"):
        pool_kind("jsonl")(lambda pool, data: [])

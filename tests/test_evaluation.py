"""Evaluation: the paper's MMLU / TyDiQA / BBH protocol as lm-eval tasks, metrics, standalone use."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from less.evaluation.task_utils import (bbh_exact_match, bbh_extract, bbh_process_results, squad_f1,
                                         tydiqa_process_results)
from tests.conftest import DATA, compose, needs_data, run_pipeline


def test_squad_f1_by_hand():
    # pred tokens: eiffel tower in paris (the article goes); gold: eiffel tower -> P=2/4, R=2/2
    assert squad_f1("The Eiffel Tower in Paris!", "Eiffel Tower") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert squad_f1("Paris", "London") == 0.0
    got = tydiqa_process_results({"answers": ["Kigali", "the city of Kigali"]}, ["city of Kigali, Rwanda\nmore"])
    # best gold: "city of kigali" vs pred "city of kigali rwanda" -> P=3/4, R=3/3
    assert got["f1"] == pytest.approx(100 * 2 * 0.75 / 1.75) and got["exact_match"] == 0.0
    assert tydiqa_process_results({"answers": ["Kigali"]}, [" kigali."])["exact_match"] == 100.0


@pytest.mark.parametrize("text,answer", [
    ("Let's think. So the answer is (B).", "(B)"),
    ("So the answer is  Yes .\n", "Yes"),  # the group is stripped
    ("So the answer is (A). So the answer is (B).", "(A)"),  # the first match
    ("So the answer is 3.5.", "3"),  # up to the first period
    # case-sensitive "So the answer is": lower case "the answer is" falls back to the whole output
    ("the answer is (B).", "the answer is (B)."),
    ("So The answer is 12/14/1937.", "So The answer is 12/14/1937."),
    ("Thus the answer is True. Then more.", "Thus the answer is True. Then more."),
    # no period after the answer: the output up to its first blank line, stripped
    ("  So the answer is (A)\n\nQ: next question", "So the answer is (A)"),
    ("no marker here  ", "no marker here"),
])
def test_bbh_answer_parser_is_the_references(text, answer):
    assert bbh_extract(text) == answer


@pytest.mark.parametrize("prediction,target,score", [
    ("(b)", "(B)", 1.0),           # case ignored
    ("A", "(A)", 1.0),             # ASCII punctuation deleted, parentheses included
    ("valid.", "valid", 1.0),
    ("12/14/1937", "12141937", 1.0),
    ("Yes ", "Yes", 0.0),          # whitespace is not stripped
    ("])", "] )", 0.0),            # nor collapsed (dyck_languages targets are space separated)
    ("Yes\u3002", "Yes", 0.0),     # only string.punctuation is deleted
    ("True", "False", 0.0),
])
def test_bbh_exact_match_is_evaluates_ignore_case_and_punctuation(prediction, target, score):
    assert bbh_exact_match(prediction, target) == score


def test_bbh_score_of_an_output():
    assert bbh_process_results({"target": "(B)"}, ["... So the answer is (b)."])["exact_match"] == 1.0
    assert bbh_process_results({"target": "False"}, ["So the answer is True."])["exact_match"] == 0.0
    # lower-case marker: the whole output is compared (and fails) where "[tT]he answer is" would score
    assert bbh_process_results({"target": "(B)"}, ["Hence the answer is (B)."])["exact_match"] == 0.0
    assert bbh_process_results({"target": "valid"}, ["valid\n\nQ: more"])["exact_match"] == 1.0


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _build(root: Path, out: Path, overrides: list[str], tokenizer=None):
    from less.evaluation.tasks import build_tasks

    cfg = compose([f"data.root={root}", *overrides], hydra=False)
    return build_tasks(cfg.eval, cfg.data, out, tokenizer)


def test_bbh_sample_and_prompt_are_the_references(tmp_path):
    """40 per task drawn by one RNG seeded 42 over the tasks in order; the prompt is the CoT file
    minus its first two lines, stripped, then "\n\nQ: {input}\nA:"."""
    root = tmp_path / "data"
    (root / "bbh" / "bbh").mkdir(parents=True)
    (root / "bbh" / "cot-prompts").mkdir(parents=True)
    tasks = {}
    for name in ("navigate", "date_understanding"):
        tasks[name] = [{"input": f"{name} question {i}", "target": "Yes"} for i in range(50)]
        (root / "bbh" / "bbh" / f"{name}.json").write_text(json.dumps({"examples": tasks[name]}))
        (root / "bbh" / "cot-prompts" / f"{name}.txt").write_text(
            f"CANARY line\n-----\n{name} description.\n\nQ: shot\nA: So the answer is Yes.\n\n")
    _build(root, tmp_path / "tasks", ["eval.tasks=[bbh]", "eval.bbh.per_task=4"])
    rng = random.Random(42)
    for name in sorted(tasks):
        rows = _read_jsonl(tmp_path / "tasks" / f"bbh_{name}.jsonl")
        assert [r["input"] for r in rows] == [r["input"] for r in rng.sample(tasks[name], 4)]
        assert rows[0]["prompt"] == (f"{name} description.\n\nQ: shot\nA: So the answer is Yes."
                                     f"\n\nQ: {rows[0]['input']}\nA:")


@pytest.fixture(scope="module")
def paper_eval(tiny_model_dir, shared_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("paper-eval")
    run_pipeline(["stages=[eval]", "eval.model=base", "eval.tasks=[mmlu,tydiqa,bbh]", "eval.limit=2",
                  "eval.max_gen_toks=8", f"data.root={DATA}", "logger=wandb"], shared_cache, out)
    return out


@needs_data
def test_three_tasks_run_with_subtask_metrics(paper_eval):
    out = paper_eval
    ev = json.loads((out / "results.json").read_text())["eval"]
    expect = {"mmlu": ("acc", 57, 1), "tydiqa": ("f1", 9, 100), "bbh": ("exact_match", 27, 1)}
    for task, (metric, n_sub, top) in expect.items():
        assert 0 <= ev[task][metric] <= top, (task, ev[task])
        assert len(ev[task]["subtasks"]) == n_sub
        assert all(0 <= s[metric] <= top for s in ev[task]["subtasks"].values())
    assert "abstract_algebra" in ev["mmlu"]["subtasks"] and "swahili" in ev["tydiqa"]["subtasks"]
    # the W&B run carries the subtask metrics too
    from tests.wandb_records import read_records

    res = json.loads((out / "results.json").read_text())
    keys = set()
    for rec in read_records(next(Path(res["wandb"]["dir"]).glob("run-*.wandb"))):
        if rec.WhichOneof("record_type") == "history":
            keys |= {u.key or "/".join(u.nested_key) for u in rec.history.item}
    assert "eval/mmlu/acc" in keys and "eval/bbh/subtasks/navigate/exact_match" in keys


@needs_data
def test_mmlu_request_is_the_papers_five_shot_prompt(paper_eval):
    out = paper_eval
    d = Path(json.loads((out / "results.json").read_text())["stages"]["eval"]["dir"])
    sample = json.loads((d / "samples" / "less_mmlu_anatomy.jsonl").read_text().splitlines()[0])
    dev = list(csv.reader(open(DATA / "mmlu" / "dev" / "anatomy_dev.csv", encoding="utf-8")))
    test = list(csv.reader(open(DATA / "mmlu" / "test" / "anatomy_test.csv", encoding="utf-8")))

    def fmt(row, answer):  # open-instruct's format_example
        return row[0] + "".join(f"\n{c}. {row[i + 1]}" for i, c in enumerate("ABCD")) + "\nAnswer:" + (
            f" {row[5]}\n\n" if answer else "")

    expected = ("The following are multiple choice questions (with answers) about  anatomy.\n\n"
                + "".join(fmt(r, True) for r in dev[:5]) + fmt(test[sample["doc_id"]], False))
    context, continuation = sample["arguments"][0]
    assert context == expected and continuation == " A"


@needs_data
def test_tydiqa_and_bbh_prompts(paper_eval):
    out = paper_eval
    tasks = Path(json.loads((out / "results.json").read_text())["stages"]["eval"]["dir"]) / "samples"
    ty = json.loads((tasks / "less_tydiqa_en.jsonl").read_text().splitlines()[0])
    prompt = ty["arguments"][0][0]
    assert prompt.startswith("<|user|>\nAnswer the following question based on the information in the given "
                             "passage.\n\nPassage: ")
    assert prompt.endswith("\n\n<|assistant|>\nAnswer:") and prompt.count("Passage:") == 2
    assert ty["arguments"][0][1]["until"] == ["\n"]
    bbh = json.loads((tasks / "less_bbh_navigate.jsonl").read_text().splitlines()[0])
    p = bbh["arguments"][0][0]
    assert p.count("\n\nQ: ") == 4 and p.endswith("\nA:") and "<|user|>" not in p  # 3 exemplars + question
    assert bbh["arguments"][0][1]["until"] == ["\n\n"]


def test_standalone_eval_of_an_adapter_without_merging(default_run, shared_cache, tmp_path):
    """stages=[eval] eval.model=<base> eval.adapter=<dir> scores what the pipeline's eval scored."""
    res = default_run[1]
    adapter = Path(res["stages"]["train"]["dir"]) / "adapter"
    base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    alone = run_pipeline(["stages=[eval]", f"eval.model={base}", f"eval.adapter={adapter}"], shared_cache, tmp_path)
    assert set(alone["stages"]) == {"eval"}
    assert alone["eval"]["less_synthetic_arithmetic"]["acc"] == res["eval"]["less_synthetic_arithmetic"]["acc"]

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


def _bbh_root(root: Path) -> dict[str, list[dict]]:
    """Two BBH tasks of 50 questions with CoT prompt files laid out as the originals (2 header lines)."""
    (root / "bbh" / "bbh").mkdir(parents=True)
    (root / "bbh" / "cot-prompts").mkdir(parents=True)
    tasks = {}
    for name in ("navigate", "date_understanding"):
        tasks[name] = [{"input": f"{name} question {i}", "target": "Yes"} for i in range(50)]
        (root / "bbh" / "bbh" / f"{name}.json").write_text(json.dumps({"examples": tasks[name]}))
        (root / "bbh" / "cot-prompts" / f"{name}.txt").write_text(
            f"CANARY line\n-----\n{name} description.\n\nQ: shot\nA: So the answer is Yes.\n\n")
    return tasks


def test_bbh_sample_and_prompt_are_the_references(tmp_path):
    """40 per task drawn by one RNG seeded 42 over the tasks in order; the prompt is the CoT file
    minus its first two lines, stripped, then "\n\nQ: {input}\nA:"."""
    root = tmp_path / "data"
    tasks = _bbh_root(root)
    _build(root, tmp_path / "tasks", ["eval.tasks=[bbh]", "eval.bbh.per_task=4"])
    rng = random.Random(42)
    for name in sorted(tasks):
        rows = _read_jsonl(tmp_path / "tasks" / f"bbh_{name}.jsonl")
        assert [r["input"] for r in rows] == [r["input"] for r in rng.sample(tasks[name], 4)]
        assert rows[0]["prompt"] == (f"{name} description.\n\nQ: shot\nA: So the answer is Yes."
                                     f"\n\nQ: {rows[0]['input']}\nA:")


LANGS = ["arabic", "bengali", "english", "finnish", "indonesian", "korean", "russian", "swahili", "telugu"]


def _squad(rows: list[dict]) -> dict:
    """SQuAD layout, one article per row."""
    return {"data": [{"title": r["id"], "paragraphs": [{"context": r["context"], "qas": [
        {"id": r["id"], "question": r["question"], "answers": [{"text": r["answer"], "answer_start": 0}]}]}]}
        for r in rows]}


def _train_rows(n: int) -> dict[str, list[dict]]:
    return {lang: [{"id": f"{lang}-train-{i}", "context": f"{lang} train passage {i}.",
                    "question": f"{lang} train question {i}?", "answer": f"train answer {i}"} for i in range(n)]
            for lang in LANGS}


def _write_train(path: Path, train: dict[str, list[dict]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_squad([r for rows in train.values() for r in rows])))
    return path


def _tydiqa_root(root: Path, n_dev: int = 5) -> tuple[dict, dict]:
    """A data root with a TyDiQA-GoldP dev file and the D_val exemplars, no train split."""
    dev = {lang: [{"id": f"{lang}-dev-{i}", "context": f"{lang} dev passage {i}.", "question": f"{lang} dev question {i}?",
                   "answer": f"dev answer {i}"} for i in range(n_dev)] for lang in LANGS}
    dval = {lang: [{"id": f"{lang}-dval", "lang": lang, "context": f"{lang} dval passage.",
                    "question": f"{lang} dval question?", "answers": [{"text": "dval answer", "answer_start": 0}]}]
            for lang in LANGS}
    (root / "tydiqa").mkdir(parents=True)
    (root / "tydiqa" / "tydiqa-goldp-v1.1-dev.json").write_text(json.dumps(_squad([r for v in dev.values() for r in v])))
    (root / "tydiqa" / "tydiqa-one-shot.json").write_text(json.dumps(dval))
    return dev, dval


def _expected_draw(dev: dict, train: dict, per_language: int) -> tuple[dict, dict]:
    """The reference's draws (random.seed(42); per language the test questions, then per language
    one train example) with one Random(42) and the languages in sorted order."""
    rng = random.Random(42)
    tests = {lang: rng.sample(dev[lang], per_language) if len(dev[lang]) > per_language else dev[lang]
             for lang in sorted(LANGS)}
    return tests, {lang: rng.sample(train[lang], 1)[0] for lang in sorted(LANGS)}


def _demo(lang: str, ex: dict) -> str:
    from less.data.targets import TYDIQA_TEMPLATES

    _, p_t, q_t, a_t = TYDIQA_TEMPLATES[lang]
    return f"{p_t} {ex['context']}\n{q_t} {ex['question']}\n{a_t} {ex['answer']}\n\n{p_t} "


@pytest.mark.parametrize("where", ["tydiqa", "eval/tydiqa", "train_file"])
def test_tydiqa_demo_is_the_references_seeded_draw_from_the_train_split(tmp_path, where):
    from less.evaluation.tasks import TYDIQA_CODES

    root = tmp_path / "data"
    dev, dval = _tydiqa_root(root)
    train = _train_rows(4)
    name = "tydiqa-goldp-v1.1-train.json"
    path = _write_train(tmp_path / name if where == "train_file" else root / where / name, train)
    built = _build(root, tmp_path / "tasks", ["eval.tasks=[tydiqa]", "eval.tydiqa.per_language=3"]
                   + ([f"eval.tydiqa.train_file={path}"] if where == "train_file" else []))
    assert built[0].info["shot_source"] == str(path.resolve())
    tests, shots = _expected_draw(dev, train, 3)
    for lang, code in TYDIQA_CODES.items():
        rows = _read_jsonl(tmp_path / "tasks" / f"tydiqa_{code}.jsonl")
        assert [r["id"] for r in rows] == [r["id"] for r in tests[lang]]
        for r in rows:
            assert _demo(lang, shots[lang]) in r["prompt"] and r["prompt"].count(" train passage ") == 1
            assert dval[lang][0]["question"] not in r["prompt"]


def test_tydiqa_train_split_from_the_hub_is_the_same_draw(tmp_path, monkeypatch):
    """No local train file, hub allowed: datasets.load_dataset(hub_dataset, hub_config, split="train")
    (stubbed here: tests stay offline), its rows converted like the file's."""
    import datasets

    from less.evaluation.tasks import TYDIQA_CODES

    root = tmp_path / "data"
    dev, _ = _tydiqa_root(root)
    train = _train_rows(4)
    calls = []

    def load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return [{"id": r["id"], "title": "t", "context": r["context"], "question": r["question"],
                 "answers": {"text": [r["answer"]], "answer_start": [0]}} for rows in train.values() for r in rows]

    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    built = _build(root, tmp_path / "tasks", ["eval.tasks=[tydiqa]", "eval.tydiqa.per_language=3"])
    assert calls == [(("google-research-datasets/tydiqa", "secondary_task"), {"split": "train"})]
    assert built[0].info["shot_source"] == "hub:google-research-datasets/tydiqa/secondary_task:train"
    _, shots = _expected_draw(dev, train, 3)
    for lang, code in TYDIQA_CODES.items():
        assert _demo(lang, shots[lang]) in _read_jsonl(tmp_path / "tasks" / f"tydiqa_{code}.jsonl")[0]["prompt"]


def test_tydiqa_hub_failure_is_a_one_line_error(tmp_path, monkeypatch):
    import datasets

    from less.errors import DataError

    def load_dataset(*args, **kwargs):
        raise ConnectionError("no network\nsecond line")

    root = tmp_path / "data"
    _tydiqa_root(root)
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    with pytest.raises(DataError) as err:
        _build(root, tmp_path / "tasks", ["eval.tasks=[tydiqa]"])
    msg = str(err.value)
    assert "\n" not in msg and "google-research-datasets/tydiqa/secondary_task failed: ConnectionError" in msg
    assert "eval.tydiqa.train_file" in msg and "eval.tydiqa.shot_source=dval" in msg


def test_tydiqa_demo_passage_is_cut_like_the_test_passages(tmp_path, tiny_tokenizer):
    from less.evaluation.tasks import build_tydiqa

    root = tmp_path / "data"
    _tydiqa_root(root)
    long = {lang: [{"id": f"{lang}-train-0", "context": " ".join(f"word{i}" for i in range(200)),
                    "question": "q?", "answer": "a"}] for lang in LANGS}
    path = _write_train(tmp_path / "train.json", long)
    t = compose([f"eval.tydiqa.train_file={path}"], hydra=False).eval.tydiqa
    (tmp_path / "tasks").mkdir()
    build_tydiqa(root, tmp_path / "tasks", "paper", t, tiny_tokenizer, max_context=8)
    ids = tiny_tokenizer(long["english"][0]["context"], add_special_tokens=False)["input_ids"]
    cut = tiny_tokenizer.decode(ids[:8])
    assert len(ids) > 8 and cut != long["english"][0]["context"]
    prompt = _read_jsonl(tmp_path / "tasks" / "tydiqa_en.jsonl")[0]["prompt"]
    assert f"Passage: {cut}\nQuestion: q?\nAnswer: a\n\n" in prompt


def test_tydiqa_without_a_train_split_offline_is_a_one_line_error(tmp_path, capsys):
    """Offline, no train file: the run stops before any stage (the eval comes after hours of
    training) with one line naming the files looked for and both options; building the tasks
    directly (data.root resolved later, e.g. from the hub) stops with the same message."""
    from less.errors import DataError
    from tests.conftest import run_expecting_error

    root = tmp_path / "data"
    _tydiqa_root(root)
    cache = tmp_path / "cache"
    err = run_expecting_error(["eval.tasks=[tydiqa]", "eval=paper", f"data.root={root}"], cache, tmp_path / "out", capsys)
    for needed in (root / "tydiqa" / "tydiqa-goldp-v1.1-train.json", root / "eval" / "tydiqa" / "tydiqa-goldp-v1.1-train.json",
                   "eval.tydiqa.train_file=", "eval.tydiqa.shot_source=dval", "HF_HUB_OFFLINE is set"):
        assert str(needed) in err, err
    assert not any(cache.glob("*/*"))  # nothing was built
    with pytest.raises(DataError) as built:
        _build(root, tmp_path / "tasks", ["eval.tasks=[tydiqa]"])
    assert f"error: {built.value}" == err


def test_tydiqa_train_file_that_is_missing_is_named(tmp_path):
    from less.errors import DataError

    root = tmp_path / "data"
    _tydiqa_root(root)
    with pytest.raises(DataError, match=r"nope\.json: TyDiQA-GoldP train file not found \(set by eval\.tydiqa\.train_file\)"):
        _build(root, tmp_path / "tasks", ["eval.tasks=[tydiqa]", f"eval.tydiqa.train_file={tmp_path / 'nope.json'}"])


@pytest.mark.parametrize("override,message", [
    ("eval.tydiqa.shot_source=test", "eval.tydiqa.shot_source must be train or dval, got 'test'"),
    ("eval.tydiqa.per_language=0", "eval.tydiqa.per_language must be a positive integer or null (all), got 0"),
    ("eval.bbh.per_task=ten", "eval.bbh.per_task must be a positive integer or null (all), got 'ten'"),
])
def test_eval_tydiqa_and_bbh_settings_are_validated(shared_cache, tmp_path, capsys, override, message):
    from tests.conftest import run_expecting_error

    err = run_expecting_error(["stages=[eval]", "eval.model=base", "eval.tasks=[tydiqa,bbh]", override],
                              shared_cache, tmp_path, capsys)
    assert err == f"error: {message}"


def test_tydiqa_dval_shot_source_runs_and_is_recorded(tiny_model_dir, shared_cache, tmp_path):
    """eval.tydiqa.shot_source=dval: the D_val exemplar is every prompt's demo (no train split needed)."""
    root = tmp_path / "data"
    _, dval = _tydiqa_root(root)
    res = run_pipeline(["stages=[eval]", "eval.model=base", "eval.tasks=[tydiqa]", "eval.limit=1", "eval.max_gen_toks=2",
                        "eval.tydiqa.shot_source=dval", f"data.root={root}"], shared_cache, tmp_path / "out")
    assert res["eval"]["tydiqa_shot_source"] == f"dval:{root / 'tydiqa' / 'tydiqa-one-shot.json'}"
    assert len(res["eval"]["tydiqa"]["subtasks"]) == 9
    rows = _read_jsonl(Path(res["stages"]["eval"]["dir"]) / "tasks" / "tydiqa_sw.jsonl")
    ex = dval["swahili"][0]
    assert _demo("swahili", {**ex, "answer": ex["answers"][0]["text"]}) in rows[0]["prompt"]


def test_lm_eval_protocol_needs_no_train_split_and_its_tasks_load(tmp_path):
    """protocol=lm_eval: lm-eval's own prompts (no demo, so no train split) on the same samples."""
    from lm_eval.tasks import TaskManager, get_task_dict

    from less.validate import validate

    root = tmp_path / "data"
    _tydiqa_root(root)
    _bbh_root(root)
    overrides = ["eval.tasks=[tydiqa,bbh]", "eval.protocol=lm_eval", "eval.bbh.per_task=4"]
    validate(compose([f"data.root={root}", "stages=[eval]", *overrides], hydra=False))
    built = _build(root, tmp_path / "tasks", overrides)
    assert built[0].info == {"shot_source": "none (protocol=lm_eval)"} and not (tmp_path / "tasks" / "tydiqa_shots.json").exists()
    loaded = {name: task for group in get_task_dict(["less_tydiqa", "less_bbh"], TaskManager(
        include_path=str(tmp_path / "tasks"))).values() for name, task in group.items()}
    en = loaded["less_tydiqa_en"]
    assert [d["id"] for d in en.eval_docs] == [f"english-dev-{i}" for i in range(5)]
    assert en.doc_to_text(en.eval_docs[0]) == "Context: english dev passage 0.\n\nQuestion: english dev question 0?\n\nAnswer:"
    nav = loaded["less_bbh_navigate"]
    assert len(nav.eval_docs) == 4 and nav.doc_to_text(nav.eval_docs[0]).startswith("Q: navigate question ")


@pytest.mark.parametrize("data", ["synthetic", pytest.param("real", marks=needs_data)])
def test_generated_tasks_hold_no_code_and_use_the_packages_metrics(data, tmp_path):
    """The task folder is generated inside the cache: it holds no .py file and no ``!function``
    (lm-eval would import Python from there); the TyDiQA and BBH YAMLs include the package's
    templates, so lm-eval's own loader resolves process_results to the package's task_utils.py,
    and the loaded tasks score as those functions do."""
    from lm_eval.tasks import TaskManager, get_task_dict
    from lm_eval.tasks._yaml_loader import load_yaml

    import less.evaluation.task_utils as task_utils

    root = DATA if data == "real" else tmp_path / "data"
    if data == "synthetic":
        _tydiqa_root(root)
        _bbh_root(root)
    train = _write_train(tmp_path / "train.json", _train_rows(3))
    out = tmp_path / "tasks"
    _build(root, out, ["eval.tasks=[tydiqa,bbh]", f"eval.tydiqa.train_file={train}", "eval.tydiqa.per_language=2",
                       "eval.bbh.per_task=2"])
    assert [p.name for p in out.rglob("*") if p.suffix not in (".yaml", ".jsonl", ".json")] == []
    yamls = sorted(out.glob("less_*.yaml"))
    assert all("!function" not in y.read_text() for y in yamls)
    package_file = str(Path(task_utils.__file__).resolve())
    tasks = [y for y in yamls if y.stem not in ("less_tydiqa", "less_bbh")]
    assert len(tasks) == 9 + (2 if data == "synthetic" else 27)  # languages + BBH tasks
    for y in tasks:
        fn = load_yaml(y)["process_results"]
        assert fn.__name__ == ("tydiqa" if "tydiqa" in y.stem else "bbh") + "_process_results"
        assert fn.__code__.co_filename == package_file
    loaded = {name: task for group in get_task_dict(["less_tydiqa", "less_bbh"], TaskManager(
        include_path=str(out))).values() for name, task in group.items()}
    doc = {"answers": ["Kigali", "the city of Kigali"]}
    assert loaded["less_tydiqa_sw"].process_results(doc, ["city of Kigali, Rwanda"]) == \
        task_utils.tydiqa_process_results(doc, ["city of Kigali, Rwanda"])
    assert loaded["less_bbh_navigate"].process_results({"target": "(B)"}, ["So the answer is (b)."]) == {"exact_match": 1.0}


@pytest.fixture(scope="module")
def paper_eval(tiny_model_dir, shared_cache, tmp_path_factory):
    """The three tasks on the real data (../shared/data has no TyDiQA train split: a synthetic one)."""
    out = tmp_path_factory.mktemp("paper-eval")
    train = _write_train(tmp_path_factory.mktemp("tydiqa-train") / "train.json", _train_rows(3))
    run_pipeline(["stages=[eval]", "eval.model=base", "eval.tasks=[mmlu,tydiqa,bbh]", "eval.limit=2",
                  "eval.max_gen_toks=8", f"data.root={DATA}", f"eval.tydiqa.train_file={train}", "logger=wandb"],
                 shared_cache, out)
    return out, train


@needs_data
def test_three_tasks_run_with_subtask_metrics(paper_eval):
    out, train = paper_eval
    ev = json.loads((out / "results.json").read_text())["eval"]
    expect = {"mmlu": ("acc", 57, 1), "tydiqa": ("f1", 9, 100), "bbh": ("exact_match", 27, 1)}
    for task, (metric, n_sub, top) in expect.items():
        assert 0 <= ev[task][metric] <= top, (task, ev[task])
        assert len(ev[task]["subtasks"]) == n_sub
        assert all(0 <= s[metric] <= top for s in ev[task]["subtasks"].values())
    assert "abstract_algebra" in ev["mmlu"]["subtasks"] and "swahili" in ev["tydiqa"]["subtasks"]
    # the W&B run carries the subtask metrics too, in its summary (one value each: not in history)
    from tests.wandb_records import read_records

    res = json.loads((out / "results.json").read_text())
    keys, history = set(), set()
    for rec in read_records(next(Path(res["wandb"]["dir"]).glob("run-*.wandb"))):
        if rec.WhichOneof("record_type") == "summary":
            keys |= {u.key or "/".join(u.nested_key) for u in rec.summary.update}
        if rec.WhichOneof("record_type") == "history":
            history |= {u.key or "/".join(u.nested_key) for u in rec.history.item}
    assert "eval/mmlu/acc" in keys and "eval/bbh/subtasks/navigate/exact_match" in keys
    assert "eval/mmlu/acc" not in history
    # where the TyDiQA demos came from: results.json and the W&B summary
    assert res["eval"]["tydiqa_shot_source"] == str(train)
    summary = {}
    for rec in read_records(next(Path(res["wandb"]["dir"]).glob("run-*.wandb"))):
        if rec.WhichOneof("record_type") == "summary":
            summary.update({u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in rec.summary.update})
    assert summary["eval/tydiqa_shot_source"] == str(train)


@needs_data
def test_mmlu_request_is_the_papers_five_shot_prompt(paper_eval):
    out, _ = paper_eval
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
    out, _ = paper_eval
    eval_dir = Path(json.loads((out / "results.json").read_text())["stages"]["eval"]["dir"])
    tasks = eval_dir / "samples"
    ty = json.loads((tasks / "less_tydiqa_en.jsonl").read_text().splitlines()[0])
    prompt = ty["arguments"][0][0]
    assert prompt.startswith("<|user|>\nAnswer the following question based on the information in the given "
                             "passage.\n\nPassage: english train passage ")  # the demo, from the train split
    shot = json.loads((eval_dir / "tasks" / "tydiqa_shots.json").read_text())["shots"]["english"]
    i = shot["id"].rsplit("-", 1)[1]
    assert (f"Passage: english train passage {i}.\nQuestion: english train question {i}?\n"
            f"Answer: train answer {i}\n\nPassage: ") in prompt
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
    assert alone["eval"]["less_synthetic_color"]["acc"] == res["eval"]["less_synthetic_color"]["acc"]


def test_local_tasks_are_indexed_without_lm_evals_built_ins():
    """Only when a task is not local does the index include lm-eval's built-in tasks (~30 s)."""
    from less.evaluation.run import PACKAGE_TASKS, task_manager

    local = task_manager([str(PACKAGE_TASKS)], ["less_synthetic_color"])
    assert "less_synthetic_color" in local.all_tasks and "hellaswag" not in local.all_tasks
    both = task_manager([str(PACKAGE_TASKS)], ["less_synthetic_color", "hellaswag"])
    assert {"less_synthetic_color", "hellaswag"} <= set(both.all_tasks)

"""MMLU prompts under the paper protocol (issue 26 item 5): built here as the reference's
``eval/mmlu/run_eval.py`` (``eval_hf_model``) builds them, dropping the last demos while a prompt is
longer than ``eval.mmlu.max_prompt_tokens``; byte-identical to lm-eval's own 5-shot context where
all demos fit."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from less.errors import ConfigError
from less.evaluation.tasks import build_mmlu, mmlu_prompts
from tests.conftest import DATA, SHARED_CACHE, compose

OLD_TEXT = "{{question}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:"


class WordTokenizer:
    """A token per whitespace-separated word (what the length logic needs of a tokenizer)."""

    def __call__(self, text, add_special_tokens=True, truncation=None):
        assert add_special_tokens is False  # the reference counts without BOS
        split = lambda t: list(range(len(t.split())))
        return {"input_ids": [split(t) for t in text] if isinstance(text, list) else split(text)}


def _write_csv(path: Path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows(rows)


def _mc(question: str, i: int) -> list[str]:
    return [question, f"choice {i}a", f"choice, {i}b", f"choice \"{i}\" c", f"{i}d ", "ABCD"[i % 4]]


def _words(n: int, tag: str) -> str:
    return " ".join(f"{tag}{j}" for j in range(n))


def _tricky_root(root: Path) -> None:
    """Two subjects whose texts lm-eval's templating could alter: leading/trailing spaces, newlines,
    Jinja braces, quotes and commas, non-ASCII and the line separator U+2028."""
    questions = ["  What is 2+2? ", "Line one\nline two", "Braces {{ question }} and {% raw %}",
                 "Unicode: ç, 中文, \u2028 sep", "Ends with newline\n", "Plain question?"]
    for subject in ("abstract_algebra", "high_school_us_history"):
        _write_csv(root / "mmlu" / "dev" / f"{subject}_dev.csv", [_mc(f"{subject} dev {q}", i) for i, q in
                                                                  enumerate(questions[:5])])
        _write_csv(root / "mmlu" / "test" / f"{subject}_test.csv", [_mc(q, i) for i, q in enumerate(questions)])


def _long_root(root: Path) -> tuple[list[list[str]], list[list[str]]]:
    """One subject whose demos and questions have very different lengths (in words)."""
    dev = [_mc(_words(n, "d"), i) for i, n in enumerate((30, 5, 40, 10, 20))]
    test = [_mc(_words(n, "q"), i) for i, n in enumerate((3, 60, 3, 150, 3, 100, 3, 400))]
    _write_csv(root / "mmlu" / "dev" / "world_religions_dev.csv", dev)
    _write_csv(root / "mmlu" / "test" / "world_religions_test.csv", test)
    return dev, test


def _reference(subject: str, dev: list[list[str]], test: list[list[str]], tokenizer, limit: int, k: int = 5):
    """open-instruct's ``eval_hf_model`` transcribed: gen_prompt + format_example, ``k`` lowered
    while the prompt is longer than ``limit`` and not reset between questions (stopping at 0,
    where the reference would loop)."""
    def fmt(row, answer):
        return row[0] + "".join(f"\n{c}. {row[i + 1]}" for i, c in enumerate("ABCD")) + "\nAnswer:" + (
            f" {row[5]}\n\n" if answer else "")

    def gen(k):
        return ("The following are multiple choice questions (with answers) about "
                + "".join(" " + w for w in subject.split("_")) + ".\n\n" + "".join(fmt(r, True) for r in dev[:k]))

    out = []
    for row in test:
        prompt = gen(k) + fmt(row, False)
        while len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) > limit and k > 0:
            k -= 1
            prompt = gen(k) + fmt(row, False)
        out.append((prompt, k))
    return out


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


def _old_style(new: Path, old: Path) -> None:
    """The paper protocol's task YAMLs as they were before prompts were built here (lm-eval's 5-shot
    context from the dev split, the reference's description), on the same data files."""
    old.mkdir()
    for y in new.glob("less_mmlu_*.yaml"):
        cfg = yaml.safe_load(y.read_text())
        subject = cfg["task_alias"]
        cfg.update(description="The following are multiple choice questions (with answers) about "
                               + "".join(" " + w for w in subject.split("_")) + ".\n\n",
                   doc_to_text=OLD_TEXT, num_fewshot=5)
        (old / y.name).write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False, width=1000))
    (old / "less_mmlu.yaml").write_text((new / "less_mmlu.yaml").read_text())


def _requests(task_dir: Path, num_fewshot: int | None = None) -> dict[str, dict[tuple[int, int], tuple]]:
    """{task: {(doc_id, choice): lm-eval's request arguments (context, continuation)}}, each task set
    up as simple_evaluate sets it up for ``num_fewshot`` (target_loss.configure mirrors it)."""
    from lm_eval.tasks import TaskManager, get_task_dict

    from less.evaluation.target_loss import configure

    out = {}
    for name, task in get_task_dict(["less_mmlu"], TaskManager(include_path=str(task_dir), include_defaults=False)
                                    ).popitem()[1].items():
        configure(task, num_fewshot, 1234)
        task.build_all_requests(limit=None, rank=0, world_size=1)
        out[name] = {(i.doc_id, i.idx): tuple(i.arguments) for i in task.instances}
    return out


def test_prompts_with_all_demos_are_lm_evals_five_shot_context(tmp_path):
    """Where 5 demos fit, the prompt written here is, byte for byte, the context lm-eval built from
    the dev split before (so accuracy on ordinary prompts is unchanged); the answers scored are the
    same; a num_fewshot override (eval.num_fewshot reaches simple_evaluate) adds no demos on top."""
    root, new = tmp_path / "data", tmp_path / "new"
    _tricky_root(root)
    new.mkdir()
    built = build_mmlu(root, new, "paper", WordTokenizer(), max_prompt_tokens=10_000)
    assert built.info == {"prompts_shortened": 0}
    _old_style(new, tmp_path / "old")
    before, after = _requests(tmp_path / "old"), _requests(new)
    assert set(after) == {"less_mmlu_abstract_algebra", "less_mmlu_high_school_us_history"}
    for task, reqs in before.items():
        assert len(reqs) == 6 * 4 and after[task] == reqs
        rows = _jsonl(new / f"mmlu_{task.removeprefix('less_mmlu_')}_test.jsonl")
        assert [r["n_shots"] for r in rows] == [5] * 6
        assert {reqs[(i, 0)][0] for i in range(6)} == {r["prompt"] for r in rows}
    assert "Braces {{ question }} and {% raw %}\nA." in after["less_mmlu_abstract_algebra"][(2, 0)][0]
    assert _requests(new, num_fewshot=3) == after  # the YAML's num_fewshot 0 wins over the override
    spec = yaml.safe_load((new / "less_mmlu_abstract_algebra.yaml").read_text())
    assert spec["num_fewshot"] == 0 and spec["doc_to_text"] == "{{prompt}}" and "description" not in spec
    # no tokenizer (or no limit): every prompt keeps its demos, the same text
    again = tmp_path / "again"
    again.mkdir()
    build_mmlu(root, again, "paper")
    assert _jsonl(again / "mmlu_abstract_algebra_test.jsonl") == _jsonl(new / "mmlu_abstract_algebra_test.jsonl")


def test_over_long_subject_drops_the_last_demos_as_the_reference(tmp_path):
    """With a limit some prompts exceed: each prompt is the reference's (the first k dev questions,
    k lowered one at a time and carried over to the subject's next questions), within the limit
    unless it has no demos left, with k the largest that fits at its turn; lm-eval scores exactly
    the written prompt."""
    root, out = tmp_path / "data", tmp_path / "tasks"
    dev, test = _long_root(root)
    out.mkdir()
    tok, limit = WordTokenizer(), 220
    built = build_mmlu(root, out, "paper", tok, max_prompt_tokens=limit)
    rows = _jsonl(out / "mmlu_world_religions_test.jsonl")
    expected = _reference("world_religions", dev, test, tok, limit)
    assert [(r["prompt"], r["n_shots"]) for r in rows] == expected
    ks = [r["n_shots"] for r in rows]
    assert ks == [5, 3, 3, 1, 1, 1, 1, 0]  # carried over, as the reference's k is never reset
    length = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])
    head = "The following are multiple choice questions (with answers) about  world religions.\n\n"
    demos = [r[0] + "".join(f"\n{c}. {r[i + 1]}" for i, c in enumerate("ABCD")) + f"\nAnswer: {r[5]}\n\n" for r in dev]
    prev = 5
    for r, row in zip(rows, test):
        k = r["n_shots"]
        question = row[0] + "".join(f"\n{c}. {row[i + 1]}" for i, c in enumerate("ABCD")) + "\nAnswer:"
        assert r["prompt"] == head + "".join(demos[:k]) + question  # the first k demos: dropped from the end
        assert k <= prev and (k == prev or length(head + "".join(demos[:k + 1]) + question) > limit)
        assert length(r["prompt"]) <= limit or (k == 0 and length(question) > limit - length(head))
        prev = k
    assert built.info == {"prompts_shortened": 7, "prompts_over_limit": 1}  # the last, 400-word question
    reqs = _requests(out)["less_mmlu_world_religions"]
    assert [reqs[(i, 0)][0] for i in range(len(rows))] == [r["prompt"] for r in rows]
    assert {reqs[(i, j)][1] for i in range(len(rows)) for j in range(4)} == {" A", " B", " C", " D"}
    # the same function, a question at a time: the shortest prompt that fits when k restarts at 5
    alone = [mmlu_prompts("world_religions", _jsonl(out / "mmlu_world_religions_dev.jsonl"), [r], 5, tok, limit)[0][1]
             for r in rows]
    assert alone == [5, 3, 5, 1, 5, 2, 5, 0]
    # a prompt of exactly the limit fits (the reference drops while longer)
    assert length(rows[0]["prompt"]) == 202
    assert [mmlu_prompts("world_religions", _jsonl(out / "mmlu_world_religions_dev.jsonl"), rows[:1], 5, tok, n)[0][1:]
            for n in (202, 201)] == [(5, 202), (4, 168)]


def test_eval_config_sets_the_shots_and_the_limit(tmp_path):
    """eval.num_fewshot is where the paper protocol's prompts start; eval.mmlu.max_prompt_tokens=null
    keeps every demo; eval.protocol=lm_eval is lm-eval's few-shot context as before."""
    from less.evaluation.tasks import build_tasks

    root = tmp_path / "data"
    _long_root(root)

    def build(*overrides):
        out = tmp_path / str(len(list(tmp_path.iterdir())))
        cfg = compose([f"data.root={root}", "eval.tasks=[mmlu]", *overrides], hydra=False)
        built = build_tasks(cfg.eval, cfg.data, out, WordTokenizer())[0]
        return built, [r.get("n_shots") for r in _jsonl(out / "mmlu_world_religions_test.jsonl")], out

    assert compose(hydra=False).eval.mmlu.max_prompt_tokens == 2048  # the default, the reference's constant
    assert build()[1] == [5] * 8  # 2,048 words: nothing is too long
    assert build("eval.mmlu.max_prompt_tokens=220", "eval.num_fewshot=2")[1] == [2, 2, 2, 1, 1, 1, 1, 0]
    assert build("eval.mmlu.max_prompt_tokens=null", "eval.num_fewshot=3")[1] == [3] * 8
    built, ks, out = build("eval.protocol=lm_eval", "eval.mmlu.max_prompt_tokens=220")
    assert ks == [None] * 8 and built.info == {}
    assert "num_fewshot" not in yaml.safe_load((out / "less_mmlu_world_religions.yaml").read_text())
    with pytest.raises(ConfigError, match=r"eval.num_fewshot=6 but .*world_religions_dev.csv has 5 dev questions"):
        build("eval.num_fewshot=6")
    with pytest.raises(ConfigError, match="eval.mmlu.max_prompt_tokens must be a positive integer or null"):
        build("eval.mmlu.max_prompt_tokens=0")


def _small_model_tokenizer():
    """The small model's tokenizer from the shared read-only cache, when one is there."""
    for key in sorted((SHARED_CACHE / "model").glob("*/key.json")) if (SHARED_CACHE / "model").is_dir() else []:
        small = json.loads(key.read_text())["spec"]["config"]["kind"] == "small"
        if small and (key.parent / "tokenizer.json").is_file():
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(str(key.parent))
    return None


SUBJECT = "high_school_european_history"


@pytest.mark.skipif(not (DATA / "mmlu" / "test" / f"{SUBJECT}_test.csv").is_file(),
                    reason=f"real MMLU data not found at {DATA / 'mmlu'} (../shared/data beside the checkout)")
def test_real_history_subject_fits_2048_tokens_of_the_small_models_tokenizer(tmp_path):
    tok = _small_model_tokenizer()
    if tok is None:
        pytest.skip(f"no small model with a tokenizer.json under {SHARED_CACHE / 'model'}")
    root = tmp_path / "data"  # the one subject, linked (not copied)
    for split in ("dev", "test"):
        (root / "mmlu" / split).mkdir(parents=True)
        (root / "mmlu" / split / f"{SUBJECT}_{split}.csv").symlink_to(DATA / "mmlu" / split / f"{SUBJECT}_{split}.csv")
    out = tmp_path / "tasks"
    out.mkdir()
    built = build_mmlu(root, out, "paper", tok)
    rows = _jsonl(out / f"mmlu_{SUBJECT}_test.jsonl")
    with open(DATA / "mmlu" / "dev" / f"{SUBJECT}_dev.csv", encoding="utf-8", newline="") as fh:
        dev = list(csv.reader(fh))
    with open(DATA / "mmlu" / "test" / f"{SUBJECT}_test.csv", encoding="utf-8", newline="") as fh:
        test = list(csv.reader(fh))
    assert [(r["prompt"], r["n_shots"]) for r in rows] == _reference(SUBJECT, dev, test, tok, 2048)
    lengths = [len(tok(r["prompt"], add_special_tokens=False)["input_ids"]) for r in rows]
    assert len(rows) == 165 and max(lengths) <= 2048
    assert built.info == {"prompts_shortened": 165}  # the 5 demos alone are ~2,000 tokens
    assert all(1 <= r["n_shots"] < 5 for r in rows)

"""Local lm-eval tasks for the paper's evaluation protocol (REFERENCE section 3), generated at run
time into the eval directory with absolute data paths, so they read local files (``data.root``)
or files downloaded from ``data.hub_repo``.

``eval.protocol=paper``: open-instruct's settings as LESS used them (see docs/evaluation.md);
``eval.protocol=lm_eval``: lm-eval's built-in prompts and settings, on the same local data.
Task names users write: ``mmlu``, ``tydiqa``, ``bbh`` (any other name goes to lm-eval unchanged).
"""

from __future__ import annotations

import csv
import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig

from less.data.locate import data_root, find
from less.data.targets import TYDIQA_TEMPLATES
from less.errors import ConfigError, DataError

PAPER_TASKS = ("mmlu", "tydiqa", "bbh")
TYDIQA_CODES = {"arabic": "ar", "bengali": "bn", "english": "en", "finnish": "fi", "indonesian": "id",
                "korean": "ko", "russian": "ru", "swahili": "sw", "telugu": "te"}
SEED = 42  # open-instruct's sampling seed for TyDiQA and BBH test examples


def lm_eval_tasks_dir() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


@dataclass
class Built:
    """What to pass to lm-eval for one user-facing task: its group and subtasks."""
    name: str
    group: str
    subtasks: dict[str, str] = field(default_factory=dict)  # lm-eval task -> subtask label


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return str(path.resolve())


def _yaml(path: Path, cfg: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False, width=1000))


def _function_yaml(path: Path, cfg: dict[str, Any], functions: dict[str, str]) -> None:
    """YAML with ``!function utils.<name>`` values (lm-eval resolves them next to the file)."""
    text = yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False, width=1000)
    text += "".join(f"{k}: !function utils.{v}\n" for k, v in functions.items())
    path.write_text(text)


def _group(path: Path, group: str, tasks: list[str], metric: str, weight_by_size: bool,
           filter_name: str = "none") -> None:
    _yaml(path, {"group": group, "task": tasks,
                 "aggregate_metric_list": [{"metric": metric, "aggregation": "mean",
                                            "weight_by_size": weight_by_size, "filter_list": filter_name}],
                 "metadata": {"version": 1.0}})


def _csv_rows(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    for i, r in enumerate(rows, 1):
        if len(r) != 6:
            raise DataError(f"{path}:{i}: expected question, 4 choices and an answer, got {len(r)} fields")
    return rows


def build_mmlu(root: Path, out: Path, protocol: str) -> Built:
    test_dir = find(root, ["mmlu/test", "eval/mmlu/test", "data/eval/mmlu/test"], "MMLU test CSVs")
    dev_dir = find(root, ["mmlu/dev", "eval/mmlu/dev", "data/eval/mmlu/dev"], "MMLU dev CSVs")
    template = lm_eval_tasks_dir() / "mmlu" / "default" / "_default_template_yaml"
    built = Built("mmlu", "less_mmlu")
    for f in sorted(test_dir.glob("*_test.csv")):
        subject = f.name.removesuffix("_test.csv")
        files = {}
        for split, src in (("test", f), ("dev", dev_dir / f"{subject}_dev.csv")):
            if not src.is_file():
                raise DataError(f"{src}: MMLU file not found (set by data.root)")
            rows = [{"question": r[0], "subject": subject, "choices": r[1:5], "answer": "ABCD".index(r[5].strip())}
                    for r in _csv_rows(src)]
            files[split] = _write_jsonl(out / f"mmlu_{subject}_{split}.jsonl", rows)
        task = f"less_mmlu_{subject}"
        cfg = {"include": str(template), "task": task, "task_alias": subject, "dataset_path": "json",
               "dataset_name": None, "dataset_kwargs": {"data_files": files},
               "description": "The following are multiple choice questions (with answers) about "
                              f"{subject.replace('_', ' ')}.\n\n"}
        if protocol == "paper":
            # open-instruct: " ".join-with-leading-space subject (a double space), question unstripped
            cfg["description"] = ("The following are multiple choice questions (with answers) about "
                                  f"{''.join(' ' + w for w in subject.split('_'))}.\n\n")
            cfg["doc_to_text"] = "{{question}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:"
            cfg["num_fewshot"] = 5
        _yaml(out / f"{task}.yaml", cfg)
        built.subtasks[task] = subject
    if not built.subtasks:
        raise DataError(f"{test_dir}: no *_test.csv files (set by data.root)")
    _group(out / "less_mmlu.yaml", "less_mmlu", list(built.subtasks), "acc", weight_by_size=True)  # micro average
    return built


def _truncate(text: str, tokenizer, max_tokens: int) -> str:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return text if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens])


def build_tydiqa(root: Path, out: Path, protocol: str, per_language: int, tokenizer, max_context: int = 512) -> Built:
    dev = find(root, ["tydiqa/tydiqa-goldp-v1.1-dev.json", "eval/tydiqa/tydiqa-goldp-v1.1-dev.json"], "TyDiQA-GoldP dev")
    shots = json.loads(find(root, ["tydiqa/tydiqa-one-shot.json", "eval/tydiqa/tydiqa-one-shot.json"],
                            "TyDiQA one-shot exemplars").read_text(encoding="utf-8"))
    by_lang: dict[str, list[dict]] = {lang: [] for lang in TYDIQA_CODES}
    for article in json.loads(dev.read_text(encoding="utf-8"))["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                lang = qa["id"].split("-")[0]
                if lang in by_lang:
                    by_lang[lang].append({"id": qa["id"], "context": para["context"], "question": qa["question"],
                                          "answers": [a["text"] for a in qa["answers"]]})
    built = Built("tydiqa", "less_tydiqa")
    rng = random.Random(SEED)
    for lang, code in TYDIQA_CODES.items():
        rows = by_lang[lang]
        if not rows:
            raise DataError(f"{dev}: no {lang} questions")
        rows = rng.sample(rows, per_language) if len(rows) > per_language else rows
        instr, p_t, q_t, a_t = TYDIQA_TEMPLATES[lang]
        shot = shots[lang][0]
        cut = (lambda text: _truncate(text, tokenizer, max_context)) if tokenizer is not None else (lambda text: text)
        demo = f"{p_t} {cut(shot['context'])}\n{q_t} {shot['question']}\n{a_t} {shot['answers'][0]['text']}"
        for r in rows:  # open-instruct's prompt: Tulu chat, 1 exemplar, passages cut to 512 tokens
            user = f"{instr}\n\n{demo}\n\n{p_t} {cut(r['context'])}\n{q_t} {r['question']}\n"
            r["prompt"] = f"<|user|>\n{user}\n<|assistant|>\n{a_t}"
        data = _write_jsonl(out / f"tydiqa_{code}.jsonl", rows)
        task = f"less_tydiqa_{code}"
        base = lm_eval_tasks_dir() / "tydiqa" / f"tydiqa_goldp_{code}.yaml"
        if protocol == "paper":
            cfg = {"task": task, "task_alias": lang, "dataset_path": "json", "dataset_name": None,
                   "dataset_kwargs": {"data_files": {"test": data}}, "test_split": "test",
                   "output_type": "generate_until", "doc_to_text": "{{prompt}}", "doc_to_target": "{{answers[0]}}",
                   "target_delimiter": " ", "num_fewshot": 0,
                   "generation_kwargs": {"until": ["\n"], "do_sample": False, "temperature": 0.0, "max_gen_toks": 50},
                   "metric_list": [{"metric": "f1", "aggregation": "mean", "higher_is_better": True},
                                   {"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
                   "metadata": {"version": 1.0}}
            _function_yaml(out / f"{task}.yaml", cfg, {"process_results": "tydiqa_process_results"})
        else:  # lm-eval's prompt and metrics on the same sampled questions
            cfg = {"include": str(base), "task": task, "task_alias": lang, "dataset_path": "json",
                   "dataset_name": None, "dataset_kwargs": {"data_files": {"test": data, "train": data}},
                   "validation_split": "test", "training_split": "train", "fewshot_split": "train",
                   "process_docs": None}
            _yaml(out / f"{task}.yaml", cfg)
        built.subtasks[task] = lang
    _group(out / "less_tydiqa.yaml", "less_tydiqa", list(built.subtasks), "f1", weight_by_size=False)
    return built


def build_bbh(root: Path, out: Path, protocol: str, per_task: int | None) -> Built:
    data_dir = find(root, ["bbh/bbh", "eval/bbh/bbh", "data/eval/bbh/bbh"], "BBH task files")
    prompts = find(root, ["bbh/cot-prompts", "eval/bbh/cot-prompts", "data/eval/bbh/cot-prompts"], "BBH CoT prompts")
    built = Built("bbh", "less_bbh")
    # The reference seeds the global RNG once and samples each task in turn, in glob order (the
    # file system's); one RNG in sorted task order is that draw whenever glob lists them sorted.
    rng = random.Random(SEED)
    for f in sorted(data_dir.glob("*.json")):
        name = f.stem
        examples = json.loads(f.read_text(encoding="utf-8"))["examples"]
        rows = rng.sample(examples, min(per_task, len(examples))) if per_task else examples
        prompt_file = prompts / f"{name}.txt"
        if not prompt_file.is_file():
            raise DataError(f"{prompt_file}: BBH CoT prompt not found (set by data.root)")
        with open(prompt_file, encoding="utf-8") as fh:  # the reference: the file minus its first 2 lines
            task_prompt = "".join(fh.readlines()[2:]).strip()
        for r in rows:  # the reference's non-chat prompt: 3 CoT exemplars, then the question
            r["prompt"] = task_prompt + "\n\nQ: " + r["input"] + "\nA:"
        data = _write_jsonl(out / f"bbh_{name}.jsonl", rows)
        task = f"less_bbh_{name}"
        if protocol == "paper":
            cfg = {"task": task, "task_alias": name, "dataset_path": "json", "dataset_name": None,
                   "dataset_kwargs": {"data_files": {"test": data}}, "test_split": "test",
                   "output_type": "generate_until", "doc_to_text": "{{prompt}}", "doc_to_target": "{{target}}",
                   "num_fewshot": 0,
                   "generation_kwargs": {"until": ["\n\n"], "do_sample": False, "temperature": 0.0, "max_gen_toks": 512},
                   "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
                   "metadata": {"version": 1.0}}
            _function_yaml(out / f"{task}.yaml", cfg, {"process_results": "bbh_process_results"})
        else:
            base = lm_eval_tasks_dir() / "bbh" / "cot_fewshot" / f"{name}.yaml"
            _yaml(out / f"{task}.yaml", {"include": str(base), "task": task, "task_alias": name,
                                         "dataset_path": "json", "dataset_name": None,
                                         "dataset_kwargs": {"data_files": {"test": data}}})
        built.subtasks[task] = name
    if not built.subtasks:
        raise DataError(f"{data_dir}: no BBH task files (set by data.root)")
    _group(out / "less_bbh.yaml", "less_bbh", list(built.subtasks), "exact_match", weight_by_size=False,
           filter_name="none" if protocol == "paper" else "get-answer")
    return built


def build_tasks(eval_cfg: DictConfig, data_cfg: DictConfig, out: Path, tokenizer) -> list[Built]:
    """Write the task YAMLs and data the requested paper tasks need into ``out``."""
    wanted = [t for t in eval_cfg.tasks if t in PAPER_TASKS]
    if eval_cfg.protocol not in ("paper", "lm_eval"):
        raise ConfigError(f"eval.protocol must be paper or lm_eval, got {eval_cfg.protocol!r}")
    if not wanted:
        return []
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(__file__).with_name("task_utils.py"), out / "utils.py")
    root = data_root(data_cfg, f"evaluation data for {wanted}",
                     ["eval/mmlu/**", "eval/tydiqa/**", "eval/bbh/**"])
    built = []
    for t in wanted:
        if t == "mmlu":
            built.append(build_mmlu(root, out, eval_cfg.protocol))
        elif t == "tydiqa":
            built.append(build_tydiqa(root, out, eval_cfg.protocol, eval_cfg.tydiqa_per_language, tokenizer))
        else:
            built.append(build_bbh(root, out, eval_cfg.protocol, eval_cfg.bbh.per_task))
    return built

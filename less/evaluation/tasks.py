"""Local lm-eval tasks for the paper's evaluation protocol (REFERENCE section 3), generated at run
time into the eval directory with absolute data paths, so they read local files (``data.root``)
or files downloaded from ``data.hub_repo``. The generated folder holds YAML and data only: the
metric functions (``!function``) sit in templates shipped beside ``task_utils.py``
(``paper_tydiqa.yaml``, ``paper_bbh.yaml``) that the generated YAMLs include by absolute path,
so lm-eval imports only the package's own code, never a file from the cache.

``eval.protocol=paper``: open-instruct's settings as LESS used them (see docs/evaluation.md);
``eval.protocol=lm_eval``: lm-eval's built-in prompts and settings, on the same local data.
Task names users write: ``mmlu``, ``tydiqa``, ``bbh`` (any other name goes to lm-eval unchanged).

Each is a registered eval task (``EVAL_TASKS``): a builder that writes its lm-eval YAML and data
from the local data root, and the files it reads there (glob patterns, which name the data by
content in the eval's cache key). A new one is one module of ``less.evaluation`` using
``@eval_task`` (or an installed package's ``less.eval_tasks`` entry point).
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml
from omegaconf import DictConfig, OmegaConf

from less.data.formats import read_csv, read_json, read_text
from less.data.locate import data_root, find
from less.data.targets import TYDIQA_TEMPLATES
from less.errors import ConfigError, DataError
from less.registry import Registry, origin

TYDIQA_CODES = {"arabic": "ar", "bengali": "bn", "english": "en", "finnish": "fi", "indonesian": "id",
                "korean": "ko", "russian": "ru", "swahili": "sw", "telugu": "te"}  # in sorted order
SEED = 42  # open-instruct's sampling seed for TyDiQA and BBH test examples
# templates holding the `!function task_utils.<name>` lines, resolved next to them (this package)
TYDIQA_TEMPLATE = Path(__file__).resolve().with_name("paper_tydiqa.yaml")
BBH_TEMPLATE = Path(__file__).resolve().with_name("paper_bbh.yaml")


Builder = Callable[[Path, Path, DictConfig, Any], "Built"]  # (data root, out, eval config, tokenizer)


@dataclass(frozen=True)
class EvalTask:
    name: str
    build: Builder
    reads: Callable[[DictConfig], list[str]]  # eval config -> glob patterns under data.root


EVAL_TASKS: Registry[EvalTask] = Registry("eval task", "eval.tasks", "less.evaluation", "less.eval_tasks")


def eval_task(name: str, reads: Callable[[DictConfig], list[str]]):
    """Decorator: register ``build(root, out, eval_cfg, tokenizer) -> Built`` as eval task ``name``."""
    def deco(fn: Builder) -> Builder:
        EVAL_TASKS.add(name, EvalTask(name, fn, reads), origin(fn))
        return fn
    return deco


def lm_eval_tasks_dir() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


@dataclass
class Built:
    """What to pass to lm-eval for one user-facing task: its group and subtasks."""
    name: str
    group: str
    subtasks: dict[str, str] = field(default_factory=dict)  # lm-eval task -> subtask label
    info: dict[str, Any] = field(default_factory=dict)      # what else results.json records, e.g. shot_source


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return str(path.resolve())


def _yaml(path: Path, cfg: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False, width=1000))


def _group(path: Path, group: str, tasks: list[str], metric: str, weight_by_size: bool,
           filter_name: str = "none") -> None:
    _yaml(path, {"group": group, "task": tasks,
                 "aggregate_metric_list": [{"metric": metric, "aggregation": "mean",
                                            "weight_by_size": weight_by_size, "filter_list": filter_name}],
                 "metadata": {"version": 1.0}})


def _csv_rows(path: Path) -> list[list[str]]:
    rows = read_csv(path)
    for i, r in enumerate(rows, 1):
        if len(r) != 6:
            raise DataError(f"{path}:{i}: expected question, 4 choices and an answer, got {len(r)} fields")
    return rows


MMLU_SHOTS = 5                 # the reference's --ntrain
MMLU_MAX_PROMPT_TOKENS = 2048  # the reference's constant (eval/mmlu/run_eval.py)


def mmlu_description(subject: str) -> str:
    """open-instruct's ``gen_prompt`` header: the subject's words each after a space, so "about  anatomy"."""
    return ("The following are multiple choice questions (with answers) about "
            f"{''.join(' ' + w for w in subject.split('_'))}.\n\n")


def mmlu_example(row: dict[str, Any], answer: bool) -> str:
    """open-instruct's ``format_example``: the question unstripped, the 4 choices, ``Answer:`` and,
    for a demo, `` {letter}\n\n``."""
    text = row["question"] + "".join(f"\n{c}. {x}" for c, x in zip("ABCD", row["choices"])) + "\nAnswer:"
    return text + f" {'ABCD'[row['answer']]}\n\n" if answer else text


def _n_tokens(tokenizer, texts: list[str]) -> list[int]:
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"]]


def mmlu_prompts(subject: str, dev: list[dict], test: list[dict], shots: int, tokenizer=None,
                 max_tokens: int | None = MMLU_MAX_PROMPT_TOKENS) -> list[tuple[str, int, int | None]]:
    """(prompt, number of demos, its length in tokens) for each ``test`` row in order, as the
    reference's ``eval_hf_model`` builds them: the description, the first ``k`` dev questions with
    their answers, the question; ``k`` starts at ``shots`` and, while the prompt (tokenized without
    special tokens) is longer than ``max_tokens``, the last demo is dropped. As there, ``k`` is not reset between questions:
    a subject's questions after a shortened one start from the reduced count. A prompt still too
    long without demos is kept as it is (the reference would loop forever). ``tokenizer`` or
    ``max_tokens`` None: every prompt gets ``shots`` demos (and no length)."""
    head = mmlu_description(subject)
    demos = [mmlu_example(r, True) for r in dev[:shots]]
    questions = [mmlu_example(r, False) for r in test]

    def prompt(i: int, k: int) -> str:
        return head + "".join(demos[:k]) + questions[i]

    if tokenizer is None or max_tokens is None:
        return [(prompt(i, shots), shots, None) for i in range(len(test))]
    lengths: dict[int, tuple[int, list[int]]] = {}  # k -> (first row, token counts from there): one batch per k
    out, k = [], shots
    for i in range(len(test)):
        while True:
            if k not in lengths:
                lengths[k] = (i, _n_tokens(tokenizer, [prompt(j, k) for j in range(i, len(test))]))
            first, counts = lengths[k]
            if counts[i - first] <= max_tokens or k == 0:
                break
            k -= 1
        out.append((prompt(i, k), k, counts[i - first]))
    return out


def build_mmlu(root: Path, out: Path, protocol: str, tokenizer=None, shots: int | None = None,
               max_prompt_tokens: int | None = MMLU_MAX_PROMPT_TOKENS) -> Built:
    """57 per-subject tasks. ``protocol=lm_eval``: lm-eval's MMLU template, its few-shot context.
    ``protocol=paper``: each test row's whole prompt is built here (``mmlu_prompts``: ``shots``
    demos, 5 when None, fewer where the prompt would exceed ``max_prompt_tokens`` of ``tokenizer``)
    and stored in the row (``prompt``, ``n_shots``); the task reads it with ``num_fewshot: 0``, so
    lm-eval adds no demos of its own (it ignores a ``num_fewshot`` override for such tasks)."""
    test_dir = find(root, ["mmlu/test", "eval/mmlu/test", "data/eval/mmlu/test"], "MMLU test CSVs")
    dev_dir = find(root, ["mmlu/dev", "eval/mmlu/dev", "data/eval/mmlu/dev"], "MMLU dev CSVs")
    template = lm_eval_tasks_dir() / "mmlu" / "default" / "_default_template_yaml"
    built = Built("mmlu", "less_mmlu")
    shots = MMLU_SHOTS if shots is None else shots
    shortened, over = 0, 0
    for f in sorted(test_dir.glob("*_test.csv")):
        subject = f.name.removesuffix("_test.csv")
        rows = {}
        for split, src in (("test", f), ("dev", dev_dir / f"{subject}_dev.csv")):
            if not src.is_file():
                raise DataError(f"{src}: MMLU file not found (set by data.root)")
            rows[split] = [{"question": r[0], "subject": subject, "choices": r[1:5],
                            "answer": "ABCD".index(r[5].strip())} for r in _csv_rows(src)]
        if protocol == "paper":
            if shots > len(rows["dev"]):
                raise ConfigError(f"eval.num_fewshot={shots} but {dev_dir / f'{subject}_dev.csv'} has "
                                  f"{len(rows['dev'])} dev questions")
            for r, (prompt, k, n) in zip(rows["test"], mmlu_prompts(subject, rows["dev"], rows["test"], shots,
                                                                     tokenizer, max_prompt_tokens)):
                r["prompt"], r["n_shots"] = prompt, k
                shortened += k < shots
                over += n is not None and n > max_prompt_tokens  # without demos and still too long
        files = {split: _write_jsonl(out / f"mmlu_{subject}_{split}.jsonl", rows[split]) for split in ("test", "dev")}
        task = f"less_mmlu_{subject}"
        cfg = {"include": str(template), "task": task, "task_alias": subject, "dataset_path": "json",
               "dataset_name": None, "dataset_kwargs": {"data_files": files},
               "description": "The following are multiple choice questions (with answers) about "
                              f"{subject.replace('_', ' ')}.\n\n"}
        if protocol == "paper":  # the description and demos are in the prompt; choices, target, acc: the template's
            del cfg["description"]
            cfg["doc_to_text"] = "{{prompt}}"
            cfg["num_fewshot"] = 0
        _yaml(out / f"{task}.yaml", cfg)
        built.subtasks[task] = subject
    if not built.subtasks:
        raise DataError(f"{test_dir}: no *_test.csv files (set by data.root)")
    if protocol == "paper":  # results.json: eval.mmlu_prompts_shortened (of all test questions, eval.limit or not)
        built.info["prompts_shortened"] = shortened
        if over:
            built.info["prompts_over_limit"] = over
    _group(out / "less_mmlu.yaml", "less_mmlu", list(built.subtasks), "acc", weight_by_size=True)  # micro average
    return built


def _truncate(text: str, tokenizer, max_tokens: int) -> str:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return text if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens])


TYDIQA_DEV = ["tydiqa/tydiqa-goldp-v1.1-dev.json", "eval/tydiqa/tydiqa-goldp-v1.1-dev.json"]
TYDIQA_TRAIN = ["tydiqa/tydiqa-goldp-v1.1-train.json", "eval/tydiqa/tydiqa-goldp-v1.1-train.json"]
TYDIQA_DVAL = ["tydiqa/tydiqa-one-shot.json", "eval/tydiqa/tydiqa-one-shot.json"]
SHOT_SOURCES = ("train", "dval")


def _squad_by_language(path: Path) -> dict[str, list[dict]]:
    """A TyDiQA-GoldP file in SQuAD layout as {language: [{id, context, question, answers}]} in file
    order, the language being the id's prefix (``english-...``); answers are the gold texts."""
    doc = read_json(path)
    try:
        articles = doc["data"]
        rows = [{"id": qa["id"], "context": para["context"], "question": qa["question"],
                 "answers": [a["text"] for a in qa["answers"]]}
                for article in articles for para in article["paragraphs"] for qa in para["qas"]]
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a TyDiQA-GoldP file in SQuAD layout "
                        f"(data/paragraphs/qas: {type(e).__name__} {e})") from None
    by_lang: dict[str, list[dict]] = {lang: [] for lang in TYDIQA_CODES}
    for r in rows:
        lang = r["id"].split("-")[0]
        if lang in by_lang:
            by_lang[lang].append(r)
    return by_lang


def _hub_offline() -> bool:
    return any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE")
               for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))


def _train_file(root: Path | None, t: DictConfig) -> Path | None:
    """``eval.tydiqa.train_file`` (which must exist), else the first train file under ``root``."""
    if t.train_file:
        path = Path(str(t.train_file)).expanduser().resolve()
        if not path.is_file():
            raise DataError(f"{path}: TyDiQA-GoldP train file not found (set by eval.tydiqa.train_file)")
        return path
    return next((root / c for c in TYDIQA_TRAIN if root is not None and (root / c).is_file()), None)


def _no_train_split(root: Path, t: DictConfig, why: str) -> DataError:
    looked = " or ".join(str(root / c) for c in TYDIQA_TRAIN)
    return DataError(f"no TyDiQA-GoldP train split for the one-shot demos ({why}): put it (SQuAD json) at "
                     f"{looked}, or set eval.tydiqa.train_file=<file>, or set eval.tydiqa.shot_source=dval "
                     "to use the D_val exemplar as the one-shot demo")


def check_tydiqa_train(e: DictConfig, data_cfg: DictConfig) -> None:
    """Before any stage runs, where it can be told without the network: the paper protocol's TyDiQA
    demos need a train split (an explicit file, or one under a local ``data.root`` when offline)."""
    if "tydiqa" not in e.tasks or e.protocol != "paper" or e.tydiqa.shot_source != "train":
        return
    root = Path(str(data_cfg.root)).expanduser().resolve() if data_cfg.get("root") else None
    if _train_file(root, e.tydiqa) is None and root is not None and root.is_dir() and _hub_offline():
        raise _no_train_split(root, e.tydiqa, f"offline: HF_DATASETS_OFFLINE/HF_HUB_OFFLINE is set, so not "
                                              f"from the hub {e.tydiqa.hub_dataset}/{e.tydiqa.hub_config}")


def tydiqa_train_split(root: Path, t: DictConfig) -> tuple[dict[str, list[dict]], str]:
    """The TyDiQA-GoldP train split by language and where it came from: ``eval.tydiqa.train_file``,
    else a file under ``root``, else (hub allowed) ``t.hub_dataset``/``t.hub_config``."""
    path = _train_file(root, t)
    if path is not None:
        return _squad_by_language(path), str(path)
    hub = f"{t.hub_dataset}/{t.hub_config}"
    if _hub_offline():
        raise _no_train_split(root, t, f"offline: HF_DATASETS_OFFLINE/HF_HUB_OFFLINE is set, so not from the hub {hub}")
    try:
        from datasets import load_dataset

        ds = load_dataset(str(t.hub_dataset), str(t.hub_config), split="train")
        by_lang: dict[str, list[dict]] = {lang: [] for lang in TYDIQA_CODES}
        for ex in ds:  # id, title, context, question, answers{text, answer_start}
            lang = ex["id"].split("-")[0]
            if lang in by_lang:
                by_lang[lang].append({"id": ex["id"], "context": ex["context"], "question": ex["question"],
                                      "answers": list(ex["answers"]["text"])})
    except Exception as e:  # network, gated, renamed: one line
        raise _no_train_split(root, t, f"the hub {hub} failed: {type(e).__name__}") from None
    return by_lang, f"hub:{hub}:train"


def build_tydiqa(root: Path, out: Path, protocol: str, t: DictConfig, tokenizer, max_context: int = 512) -> Built:
    """9 languages, ``t.per_language`` test questions each; under the paper's protocol one demo per
    language from the train split (``t.shot_source=train``) or the D_val exemplar (``dval``).

    The reference (``eval/tydiqa/run_eval.py``) seeds the global RNG with 42, samples each language's
    test questions, then with the same RNG one train example per language, iterating a ``set`` of
    languages (an order that changes with PYTHONHASHSEED); here one ``Random(42)`` in sorted
    language order does the same draws reproducibly."""
    dev = find(root, TYDIQA_DEV, "TyDiQA-GoldP dev")
    by_lang = _squad_by_language(dev)
    built = Built("tydiqa", "less_tydiqa")
    rng = random.Random(SEED)
    tests = {}
    for lang in TYDIQA_CODES:
        rows = by_lang[lang]
        if not rows:
            raise DataError(f"{dev}: no {lang} questions")
        tests[lang] = rng.sample(rows, t.per_language) if t.per_language and len(rows) > t.per_language else rows
    shots: dict[str, dict] = {}
    if protocol == "paper" and t.shot_source == "train":
        train, src = tydiqa_train_split(root, t)
        for lang in TYDIQA_CODES:  # after the test sampling, with the same RNG, as the reference
            if not train[lang]:
                raise DataError(f"{src}: no {lang} examples in the TyDiQA-GoldP train split")
            shots[lang] = dict(rng.sample(train[lang], 1)[0])
        built.info["shot_source"] = src
    elif protocol == "paper":
        path = find(root, TYDIQA_DVAL, "TyDiQA one-shot exemplars")
        dval = read_json(path)
        for lang in TYDIQA_CODES:
            if not dval.get(lang):
                raise DataError(f"{path}: no {lang} exemplar")
            ex = dval[lang][0]
            shots[lang] = {"id": ex.get("id"), "context": ex["context"], "question": ex["question"],
                           "answers": [a["text"] for a in ex["answers"]]}
        built.info["shot_source"] = f"dval:{path}"
    else:
        built.info["shot_source"] = "none (protocol=lm_eval)"
    cut = (lambda text: _truncate(text, tokenizer, max_context)) if tokenizer is not None else (lambda text: text)
    for lang, code in TYDIQA_CODES.items():
        rows = tests[lang]
        if protocol == "paper":  # open-instruct's prompt: Tulu chat, 1 demo, passages cut to 512 tokens
            instr, p_t, q_t, a_t = TYDIQA_TEMPLATES[lang]
            shot = shots[lang]
            demo = f"{p_t} {cut(shot['context'])}\n{q_t} {shot['question']}\n{a_t} {shot['answers'][0]}"
            for r in rows:
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
            _yaml(out / f"{task}.yaml", {"include": str(TYDIQA_TEMPLATE), **cfg})  # its process_results
        else:  # lm-eval's prompt and metrics on the same sampled questions
            cfg = {"include": str(base), "task": task, "task_alias": lang, "dataset_path": "json",
                   "dataset_name": None, "dataset_kwargs": {"data_files": {"test": data, "train": data}},
                   "validation_split": "test", "training_split": "train", "fewshot_split": "train",
                   "process_docs": None}
            _yaml(out / f"{task}.yaml", cfg)
        built.subtasks[task] = lang
    if shots:  # which demo each language got
        (out / "tydiqa_shots.json").write_text(json.dumps(
            {"source": built.info["shot_source"], "shots": {lang: {"id": s["id"], "question": s["question"]}
                                                             for lang, s in shots.items()}},
            ensure_ascii=False, indent=2))
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
        examples = read_json(f)["examples"]
        rows = rng.sample(examples, min(per_task, len(examples))) if per_task else examples
        prompt_file = prompts / f"{name}.txt"
        if not prompt_file.is_file():
            raise DataError(f"{prompt_file}: BBH CoT prompt not found (set by data.root)")
        # the reference: the file minus its first 2 lines
        task_prompt = "".join(read_text(prompt_file).split("\n", 2)[2:]).strip()
        for r in rows:  # the reference's non-chat prompt: 3 CoT exemplars, then the question
            r["prompt"] = task_prompt + "\n\nQ: " + r["input"] + "\nA:"
            # one of the CoT exemplars (D_val) itself: scored for accuracy as the reference does,
            # left out of the target loss (held-out items only; none in the released BBH files)
            r["in_dval"] = f"Q: {r['input']}\nA:" in task_prompt
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
            _yaml(out / f"{task}.yaml", {"include": str(BBH_TEMPLATE), **cfg})  # its process_results
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


@eval_task("mmlu", reads=lambda e: ["mmlu/test", "mmlu/dev", "eval/mmlu", "data/eval/mmlu"])
def _mmlu(root: Path, out: Path, e: DictConfig, tokenizer) -> Built:
    """``eval.num_fewshot`` (when set) is the number of demos the paper protocol's prompts start from;
    ``eval.mmlu.max_prompt_tokens`` the length over which demos are dropped (null: never)."""
    limit = OmegaConf.select(e, "mmlu.max_prompt_tokens", default=MMLU_MAX_PROMPT_TOKENS)
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ConfigError(f"eval.mmlu.max_prompt_tokens must be a positive integer or null, got {limit!r}")
    shots = e.get("num_fewshot")
    if shots is not None and (not isinstance(shots, int) or isinstance(shots, bool) or shots < 0):
        raise ConfigError(f"eval.num_fewshot must be a non-negative integer or null, got {shots!r}")
    return build_mmlu(root, out, e.protocol, tokenizer, shots, limit)


@eval_task("tydiqa", reads=lambda e: TYDIQA_DEV + TYDIQA_DVAL + ([] if e.tydiqa.train_file else TYDIQA_TRAIN))
def _tydiqa(root: Path, out: Path, e: DictConfig, tokenizer) -> Built:
    return build_tydiqa(root, out, e.protocol, e.tydiqa, tokenizer)


@eval_task("bbh", reads=lambda e: ["bbh/bbh", "bbh/cot-prompts", "eval/bbh", "data/eval/bbh"])
def _bbh(root: Path, out: Path, e: DictConfig, tokenizer) -> Built:
    return build_bbh(root, out, e.protocol, e.bbh.per_task)


def registered(eval_cfg: DictConfig) -> list[str]:
    """The requested tasks that are registered here (the others go to lm-eval by name)."""
    return [t for t in eval_cfg.tasks if t in EVAL_TASKS]


def reads(eval_cfg: DictConfig) -> list[str]:
    """What the requested registered tasks read under data.root (glob patterns)."""
    return [p for t in registered(eval_cfg) for p in EVAL_TASKS.get(t).reads(eval_cfg)]


def build_tasks(eval_cfg: DictConfig, data_cfg: DictConfig, out: Path, tokenizer) -> list[Built]:
    """Write the task YAMLs and data the requested registered tasks need into ``out``."""
    wanted = registered(eval_cfg)  # eval.protocol and the rest of eval.* are checked up front (less.stages.eval)
    if not wanted:
        return []
    out.mkdir(parents=True, exist_ok=True)
    root = data_root(data_cfg, f"evaluation data for {wanted}", [f"{p}/**" for p in reads(eval_cfg)] + reads(eval_cfg))
    return [EVAL_TASKS.get(t).build(root, out, eval_cfg, tokenizer) for t in wanted]

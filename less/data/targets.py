"""The paper's few-shot validation sets D_val (REFERENCE section 2), as in LESS's reference code.

Each example is ``{"id", "subtask", "messages": [user, assistant], "assistant_prefix"}``: the Tulu
rendering is ``<|user|>\\n{user}\\n<|assistant|>\\n{assistant_prefix}{assistant}`` with the loss on
the assistant content only (no EOS), which reproduces the reference's prompt/completion text:
- MMLU: 57 subjects x their 5 dev questions, asked zero-shot; prefix ``The answer is:``,
  completion `` {letter}``.
- TyDiQA: one GoldP exemplar per language (9); per-language instruction, passage and question;
  prefix the language's ``Answer:``; completion `` {first answer}``.
- BBH: 27 tasks x 3 CoT exemplars; the task description, the other two exemplars in context, then
  the question; prefix ``A:``; completion the exemplar's chain of thought and answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from less.data.formats import read_csv, read_json
from less.data.kinds import target_kind
from less.data.locate import data_root, find
from less.errors import DataError
from less.identity import data_id

Example = dict[str, Any]

# open-instruct's TyDiQA templates (instruction, passage, question, answer), as used by LESS
TYDIQA_TEMPLATES = {
    "english": ("Answer the following question based on the information in the given passage.", "Passage:", "Question:", "Answer:"),
    "arabic": ("أجب على السؤال التالي بناءً على المعلومات في المقطع المعطى.", "المقطع:", "السؤال:", "الإجابة:"),
    "bengali": ("প্রদত্ত অধ্যায়ের তথ্যের উপর ভিত্তি করে নিম্নলিখিত প্রশ্নের উত্তর দিন।", "অধ্যায়:", "প্রশ্ন:", "উত্তর:"),
    "finnish": ("Vastaa seuraavaan kysymykseen annetun kappaleen tiedon perusteella.", "Kappale:", "Kysymys:", "Vastaus:"),
    "indonesian": ("Jawab pertanyaan berikut berdasarkan informasi di bagian yang diberikan.", "Bagian:", "Pertanyaan:", "Jawaban:"),
    "korean": ("주어진 문단의 정보에 기반하여 다음 질문에 답하십시오.", "문단:", "질문:", "답변:"),
    "russian": ("Ответьте на следующий вопрос на основе информации в данном отрывке.", "Отрывок:", "Вопрос:", "Ответ:"),
    "swahili": ("Jibu swali lifuatalo kulingana na habari kwenye kifungu kilichotolewa.", "Kifungu:", "Swali:", "Jibu:"),
    "telugu": ("ఇచ్చిన పేరాలోని సమాచారం ఆధారంగా కింది ప్రశ్నకు సమాధానం ఇవ్వండి.", "పేరా:", "ప్రశ్న:", "సమాధానం:"),
}


def _example(id_: str, subtask: str, user: str, prefix: str, completion: str) -> Example:
    return {"id": id_, "subtask": subtask, "assistant_prefix": prefix,
            "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": completion}]}


def _read_json(root: Path, candidates: list[str], what: str) -> tuple[Path, Any]:
    path = find(root, candidates, what)
    return path, read_json(path)


def mmlu(root: Path, n_per_subject: int = 5) -> list[Example]:
    dev = find(root, ["mmlu/dev", "eval/mmlu/dev", "data/eval/mmlu/dev"], "MMLU dev CSVs")
    files = sorted(dev.glob("*_dev.csv"))
    if not files:
        raise DataError(f"{dev}: no *_dev.csv files (set by data.root)")
    out = []
    for f in files:
        subject = f.name.removesuffix("_dev.csv")
        rows = read_csv(f)[:n_per_subject]
        for i, row in enumerate(rows):
            if len(row) != 6:
                raise DataError(f"{f}:{i + 1}: expected question, 4 choices and an answer, got {len(row)} fields")
            out.append(_example(f"mmlu_{subject}_{i}", subject, mmlu_user(subject, row), "The answer is:",
                                " " + row[5].strip()))
    return out


def mmlu_user(subject: str, row: list[str]) -> str:
    """The user turn of an MMLU question as D_val asks it (question, lettered choices, "Answer:")."""
    # " ".join-with-leading-space, as the reference's format_subject: "about  abstract algebra."
    text = ("The following are multiple choice questions (with answers) about {}.\n\n"
            .format("".join(" " + w for w in subject.split("_"))))
    return text + row[0] + "".join(f"\n{c}. {row[j + 1]}" for j, c in enumerate("ABCD")) + "\nAnswer:"


def tydiqa(root: Path) -> list[Example]:
    path, data = _read_json(root, ["tydiqa/tydiqa-one-shot.json", "eval/tydiqa/tydiqa-one-shot.json"],
                            "TyDiQA one-shot exemplars")
    out = []
    for lang, exs in data.items():
        if lang not in TYDIQA_TEMPLATES:
            raise DataError(f"{path}: unknown language {lang!r}")
        ex = exs[0]
        instr, p_t, q_t, a_t = TYDIQA_TEMPLATES[lang]
        # instruction and "Passage:" are joined with no separator in the reference implementation
        user = instr + p_t + " " + ex["context"] + "\n" + q_t + " " + ex["question"]
        out.append(_example(f"tydiqa_{lang}", lang, user, a_t, " " + ex["answers"][0]["text"]))
    return out


def bbh(root: Path) -> list[Example]:
    path, data = _read_json(root, ["less_eval_formats/bbh-three-shot.json", "eval/bbh/bbh-three-shot.json"],
                            "BBH 3-shot prompts")
    out = []
    for task, prompt in data.items():
        parts = prompt.split("\n\n")
        exemplars, description = parts[-3:], "\n\n".join(parts[:-3]).strip()
        split = [ex.split("\nA:") for ex in exemplars]
        if any(len(s) != 2 for s in split):
            raise DataError(f"{path}: task {task!r}: each exemplar needs exactly one '\\nA:'")
        for j, (question, answer) in enumerate(split):
            icl = "".join(q + "\nA:" + a + "\n\n" for k, (q, a) in enumerate(split) if k != j)
            out.append(_example(f"bbh_{task}_{j}", task, description + "\n\n" + icl + question, "A:", answer))
    return out


# The paper's targets: D_val builder and the files it reads under data.root (less.identity patterns)
BUILDERS = {"mmlu": (mmlu, ["mmlu/dev/*", "eval/mmlu/dev/*", "data/eval/mmlu/dev/*"]),
            "tydiqa": (tydiqa, ["tydiqa/tydiqa-one-shot.json", "eval/tydiqa/tydiqa-one-shot.json"]),
            "bbh": (bbh, ["less_eval_formats/bbh-three-shot.json", "eval/bbh/bbh-three-shot.json"])}


def _register(kind: str) -> None:
    build, patterns = BUILDERS[kind]

    def load(target_cfg: DictConfig, data_cfg: DictConfig) -> list[Example]:
        return build(data_root(data_cfg, f"the {kind} validation set", patterns))
    load.__qualname__ = f"paper_target_{kind}"
    target_kind(kind, reads=lambda target_cfg, data_cfg: {"data": data_id(data_cfg, patterns)})(load)


for _kind in BUILDERS:
    _register(_kind)

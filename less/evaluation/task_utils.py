r"""Metric functions for the generated lm-eval tasks: ``paper_tydiqa.yaml`` and ``paper_bbh.yaml``
beside this file name them (``!function task_utils.<name>``) and the generated task YAMLs include
those templates, so lm-eval loads this file (by path, as a module of its own: it imports only
the standard library).

- TyDiQA: SQuAD v1.1 F1 and exact match (the official normalisation: lower case, no punctuation,
  no English articles, single spaces), max over the gold answers, as open-instruct's evaluation.
- BBH: as LESS's copy of the evaluation (``evaluation/eval/bbh/run_eval.py``): the answer is the
  first match of the case-sensitive ``So the answer is (.*?)\.`` (stripped), else the output up to
  its first blank line (stripped); scored like HF ``evaluate``'s ``exact_match`` with
  ``ignore_case=True, ignore_punctuation=True`` (lower case, ASCII punctuation deleted, then plain
  equality: whitespace is not stripped).
"""

from __future__ import annotations

import re
import string
from collections import Counter


def normalize_answer(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def squad_f1(prediction: str, truth: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = Counter(pred) & Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_em(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def tydiqa_process_results(doc, results):
    prediction = results[0].split("\n")[0].strip()
    answers = doc["answers"]
    return {"f1": 100.0 * max(squad_f1(prediction, a) for a in answers),
            "exact_match": 100.0 * max(squad_em(prediction, a) for a in answers)}


ANSWER_RE = re.compile(r"So the answer is (.*?)\.")  # case-sensitive, first match, as the reference


def bbh_extract(prediction: str) -> str:
    m = ANSWER_RE.search(prediction)
    if m:
        return m.group(1).strip()
    return prediction.strip().split("\n\n")[0].strip()  # "mainly for vanilla language models"


_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


def bbh_exact_match(prediction: str, target: str) -> float:
    """``evaluate``'s exact_match(ignore_case=True, ignore_punctuation=True) for one pair: ``lower``,
    ``string.punctuation`` deleted, then ``==`` (no whitespace stripping); its numpy string arrays
    cannot hold trailing NULs, hence the rstrip."""
    def norm(s: str) -> str:
        return s.lower().translate(_NO_PUNCTUATION).rstrip("\x00")

    return float(norm(prediction) == norm(target))


def bbh_process_results(doc, results):
    return {"exact_match": bbh_exact_match(bbh_extract(results[0]), doc["target"])}

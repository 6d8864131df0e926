"""Metric functions for the generated lm-eval tasks (copied next to their YAMLs as ``utils.py``,
so this file must only import the standard library).

- TyDiQA: SQuAD v1.1 F1 and exact match (the official normalisation: lower case, no punctuation,
  no English articles, single spaces), max over the gold answers, as open-instruct's evaluation.
- BBH: the answer is what follows "the answer is" up to the next period (else the whole stripped
  output), compared to the target ignoring case and punctuation, as open-instruct's evaluation.
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


ANSWER_RE = re.compile(r"[tT]he answer is (.*?)\.")


def bbh_extract(prediction: str) -> str:
    m = ANSWER_RE.search(prediction)
    return m.group(1).strip() if m else prediction.strip()


def _loose(s: str) -> str:
    return "".join(ch for ch in s.lower() if ch not in set(string.punctuation)).strip()


def bbh_process_results(doc, results):
    return {"exact_match": float(_loose(bbh_extract(results[0])) == _loose(doc["target"]))}

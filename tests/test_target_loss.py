"""Target loss (less.evaluation.target_loss): the eval metric equals a brute-force forward pass of
the trained tiny model, one unpadded example at a time, on the same held-out examples."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from less.evaluation import target_loss


def brute_force(model, tok, prompt: str, answer: str) -> tuple[float, int]:
    """Mean -log p of the answer's tokens given the prompt: the pair tokenized as one string, the
    answer being the tokens after the prompt's own tokens (trailing spaces of the prompt belong to
    the answer, as lm-eval splits a pair)."""
    n = len(prompt) - len(prompt.rstrip())
    if n:
        prompt, answer = prompt[:-n], prompt[-n:] + answer
    whole = tok(prompt + answer)["input_ids"]
    n_prompt = len(tok(prompt)["input_ids"])
    ids = torch.tensor([whole])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].double(), -1)
    targets = whole[n_prompt:]
    lp = [logp[n_prompt - 1 + i, t].item() for i, t in enumerate(targets)]
    return -sum(lp) / len(lp), len(lp)


def synthetic_docs(target_dir: Path) -> list[dict]:
    path = target_dir / "eval_data" / "less_synthetic_color.jsonl"
    return [json.loads(line) for line in path.open()]


@pytest.mark.parametrize("which", ["eval", "eval_base"])
def test_target_loss_equals_brute_force(default_run, which):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, r = default_run
    examples = [json.loads(line) for line in open(r["examples"][which])]
    target_dir = Path(r["artifacts"]["target"]["dir"])
    docs = synthetic_docs(target_dir)
    evaluated = json.loads((Path(r["examples"][which]).parent / "model.json").read_text())
    tok = AutoTokenizer.from_pretrained(evaluated["model"])
    model = AutoModelForCausalLM.from_pretrained(evaluated["model"], dtype=torch.float32)
    assert (evaluated["adapter"] is not None) == (which == "eval")
    if evaluated["adapter"]:
        model = PeftModel.from_pretrained(model, evaluated["adapter"])
    model.eval()
    assert [e["doc_id"] for e in examples] == list(range(len(docs)))
    assert all(e["task"] == "less_synthetic_color" for e in examples)
    for e, doc in zip(examples, docs):
        prompt, answer = doc["prompt"], doc["choices"][doc["label"]]
        assert e["digest"] == target_loss.digest(prompt, answer)
        want, n = brute_force(model, tok, prompt, answer)
        assert e["tokens"] == n
        assert e["target_loss"] == pytest.approx(want, rel=1e-4, abs=1e-5)
    mean = sum(e["target_loss"] for e in examples) / len(examples)
    assert r[which]["less_synthetic_color"]["target_loss"] == pytest.approx(mean, rel=1e-12)
    sd = math.sqrt(sum((e["target_loss"] - mean) ** 2 for e in examples) / (len(examples) - 1))
    assert r[which]["less_synthetic_color"]["target_loss_stderr"] == pytest.approx(sd / math.sqrt(len(examples)))
    # accuracy per example is kept beside it, and averages to lm-eval's accuracy
    acc = sum(e["metrics"]["acc"] for e in examples) / len(examples)
    assert r[which]["less_synthetic_color"]["acc"] == pytest.approx(acc)


def test_trained_model_predicts_the_target_better(default_run):
    _, r = default_run
    assert r["eval"]["less_synthetic_color"]["target_loss"] < r["eval_base"]["less_synthetic_color"]["target_loss"]


def test_summarize_macro_mean_and_stderr():
    rows = [{"task": "t", "subtask": s, "target_loss": x} for s, xs in (("a", [1.0, 3.0]), ("b", [2.0, 2.0, 5.0]))
            for x in xs]
    got = target_loss.summarize(rows)["t"]
    assert got["subtasks"] == {"a": {"target_loss": 2.0}, "b": {"target_loss": 3.0}}
    assert got["target_loss"] == 2.5  # macro: the subtasks count alike
    var_a, var_b = 2.0 / 2, 3.0 / 3  # var (ddof=1) / n of each subtask
    assert got["target_loss_stderr"] == pytest.approx(math.sqrt(var_a + var_b) / 2)


class FakeTask:
    """Enough of an lm-eval Task for ``requests``/``answer``: generation docs, one instance each."""

    OUTPUT_TYPE = "generate_until"

    def __init__(self, docs):
        from types import SimpleNamespace

        self.docs, self.config = docs, SimpleNamespace(target_delimiter=" ")
        self.instances = []

    def build_all_requests(self, limit, rank, world_size):
        from types import SimpleNamespace

        docs = self.docs[:limit] if limit else self.docs
        self.instances = [SimpleNamespace(doc_id=i, doc=d, arguments=(d["prompt"], {})) for i, d in enumerate(docs)]

    def doc_to_target(self, doc):
        return doc["target"]


def test_bbh_items_in_dval_are_not_held_out():
    docs = [{"prompt": "Q: a\nA:", "target": "(A)", "in_dval": False},
            {"prompt": "Q: b\nA:", "target": "(B)", "in_dval": True},  # one of the CoT exemplars
            {"prompt": "Q: c\nA:", "target": ["(C)", "(D)"]}]
    got = target_loss.requests(FakeTask(docs), limit=None)
    assert got == [(0, "Q: a\nA:", " (A)"), (2, "Q: c\nA:", " (C)")]
    assert target_loss.requests(FakeTask(docs), limit=1) == [(0, "Q: a\nA:", " (A)")]


def test_bbh_build_marks_exemplars(tmp_path):
    from less.evaluation.tasks import build_bbh

    data, prompts = tmp_path / "bbh" / "bbh", tmp_path / "bbh" / "cot-prompts"
    data.mkdir(parents=True), prompts.mkdir(parents=True)
    (prompts / "toy.txt").write_text("Toy task.\n-----\nQ: two plus two\nA: 4. So the answer is 4.\n\nQ: one\nA: 1.")
    (data / "toy.json").write_text(json.dumps({"examples": [{"input": "two plus two", "target": "4"},
                                                            {"input": "three", "target": "3"}]}))
    (tmp_path / "out").mkdir()
    build_bbh(tmp_path, tmp_path / "out", "paper", None)
    rows = [json.loads(line) for line in open(tmp_path / "out" / "bbh_toy.jsonl")]
    assert [r["in_dval"] for r in rows] == [True, False]


def test_an_accuracy_only_eval_keeps_no_examples_and_is_not_paired(default_run, shared_cache, tmp_path):
    """eval.target_loss=false: no target loss, no examples.jsonl (its rows are the target-loss
    requests), so results.json names none and the analysis leaves the run unpaired."""
    from tests.conftest import run_pipeline

    _, r = default_run
    res = run_pipeline(["eval.target_loss=false", "eval.base=false"], shared_cache, tmp_path / "run")
    assert "target_loss" not in res["eval"]["less_synthetic_color"]
    assert res["eval"]["less_synthetic_color"]["acc"] == pytest.approx(r["eval"]["less_synthetic_color"]["acc"])
    assert "examples" not in res and not (Path(res["artifacts"]["eval"]["dir"]) / "examples.jsonl").exists()


def test_an_answer_of_no_tokens_or_no_prompt_is_a_data_error():
    from less.errors import DataError

    class LM:  # lm-eval's pair encoding: the answer's tokens are what the prompt's do not cover
        def _encode_pair(self, ctx, cont):
            return list(ctx), list(cont)

        def _loglikelihood_tokens(self, encoded, disable_tqdm=False):
            return [(-float(len(a)), True) for _, _, a in encoded]

    assert target_loss.losses(LM(), [("Q:", " ab")]) == [(1.0, 3)]
    with pytest.raises(DataError, match="^eval task t doc 7: the reference answer '' has no tokens"):
        target_loss.losses(LM(), [("Q:", " a"), ("Q:", "")], ["eval task t doc 6", "eval task t doc 7"])
    with pytest.raises(DataError, match="^pair 0: target loss needs a prompt"):
        target_loss.losses(LM(), [("", " a")])

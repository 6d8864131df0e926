"""Target loss: how well a model predicts the reference answers of held-out target examples.

For every example an lm-eval task evaluates (its test docs, honouring ``eval.limit``), the prompt is
the context lm-eval builds for it (few-shot demos, description, the protocol's template: exactly
what accuracy is computed on) and the answer is the task's reference continuation:
``target_delimiter + choices[gold]`` for multiple-choice tasks (MMLU, the synthetic task),
``target_delimiter + target`` (the first if several) for generation tasks (TyDiQA, BBH: the answer
the metric compares against), the continuation itself for loglikelihood tasks. Then

    loss(x) = -(1/|a|) * sum_{t in a} log p(a_t | prompt, a_<t)      (answer tokens a only)

in batched forward passes of the model (lm-eval's own ``_loglikelihood_tokens``: its tokenization
of the pair, its truncation, its batching; no generation). A subtask's target loss is the mean over
its examples, a task's the macro mean over subtasks (lower is better). Every example is kept with
its id (task, subtask, doc_id) and a digest of its exact prompt and answer, so that two runs can be
paired example by example (analysis).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from less.errors import DataError

OUTPUT_TYPES = ("multiple_choice", "generate_until", "loglikelihood")


def digest(context: str, continuation: str) -> str:
    return hashlib.blake2b(f"{context}\x00{continuation}".encode(), digest_size=8).hexdigest()


def answer(task, doc) -> str:
    """The reference continuation of ``doc`` under ``task`` (see the module docstring)."""
    kind = task.OUTPUT_TYPE
    delim = task.config.target_delimiter
    gold = task.doc_to_target(doc)
    if kind == "multiple_choice":
        choices = task.doc_to_choice(doc)
        if isinstance(gold, list):
            gold = gold[0]
        if isinstance(gold, str):
            gold = choices.index(gold) if gold in choices else int(gold)
        return f"{delim}{choices[gold]}"
    if kind == "generate_until":
        if isinstance(gold, list):
            gold = gold[0]
        return f"{delim}{gold}"
    return str(gold)


def configure(task, num_fewshot: int | None, seed: int) -> None:
    """``task`` set up as ``lm_eval.simple_evaluate`` sets it up (few-shot count and seed)."""
    if num_fewshot is not None:
        if task.get_config("num_fewshot") != 0:
            task.set_config(key="num_fewshot", value=num_fewshot)
    elif task.get_config("num_fewshot") is None:
        task.set_config(key="num_fewshot", value=0)
    task.set_fewshot_seed(seed=seed)


def requests(task, limit: int | float | None) -> list[tuple[int, str, str]]:
    """(doc_id, prompt, answer) of every doc ``task`` evaluates, in doc order, except docs marked
    ``in_dval`` (a BBH test item that is one of the task's CoT exemplars: not held out); ``limit``
    as lm-eval reads it (a fraction below 1 of the docs, else a count)."""
    from lm_eval.evaluator_utils import get_sample_size

    task.build_all_requests(limit=get_sample_size(task, limit), rank=0, world_size=1)
    seen: dict[int, tuple[int, str, str]] = {}
    for inst in task.instances:
        if inst.doc_id not in seen and not (isinstance(inst.doc, dict) and inst.doc.get("in_dval")):
            ctx = inst.arguments[0]
            cont = inst.arguments[1] if task.OUTPUT_TYPE == "loglikelihood" else answer(task, inst.doc)
            seen[inst.doc_id] = (inst.doc_id, ctx, cont)
    return [seen[i] for i in sorted(seen)]


def losses(lm, pairs: list[tuple[str, str]], names: list[str] | None = None) -> list[tuple[float, int]]:
    """(mean per-token loss of the answer, its token count) of each (prompt, answer) pair, in
    lm-eval's batched forward passes; ``names`` label the pairs in errors (an empty prompt or an
    answer of no tokens: DataError)."""
    encoded = []
    for k, (ctx, cont) in enumerate(pairs):
        where = names[k] if names else f"pair {k}"
        if ctx == "":
            raise DataError(f"{where}: target loss needs a prompt; got an empty context")
        c_enc, a_enc = lm._encode_pair(ctx, cont)
        if len(a_enc) == 0:
            raise DataError(f"{where}: the reference answer {cont!r} has no tokens, so no target loss")
        encoded.append(((ctx, cont), c_enc, a_enc))
    out = lm._loglikelihood_tokens(encoded, disable_tqdm=False)
    return [(-ll / len(enc[2]), len(enc[2])) for (ll, _), enc in zip(out, encoded)]


def evaluate(lm, tasks: dict[str, Any], where: dict[str, tuple[str, str]], limit: int | None,
             num_fewshot: int | None, seed: int) -> list[dict[str, Any]]:
    """Per-example target losses of the lm-eval ``tasks`` ({name: Task}); ``where`` maps a task's
    name to (user-facing task, subtask label). Tasks whose output type has no reference answer
    (``loglikelihood_rolling``) are left out."""
    rows: list[dict[str, Any]] = []
    pairs: list[tuple[str, str]] = []
    for name, task in tasks.items():
        if task.OUTPUT_TYPE not in OUTPUT_TYPES:
            continue
        configure(task, num_fewshot, seed)
        user_task, subtask = where[name]
        for doc_id, ctx, cont in requests(task, limit):
            rows.append({"task": user_task, "subtask": subtask, "lm_task": name, "doc_id": doc_id, "digest": digest(ctx, cont)})
            pairs.append((ctx, cont))
    for row, (loss, n) in zip(rows, losses(lm, pairs, [f"eval task {r['lm_task']} doc {r['doc_id']}" for r in rows])):
        row.update(target_loss=loss, tokens=n)
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{task: {"target_loss": macro mean, "target_loss_stderr": its standard error,
    "subtasks": {label: {"target_loss": mean}}}}; the stderr of a macro mean of S subtask means is
    sqrt(sum_s var_s / n_s) / S (var_s with ddof=1; a subtask of one example adds nothing)."""
    by: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        by.setdefault(r["task"], {}).setdefault(r["subtask"], []).append(r["target_loss"])
    out: dict[str, dict[str, Any]] = {}
    for task, subs in by.items():
        means = {s: sum(v) / len(v) for s, v in subs.items()}
        var = sum((sum((x - means[s]) ** 2 for x in v) / (len(v) - 1)) / len(v) for s, v in subs.items() if len(v) > 1)
        out[task] = {"target_loss": sum(means.values()) / len(means),
                     "target_loss_stderr": math.sqrt(var) / len(means),
                     "subtasks": {s: {"target_loss": m} for s, m in means.items()}}
    return out

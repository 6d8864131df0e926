"""A synthetic instruction pool of clearly different skills, and a few-shot arithmetic target.

The embedded default runs LESS on this data: a pool mixing six skills (each example labelled with
its ``skill``), a target set for ``arithmetic`` split into subtasks (addition, subtraction,
multiplication) so that the mean-within-subtask / max-over-subtasks scoring is exercised, and a
multiple-choice test set for the lm-eval task ``less_synthetic_arithmetic``.
"""

from __future__ import annotations

import random
from typing import Any, Callable

WORDS = (
    "apple river stone cloud garden window silver forest candle mirror planet butter orange "
    "pencil rocket violin shadow dragon winter summer bridge castle harbor meadow thunder"
).split()
COUNTRIES = {
    "France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid", "Egypt": "Cairo",
    "Kenya": "Nairobi", "Peru": "Lima", "Canada": "Ottawa", "Norway": "Oslo", "Greece": "Athens",
    "Chile": "Santiago", "Cuba": "Havana", "Poland": "Warsaw", "Ghana": "Accra", "Nepal": "Kathmandu",
    "Austria": "Vienna", "Ireland": "Dublin", "Mexico": "Mexico City", "India": "New Delhi",
    "Brazil": "Brasilia",
}
COLORS = "red blue green yellow purple black white brown pink gray".split()
ANIMALS = "cat dog horse eagle shark tiger rabbit wolf owl fox".split()

ARITH_OPS = {"addition": ("+", "plus", lambda a, b: a + b),
             "subtraction": ("-", "minus", lambda a, b: a - b),
             "multiplication": ("*", "times", lambda a, b: a * b)}
ARITH_TEMPLATES = ["What is {a} {sym} {b}?", "Compute {a} {word} {b}.",
                   "Calculate the value of {a} {sym} {b}.", "Please work out {a} {word} {b}."]


def _arith(rng: random.Random, subtask: str | None = None) -> tuple[str, str, str]:
    subtask = subtask or rng.choice(list(ARITH_OPS))
    sym, word, fn = ARITH_OPS[subtask]
    a, b = rng.randint(2, 99), rng.randint(2, 99) if subtask != "multiplication" else rng.randint(2, 12)
    q = rng.choice(ARITH_TEMPLATES).format(a=a, b=b, sym=sym, word=word)
    return subtask, q, f"The answer is {fn(a, b)}."


def _reverse(rng: random.Random) -> tuple[str, str]:
    w = rng.choice(WORDS)
    q = rng.choice(["Reverse the letters of the word '{w}'.", "Spell '{w}' backwards.",
                    "Write the word {w} in reverse order."]).format(w=w)
    return q, f"Reversed: {w[::-1]}"


def _capital(rng: random.Random) -> tuple[str, str]:
    c = rng.choice(list(COUNTRIES))
    q = rng.choice(["What is the capital of {c}?", "Name the capital city of {c}.",
                    "Which city is the capital of {c}?"]).format(c=c)
    return q, f"The capital of {c} is {COUNTRIES[c]}."


def _uppercase(rng: random.Random) -> tuple[str, str]:
    s = " ".join(rng.sample(WORDS, rng.randint(2, 4)))
    q = rng.choice(["Convert to uppercase: {s}", "Rewrite in capital letters: {s}",
                    "Make this text upper case: {s}"]).format(s=s)
    return q, s.upper()


def _sort_words(rng: random.Random) -> tuple[str, str]:
    ws = rng.sample(WORDS, rng.randint(3, 5))
    q = rng.choice(["Sort these words alphabetically: {s}", "Put in alphabetical order: {s}",
                    "Arrange alphabetically: {s}"]).format(s=", ".join(ws))
    return q, ", ".join(sorted(ws))


def _describe(rng: random.Random) -> tuple[str, str]:
    animal, color = rng.choice(ANIMALS), rng.choice(COLORS)
    q = rng.choice(["Write a short sentence about a {c} {a}.", "Describe a {c} {a} in one sentence.",
                    "Tell me something about a {c} {a}."]).format(c=color, a=animal)
    end = rng.choice(["sleeps under the old tree", "runs across the field", "watches the quiet lake"])
    return q, f"The {color} {animal} {end}."


OTHER_SKILLS: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "reverse": _reverse, "capital": _capital, "uppercase": _uppercase,
    "sort_words": _sort_words, "describe": _describe,
}
SKILLS = ["arithmetic", *OTHER_SKILLS]


def _chat(q: str, a: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]


def make_pool(n_per_skill: int, seed: int, skills: list[str] | None = None) -> list[dict[str, Any]]:
    """Pool examples in the messages format, each with ``dataset``, ``id`` and ``skill``."""
    rng = random.Random(f"pool-{seed}")
    rows = []
    for skill in skills or SKILLS:
        for i in range(n_per_skill):
            if skill == "arithmetic":
                _, q, a = _arith(rng)
            else:
                q, a = OTHER_SKILLS[skill](rng)
            rows.append({"dataset": f"synth_{skill}", "id": f"{skill}_{i}", "skill": skill,
                         "messages": _chat(q, a)})
    rng.shuffle(rows)
    return rows


def make_target(n_per_subtask: int, seed: int) -> list[dict[str, Any]]:
    """Few-shot arithmetic target (D_val), ordered by subtask."""
    rng = random.Random(f"target-{seed}")
    return [{"id": f"target_{sub}_{i}", "subtask": sub, "messages": _chat(*_arith(rng, sub)[1:])}
            for sub in ARITH_OPS for i in range(n_per_subtask)]


def make_eval_mc(n: int, seed: int) -> list[dict[str, Any]]:
    """Multiple-choice arithmetic test questions for the lm-eval task."""
    rng = random.Random(f"eval-{seed}")
    rows = []
    for i in range(n):
        sub, q, a = _arith(rng)
        right = int(a.removeprefix("The answer is ").rstrip("."))
        wrong = set()
        while len(wrong) < 3:
            w = right + rng.choice([-10, -2, -1, 1, 2, 10, 11])
            if w != right:
                wrong.add(w)
        choices = [right, *sorted(wrong)]
        rng.shuffle(choices)
        rows.append({"id": f"eval_{i}", "subtask": sub, "prompt": f"<|user|>\n{q}\n<|assistant|>\n",
                     "choices": [f"The answer is {c}." for c in choices], "label": choices.index(right)})
    return rows


def pretraining_corpus(n_per_skill: int, seed: int) -> list[str]:
    """Plain Tulu-formatted text for the tiny base model's short pretraining (not the pool itself)."""
    from less.data.formats import tulu_text

    return [tulu_text(ex) for ex in make_pool(n_per_skill, seed=10_000 + seed)]

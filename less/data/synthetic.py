"""A synthetic instruction pool of different skills, and a few-shot target skill it holds.

The embedded default runs LESS on this data. The target skill is ``color``: pick the color word
out of a short list ("Which word is a color: fox, red, stone, owl?" -> "Answer: red."). The tiny
model cannot do it before training (its pretraining text has no such task: see
``pretraining_corpus``), and learns it from the few dozen examples a 5% selection holds. The pool
mixes it with six unrelated skills and with ``not_color``, a near miss that shares its words and
answer format but asks for the opposite ("Which word is not a color: ...?" -> the non-color word):
training on it teaches the wrong answer, and word overlap (BM25) cannot tell the two apart.

The target set D_val has subtasks by list length (three, four, five words), so the
mean-within-subtask / max-over-subtasks scoring is exercised; the lm-eval task
``less_synthetic_color`` asks held-out questions (templates the pool never uses, new lists of four
words) as multiple choice among the four listed words.
"""

from __future__ import annotations

import random
from typing import Any, Callable

from omegaconf import DictConfig

from less.data.kinds import pool_kind, target_kind
from less.errors import ConfigError

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
# What the tiny model is pretrained on (before the color skills existed; its corpus stays as it was).
PRETRAIN_SKILLS = ["arithmetic", *OTHER_SKILLS]

# The target skill and its near miss: lists of words from these groups.
NOT_COLORS = ANIMALS + "apple river stone cloud garden window forest candle mirror planet butter pencil".split()
COLOR_TEMPLATES = ["Which word is a color: {l}?", "Pick the color among these words: {l}.",
                   "Find the color in this list: {l}."]
NOT_COLOR_TEMPLATES = ["Which word is not a color: {l}?", "Pick the word among these that is not a color: {l}.",
                       "Find the word that is not a color in this list: {l}."]
EVAL_TEMPLATES = ["Name the color in: {l}.", "Of these words, which one is a color: {l}?"]  # never in the pool
LIST_LENGTHS = {"three_words": 3, "four_words": 4, "five_words": 5}


def _color(rng: random.Random, n_words: int | None = None, templates=COLOR_TEMPLATES) -> tuple[str, str, list[str]]:
    """(question, answer word, listed words): one color among ``n_words`` (3 to 5) words."""
    n = n_words or rng.choice(list(LIST_LENGTHS.values()))
    color = rng.choice(COLORS)
    words = [color, *rng.sample(NOT_COLORS, n - 1)]
    rng.shuffle(words)
    return rng.choice(templates).format(l=", ".join(words)), color, words


def _not_color(rng: random.Random) -> tuple[str, str]:
    """The near miss: one non-color among colors; the answer is the non-color."""
    n = rng.choice(list(LIST_LENGTHS.values()))
    odd = rng.choice(NOT_COLORS)
    words = [odd, *rng.sample(COLORS, n - 1)]
    rng.shuffle(words)
    return rng.choice(NOT_COLOR_TEMPLATES).format(l=", ".join(words)), f"Answer: {odd}."


def _color_pair(rng: random.Random) -> tuple[str, str]:
    q, color, _ = _color(rng)
    return q, f"Answer: {color}."


POOL_SKILLS: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "arithmetic": lambda rng: _arith(rng)[1:], **OTHER_SKILLS, "color": _color_pair, "not_color": _not_color,
}
SKILLS = list(POOL_SKILLS)
TARGET_SKILL = "color"


def _chat(q: str, a: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]


def make_pool(n_per_skill: int, seed: int, skills: list[str] | None = None) -> list[dict[str, Any]]:
    """Pool examples in the messages format, each with ``dataset``, ``id`` and ``skill``."""
    rng = random.Random(f"pool-{seed}")
    rows = []
    for skill in skills or SKILLS:
        if skill not in POOL_SKILLS:
            raise ValueError(f"unknown synthetic skill {skill!r}; choose from {SKILLS}")
        for i in range(n_per_skill):
            q, a = POOL_SKILLS[skill](rng)
            rows.append({"dataset": f"synth_{skill}", "id": f"{skill}_{i}", "skill": skill,
                         "messages": _chat(q, a)})
    rng.shuffle(rows)
    return rows


def make_target(n_per_subtask: int, seed: int) -> list[dict[str, Any]]:
    """Few-shot color target (D_val), ordered by subtask (the list's length)."""
    rng = random.Random(f"target-{seed}")
    rows = []
    for sub, n in LIST_LENGTHS.items():
        for i in range(n_per_subtask):
            q, color, _ = _color(rng, n)
            rows.append({"id": f"target_{sub}_{i}", "subtask": sub, "messages": _chat(q, f"Answer: {color}.")})
    return rows


def eval_questions(n: int, seed: int) -> list[tuple[str, str, list[str]]]:
    """The target's held-out test questions: (question, color, the four listed words), in templates
    the pool and D_val never use."""
    rng = random.Random(f"eval-{seed}")
    return [_color(rng, 4, EVAL_TEMPLATES) for _ in range(n)]


def make_eval_mc(n: int, seed: int) -> list[dict[str, Any]]:
    """Held-out multiple-choice questions for the lm-eval task: templates the pool never uses, four
    listed words, the choices being those four words in the pool's answer format."""
    return [{"id": f"eval_{i}", "subtask": "four_words", "prompt": f"<|user|>\n{q}\n<|assistant|>\n",
             "choices": [f"Answer: {w}." for w in words], "label": words.index(color)}
            for i, (q, color, words) in enumerate(eval_questions(n, seed))]


def pretraining_corpus(n_per_skill: int, seed: int) -> list[str]:
    """Plain Tulu-formatted text for the tiny base model's short pretraining (not the pool itself):
    the ``PRETRAIN_SKILLS`` only, so the base model has never seen the target skill (or its near miss)."""
    from less.data.formats import tulu_text

    return [tulu_text(ex) for ex in make_pool(n_per_skill, seed=10_000 + seed, skills=PRETRAIN_SKILLS)]


@pool_kind("synthetic")
def synthetic_pool(pool_cfg: DictConfig, data_cfg: DictConfig) -> list[dict[str, Any]]:
    try:
        return make_pool(pool_cfg.n_per_skill, pool_cfg.seed, list(pool_cfg.skills))
    except ValueError as e:
        raise ConfigError(f"pool.skills: {e}") from None


@target_kind("synthetic", eval_data=lambda t: {"less_synthetic_color": make_eval_mc(t.n_eval, t.seed)})
def synthetic_target(target_cfg: DictConfig, data_cfg: DictConfig) -> list[dict[str, Any]]:
    return make_target(target_cfg.n_per_subtask, target_cfg.seed)

"""Tulu encoding with assistant-only labels, JSONL validation, synthetic data."""

from __future__ import annotations

import json

import pytest

from less.data import synthetic
from less.data.formats import IGNORE_INDEX, encode_examples, read_examples, tulu_text
from less.errors import DataError

CHAT = {"id": "c1", "messages": [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Add 2 and 3"},
    {"role": "assistant", "content": "The answer is 5."}]}


def test_tulu_text_layout():
    assert tulu_text(CHAT) == ("<|system|>\nBe brief.\n<|user|>\nHi there\n<|assistant|>\nHello!</s>\n"
                               "<|user|>\nAdd 2 and 3\n<|assistant|>\nThe answer is 5.</s>")


def test_only_assistant_tokens_and_eos_carry_labels(tiny_tokenizer):
    tok = tiny_tokenizer
    enc = encode_examples([CHAT], tok, max_length=512)
    ids, labels = enc.input_ids[0], enc.labels[0]
    assert len(ids) == len(labels)
    spans, cur = [], []
    for i, lab in zip(ids, labels):
        if lab == IGNORE_INDEX:
            if cur:
                spans.append(cur)
            cur = []
        else:
            assert lab == i
            cur.append(i)
    spans.append(cur) if cur else None
    assert [tok.decode(s) for s in spans] == ["Hello!</s>", "The answer is 5.</s>"]
    masked = tok.decode([i for i, lab in zip(ids, labels) if lab == IGNORE_INDEX])
    assert "<|assistant|>" in masked and "Hi there" in masked and "Hello" not in masked


def test_prompt_completion_and_truncation_drops(tiny_tokenizer):
    ex = {"id": "p", "prompt": "<|user|>\nQ?\n<|assistant|>\n", "completion": "A."}
    enc = encode_examples([ex, {"id": "n", "messages": [{"role": "user", "content": "no answer"}]}],
                          tiny_tokenizer, max_length=512)
    assert enc.ids == ["p"] and dict(enc.dropped) == {"no_assistant_turn": 1}
    assert tiny_tokenizer.decode([x for x in enc.labels[0] if x != IGNORE_INDEX]) == "A.</s>"
    short = encode_examples([ex], tiny_tokenizer, max_length=3)
    assert short.ids == [] and dict(short.dropped) == {"no_labels_after_truncation": 1}


def test_read_examples_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(CHAT) + "\n{not json\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: malformed JSON"):
        read_examples(bad)
    dup = tmp_path / "dup.jsonl"
    dup.write_text(json.dumps(CHAT) + "\n" + json.dumps(CHAT) + "\n")
    with pytest.raises(DataError, match=r"dup.jsonl:2: duplicate id 'c1'"):
        read_examples(dup)
    role = tmp_path / "role.jsonl"
    role.write_text(json.dumps({"id": 1, "messages": [{"role": "bot", "content": "x"}]}) + "\n")
    with pytest.raises(DataError, match=r"role.jsonl:1: each message needs role"):
        read_examples(role)
    with pytest.raises(DataError, match="file not found"):
        read_examples(tmp_path / "missing.jsonl")


def test_synthetic_pool_and_target():
    pool = synthetic.make_pool(20, seed=0)
    assert len(pool) == 20 * len(synthetic.SKILLS) and len({r["id"] for r in pool}) == len(pool)
    assert {r["skill"] for r in pool} == set(synthetic.SKILLS)
    assert pool == synthetic.make_pool(20, seed=0) and pool != synthetic.make_pool(20, seed=1)
    target = synthetic.make_target(4, seed=0)
    assert [r["subtask"] for r in target] == ["addition"] * 4 + ["subtraction"] * 4 + ["multiplication"] * 4
    for row in synthetic.make_eval_mc(30, seed=0):
        assert len(set(row["choices"])) == 4
        q = row["prompt"].split("\n")[1]
        nums = [int(t.strip("?.")) for t in q.split() if t.strip("?.").isdigit()]
        op = row["subtask"]
        truth = {"addition": nums[0] + nums[1], "subtraction": nums[0] - nums[1],
                 "multiplication": nums[0] * nums[1]}[op]
        assert row["choices"][row["label"]] == f"The answer is {truth}."

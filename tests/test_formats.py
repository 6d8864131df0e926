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
                               "<|user|>\nAdd 2 and 3\n<|assistant|>\nThe answer is 5.</s>\n")


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
    assert [tok.decode(s) for s in spans] == ["Hello!</s>\n", "The answer is 5.</s>\n"]  # as LESS: EOS and newline
    assert spans[0][-2] == spans[1][-2] == tok.eos_token_id
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
    assert [r["subtask"] for r in target] == ["three_words"] * 4 + ["four_words"] * 4 + ["five_words"] * 4
    for row in target:  # the answer is the one color among the listed words
        q, a = row["messages"][0]["content"], row["messages"][1]["content"]
        listed = [w.strip(" .?") for w in q.split(":")[1].split(",")]
        assert len(listed) == {"three_words": 3, "four_words": 4, "five_words": 5}[row["subtask"]]
        assert [w for w in listed if w in synthetic.COLORS] == [a.removeprefix("Answer: ").rstrip(".")]
    pool_questions = {r["messages"][0]["content"] for r in pool}
    for row in synthetic.make_eval_mc(30, seed=0):
        assert len(set(row["choices"])) == 4
        q = row["prompt"].split("\n")[1]
        assert q not in pool_questions and not any(q.startswith(t.split("{")[0]) for t in synthetic.COLOR_TEMPLATES)
        right = row["choices"][row["label"]].removeprefix("Answer: ").rstrip(".")
        assert right in synthetic.COLORS and right in q
        assert all(c.removeprefix("Answer: ").rstrip(".") not in synthetic.COLORS
                   for i, c in enumerate(row["choices"]) if i != row["label"])
    near = [r for r in pool if r["skill"] == "not_color"]  # the near miss: same words, the other answer
    for r in near:
        assert r["messages"][1]["content"].removeprefix("Answer: ").rstrip(".") not in synthetic.COLORS


def test_the_tiny_models_pretraining_text_has_no_color_skill():
    """The base model must not know the target skill (nor its near miss) before training."""
    corpus = synthetic.pretraining_corpus(20, seed=0)
    assert corpus and not any("is a color" in t or "is not a color" in t or "the color in" in t for t in corpus)


def test_encoding_equals_tokenizing_the_whole_text(tiny_tokenizer):
    ids, _ = __import__("less.data.formats", fromlist=["x"]).encode_example(CHAT, tiny_tokenizer, 512)
    assert ids == tiny_tokenizer(tulu_text(CHAT, tiny_tokenizer.eos_token))["input_ids"]


def test_sentencepiece_style_tokenizer_masks_exactly():
    """A Metaspace tokenizer (like Llama's) prefixes every separate call with a space marker; the
    masks from separately tokenized prefixes (as the reference) still label exactly the assistant
    text (tests/test_reference_encoding.py checks a trained Llama-style tokenizer on real data)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast

    from less.data.formats import encode_example

    chars = sorted(set(tulu_text(CHAT)) | {"▁"})
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{c: i + 3 for i, c in enumerate(chars)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(), pre_tokenizers.Split("", "isolated")])
    tk.decoder = decoders.Metaspace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    ids, labels = encode_example(CHAT, tok, 512)
    assert ids == tok(tulu_text(CHAT))["input_ids"]
    labelled = [i for i, lab in zip(ids, labels) if lab != IGNORE_INDEX]
    assert tok.decode(labelled).replace(" ", "") == "Hello!</s>\nTheansweris5.</s>\n"
    assert labelled.count(tok.eos_token_id) == 2


def test_prompt_completion_eos_is_optional(tiny_tokenizer):
    from less.data.formats import encode_example

    ex = {"id": "p", "prompt": "<|user|>\nQ?\n<|assistant|>\nThe answer is:", "completion": " B"}
    _, with_eos = encode_example(ex, tiny_tokenizer, 512)
    _, without = encode_example(ex, tiny_tokenizer, 512, completion_eos=False)
    assert [x for x in with_eos if x != IGNORE_INDEX][-1] == tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.decode([x for x in without if x != IGNORE_INDEX]) == " B"


def _with_bad_byte(path, lines: list[bytes], line: int, column: int) -> None:
    """``lines`` joined by newlines, with byte 0xff put at ``column`` (1-based) of line ``line``."""
    bad = lines[line - 1]
    lines[line - 1] = bad[:column - 1] + b"\xff" + bad[column - 1:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(lines) + b"\n")


def test_a_non_utf8_byte_names_file_line_and_column(tmp_path):
    """Every reader of a user's text file (JSONL, JSON, CSV, TSV, prompt text) stops on a byte that
    is not UTF-8 with file:line and the byte's column, not a UnicodeDecodeError traceback."""
    from less.data import pools, targets

    rows = [json.dumps({**CHAT, "id": f"c{i}"}).encode() for i in range(9)]
    jsonl = tmp_path / "pool.jsonl"
    _with_bad_byte(jsonl, rows, 7, 12)
    with pytest.raises(DataError) as err:
        read_examples(jsonl)
    assert str(err.value) == f"{jsonl}:7: not valid UTF-8 (byte 0xff at column 12)"

    root = tmp_path / "data"  # MMLU dev CSV (targets), CoT TSV and its templates JSON (pools)
    _with_bad_byte(root / "mmlu" / "dev" / "anatomy_dev.csv", [b"q,a,b,c,d,A"] * 3, 3, 2)
    with pytest.raises(DataError, match=r"anatomy_dev\.csv:3: not valid UTF-8 \(byte 0xff at column 2\)$"):
        targets.mmlu(root)
    _with_bad_byte(root / "tydiqa" / "tydiqa-one-shot.json", [b"{", b'  "english": []', b"}"], 2, 5)
    with pytest.raises(DataError, match=r"tydiqa-one-shot\.json:2: not valid UTF-8 \(byte 0xff at column 5\)$"):
        targets.tydiqa(root)
    cot = root / "cot_flan_v2"
    cot.mkdir()
    (cot / "flan_v2_cot_zeroshot_templates.json").write_text(json.dumps({"templates": {"cot_gsm8k": [["{question}", "{answer}"]]}}))
    _with_bad_byte(cot / "gsm8k_train.tsv", [b"q\ta\tr"] * 4, 4, 3)
    with pytest.raises(DataError, match=r"gsm8k_train\.tsv:4: not valid UTF-8 \(byte 0xff at column 3\)$"):
        pools.cot(root, 0)
    _with_bad_byte(cot / "flan_v2_cot_zeroshot_templates.json", [b"{", b'"templates": {}', b"}"], 2, 1)
    with pytest.raises(DataError, match=r"templates\.json:2: not valid UTF-8 \(byte 0xff at column 1\)$"):
        pools.cot(root, 0)


def test_eval_data_with_a_non_utf8_byte_is_named(tmp_path):
    """The evaluation's data files under data.root (BBH tasks and prompts, TyDiQA, MMLU test) too."""
    from omegaconf import OmegaConf

    from less.evaluation.tasks import build_bbh, build_mmlu, build_tydiqa

    root, out = tmp_path / "data", tmp_path / "tasks"
    out.mkdir()
    _with_bad_byte(root / "bbh" / "bbh" / "navigate.json", [b'{"examples":', b' [{"input": "x", "target": "Yes"}]}'], 2, 14)
    (root / "bbh" / "cot-prompts").mkdir(parents=True)
    with pytest.raises(DataError, match=r"navigate\.json:2: not valid UTF-8 \(byte 0xff at column 14\)$"):
        build_bbh(root, out, "paper", None)
    (root / "bbh" / "bbh" / "navigate.json").write_text(json.dumps({"examples": [{"input": "x", "target": "Yes"}]}))
    _with_bad_byte(root / "bbh" / "cot-prompts" / "navigate.txt", [b"canary", b"-----", b"Q: x", b"A: y"], 4, 4)
    with pytest.raises(DataError, match=r"navigate\.txt:4: not valid UTF-8 \(byte 0xff at column 4\)$"):
        build_bbh(root, out, "paper", None)
    _with_bad_byte(root / "tydiqa" / "tydiqa-goldp-v1.1-dev.json", [b'{"data":', b"[]}"], 1, 3)
    with pytest.raises(DataError, match=r"tydiqa-goldp-v1\.1-dev\.json:1: not valid UTF-8 \(byte 0xff at column 3\)$"):
        build_tydiqa(root, out, "paper", OmegaConf.create({"shot_source": "dval", "per_language": 1}), None)
    _with_bad_byte(root / "mmlu" / "test" / "anatomy_test.csv", [b"q,a,b,c,d,A"] * 2, 2, 6)
    (root / "mmlu" / "dev").mkdir()
    with pytest.raises(DataError, match=r"anatomy_test\.csv:2: not valid UTF-8 \(byte 0xff at column 6\)$"):
        build_mmlu(root, out, "paper")

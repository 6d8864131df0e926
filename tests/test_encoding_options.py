"""The reference's encoding choices as options (``datastore.encoding``): what each changes in the
tokens' labels, and that each enters exactly the keys of what it changes."""

from __future__ import annotations

import pytest

from less.data.formats import IGNORE_INDEX, Encoding, encode_example
from tests.test_content_keys import keys

CHAT = {"id": "c", "messages": [
    {"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Red."},
    {"role": "user", "content": "Another one?"}, {"role": "assistant", "content": "Blue."}]}
DVAL = {"id": "d", "assistant_prefix": "The answer is:", "messages": [
    {"role": "user", "content": "Which letter? A. x B. y"}, {"role": "assistant", "content": " A"}]}


def labelled(tok, ids, labels) -> str:
    return tok.decode([i for i, x in zip(ids, labels) if x != IGNORE_INDEX])


def test_the_default_is_the_reference_encoding(tiny_tokenizer):
    for ex, eos in ((CHAT, True), (DVAL, False)):
        assert encode_example(ex, tiny_tokenizer, None, eos) == encode_example(ex, tiny_tokenizer, None, eos,
                                                                                encoding=Encoding())


def test_eos_label_false_unlabels_each_turns_eos_and_nothing_else(tiny_tokenizer):
    tok = tiny_tokenizer
    ids, ref = encode_example(CHAT, tok, None, True)
    ids2, off = encode_example(CHAT, tok, None, True, encoding=Encoding(eos_label=False))
    assert ids2 == ids
    eos_at = [t for t, i in enumerate(ids) if i == tok.eos_token_id and ref[t] != IGNORE_INDEX]
    assert len(eos_at) == 2  # the reference labels both turns' EOS
    changed = [t for t in range(len(ids)) if ref[t] != off[t]]
    assert all(off[t] == IGNORE_INDEX for t in changed)
    # what was unlabelled is each EOS and the labelled run after it (the turn's closing newline)
    for t in eos_at:
        assert t in changed
    assert all(ids[t] == tok.eos_token_id or ref[t - 1] != IGNORE_INDEX and (t - 1) in changed for t in changed)
    assert "Red." in labelled(tok, ids, off) and "Blue." in labelled(tok, ids, off)
    assert tok.eos_token_id not in [i for i, x in zip(ids, off) if x != IGNORE_INDEX]


def test_turns_last_labels_only_the_last_assistant_turn(tiny_tokenizer):
    tok = tiny_tokenizer
    ids, ref = encode_example(CHAT, tok, None, True)
    _, last = encode_example(CHAT, tok, None, True, encoding=Encoding(turns="last"))
    first = next(t for t, x in enumerate(last) if x != IGNORE_INDEX)
    assert all(x == IGNORE_INDEX for x in last[:first]) and last[first:] == ref[first:]
    assert "Red." not in labelled(tok, ids, last) and labelled(tok, ids, last).startswith("Blue.")
    assert "Red." in labelled(tok, ids, ref)
    single = {"id": "s", "messages": CHAT["messages"][:2]}  # one turn: nothing changes
    assert encode_example(single, tok, None, True, encoding=Encoding(turns="last")) == encode_example(
        single, tok, None, True)


def test_answer_prefix_false_drops_dvals_prefix_and_keeps_its_answer(tiny_tokenizer):
    tok = tiny_tokenizer
    ids, ref = encode_example(DVAL, tok, None, False)
    ids2, lab2 = encode_example(DVAL, tok, None, False, encoding=Encoding(answer_prefix=False))
    assert "The answer is:" in tok.decode(ids) and "The answer is:" not in tok.decode(ids2)
    assert labelled(tok, ids, ref) == labelled(tok, ids2, lab2) == " A"
    # the prefix is a D_val choice: the training rule ignores it
    assert encode_example(CHAT, tok, None, True, encoding=Encoding(answer_prefix=False)) == encode_example(
        CHAT, tok, None, True)


@pytest.mark.parametrize("option,split", [("eos_label=false", "pool"), ("turns=last", "pool"),
                                          ("answer_prefix=false", "target")])
def test_each_option_changes_exactly_the_keys_of_what_it_changes(tmp_path, option, split):
    base = ["stages=[prepare,warmup,datastore,select,train,eval]"]
    before = keys(base, tmp_path / "c")
    after = keys([*base, f"datastore.encoding.{option}"], tmp_path / "c")
    changed = {n for n in before if before[n] != after[n]}
    other = "target" if split == "pool" else "pool"
    assert f"{split}_features" in changed and f"{other}_features" not in changed
    assert {"datastore", "select", "train", "eval"} <= changed
    assert not changed & {"model", "selector", "pool", "target", "warmup"}
    # setting the reference's value explicitly changes nothing
    name, _ = option.split("=")
    same = keys([*base, f"datastore.encoding.{name}={getattr(Encoding(), name) if name == 'turns' else 'true'}"],
                tmp_path / "c")
    assert same == before


def test_ekfac_factors_change_with_the_pools_encoding_only(tmp_path):
    base = ["selection=ekfac", "stages=[prepare,warmup,select]"]
    before = keys(base, tmp_path / "c")
    pool = keys([*base, "datastore.encoding.eos_label=false"], tmp_path / "c")
    dval = keys([*base, "datastore.encoding.answer_prefix=false"], tmp_path / "c")
    assert before["ekfac_factors"] != pool["ekfac_factors"] and before["influence"] != pool["influence"]
    assert before["ekfac_factors"] == dval["ekfac_factors"] and before["influence"] != dval["influence"]


def test_the_options_under_the_tokenizers_chat_template(tiny_tokenizer):
    """chat_format=tokenizer: eos_label=false ends each labelled span before the template's EOS,
    turns=last labels only the last turn, answer_prefix=false drops D_val's prefix."""
    from copy import deepcopy

    tok = deepcopy(tiny_tokenizer)
    tok.chat_template = ("{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}"
                         "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}\n{% endfor %}"
                         "{% if add_generation_prompt %}[assistant] {% endif %}")

    def spans(encoding):
        ids, labels = encode_example(CHAT, tok, None, True, chat_format="tokenizer", encoding=encoding)
        return labelled(tok, ids, labels)

    assert spans(Encoding()) == "Red.</s>Blue.</s>"
    assert spans(Encoding(eos_label=False)) == "Red.Blue."
    assert spans(Encoding(turns="last")) == "Blue.</s>"
    ids, _ = encode_example(DVAL, tok, None, False, chat_format="tokenizer", encoding=Encoding(answer_prefix=False))
    assert "The answer is:" not in tok.decode(ids)

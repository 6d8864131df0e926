"""Encoding token for token as LESS's reference code, on real examples of every pool source and
every paper target, with the tiny byte-level tokenizer and a Llama-style SentencePiece tokenizer.

The ``reference_*`` functions transcribe princeton-nlp/LESS (``less/data_selection/
get_training_dataset.py``: ``encode_with_messages_format``, ``concat_messages``,
``encode_with_prompt_completion_format``; ``get_validation_dataset.py``: ``tokenize``) with the
same tensor operations, independently of ``less.data.formats``.
"""

from __future__ import annotations

import functools
import random
from pathlib import Path

import pytest

from less.data import pools, targets
from less.data.formats import IGNORE_INDEX, encode_example, encode_examples
from tests.conftest import DATA, needs_data

torch = pytest.importorskip("torch")


def reference_concat_messages(messages, tokenizer):
    message_text = ""
    for message in messages:
        if message["role"] == "system":
            message_text += "<|system|>\n" + message["content"].strip() + "\n"
        elif message["role"] == "user":
            message_text += "<|user|>\n" + message["content"].strip() + "\n"
        elif message["role"] == "assistant":
            message_text += "<|assistant|>\n" + message["content"].strip() + tokenizer.eos_token + "\n"
    return message_text


def reference_encode_messages(example, tokenizer, max_seq_length):
    messages = example["messages"]
    example_text = reference_concat_messages(messages, tokenizer)
    input_ids = tokenizer(example_text, return_tensors="pt", max_length=max_seq_length, truncation=True).input_ids
    labels = input_ids.clone()
    for message_idx, message in enumerate(messages):
        if message["role"] != "assistant":
            if message_idx == 0:
                message_start_idx = 0
            else:
                message_start_idx = tokenizer(
                    reference_concat_messages(messages[:message_idx], tokenizer), return_tensors="pt",
                    max_length=max_seq_length, truncation=True).input_ids.shape[1]
            if message_idx < len(messages) - 1 and messages[message_idx + 1]["role"] == "assistant":
                messages_so_far = reference_concat_messages(messages[:message_idx + 1], tokenizer) + "<|assistant|>\n"
            else:
                messages_so_far = reference_concat_messages(messages[:message_idx + 1], tokenizer)
            message_end_idx = tokenizer(messages_so_far, return_tensors="pt", max_length=max_seq_length,
                                        truncation=True).input_ids.shape[1]
            labels[:, message_start_idx:message_end_idx] = -100
            if message_end_idx >= max_seq_length:
                break
    return input_ids.flatten().tolist(), labels.flatten().tolist()


def reference_encode_prompt_completion(example, tokenizer, max_seq_length):
    if not example["prompt"].endswith((" ", "\n", "\t")) and not example["completion"].startswith((" ", "\n", "\t")):
        example_text = example["prompt"] + " " + example["completion"]
    else:
        example_text = example["prompt"] + example["completion"]
    example_text = example_text + tokenizer.eos_token
    input_ids = tokenizer(example_text, return_tensors="pt", max_length=max_seq_length, truncation=True).input_ids
    labels = input_ids.clone()
    tokenized_prompt = tokenizer(example["prompt"], return_tensors="pt", max_length=max_seq_length, truncation=True)
    labels[:, :tokenized_prompt.input_ids.shape[1]] = -100
    return input_ids.flatten().tolist(), labels.flatten().tolist()


def reference_dval(query, completion, tokenizer, max_length):
    """get_validation_dataset.tokenize (its encode(max_length=...) truncates on the right)."""
    prompt_input_ids = torch.tensor(tokenizer.encode(query, max_length=max_length, truncation=True))
    full_input_ids = torch.tensor(tokenizer.encode(query + completion, max_length=max_length, truncation=True))
    labels = full_input_ids.clone()
    labels[:len(prompt_input_ids)] = -100
    return full_input_ids.tolist(), labels.tolist()


@functools.lru_cache
def pool_examples(per_source: int = 25) -> list[dict]:
    """Seeded samples of every source, OASST1 multi-turn paths with a system turn added, and
    contents with surrounding whitespace (which the reference strips)."""
    rng = random.Random(0)
    out = []
    for name in ("dolly", "cot", "flan_v2", "oasst1"):
        rows = pools.RAW_SOURCES[name](DATA, 0)
        if name == "oasst1":
            rows = [r for r in rows if len(r["messages"]) >= 4]
        out += rng.sample(rows, per_source)
    multi = [r for r in pools.RAW_SOURCES["oasst1"](DATA, 0) if len(r["messages"]) >= 4][:10]
    out += [{**r, "id": r["id"] + "_sys", "messages": [
        {"role": "system", "content": " You are a helpful assistant.\n"}, *r["messages"]]} for r in multi]
    out += [{**r, "id": r["id"] + "_ws", "messages": [
        {"role": m["role"], "content": "  " + m["content"] + " \n"} for m in r["messages"]]} for r in out[:10]]
    return out


@pytest.fixture(scope="module")
def llama_tokenizer(tmp_path_factory):
    pytest.importorskip("sentencepiece")
    if not (DATA / "dolly").is_dir():
        pytest.skip(f"real data not found at {DATA}")
    from transformers import AutoTokenizer

    from less.sp_tokenizer import pool_texts, train_llama_tokenizer

    out = train_llama_tokenizer(pool_texts(DATA, per_source=1500), tmp_path_factory.mktemp("sp") / "tok", 4000)
    return AutoTokenizer.from_pretrained(out)


@pytest.fixture(params=["tiny", "llama"])
def tokenizer(request):
    return request.getfixturevalue("tiny_tokenizer" if request.param == "tiny" else "llama_tokenizer")


def test_llama_style_tokenizer_behaves_like_llama2_at_eos(llama_tokenizer):
    tok = llama_tokenizer
    ids = tok("<|user|>\nHi\n<|assistant|>\nHello 12.</s>\n")["input_ids"]
    pieces = tok.convert_ids_to_tokens(ids)
    assert ids[0] == tok.bos_token_id == 1 and tok.eos_token_id == 2
    assert pieces[-3:] == ["</s>", "▁", "<0x0A>"]  # Llama-2's fast tokenizer: '▁' after a special token
    assert "<0x0A>" in pieces[:10] and {"1", "2"} <= set(pieces)  # newline by byte fallback, digits split


@needs_data
@pytest.mark.parametrize("max_length", [2048, 96])
def test_pool_encoding_equals_the_reference(tokenizer, max_length):
    examples = [dict(ex) for ex in pool_examples()]
    for ex in examples:
        assert encode_example(ex, tokenizer, max_length) == reference_encode_messages(ex, tokenizer, max_length), ex["id"]
    # the batch path (drops examples left without labels) agrees on what it keeps
    enc = encode_examples(examples, tokenizer, max_length)
    by_id = {ex["id"]: ex for ex in examples}
    for i, id_ in enumerate(enc.ids):
        assert (enc.input_ids[i], enc.labels[i]) == reference_encode_messages(by_id[id_], tokenizer, max_length)


@needs_data
def test_assistant_labels_end_with_eos_and_newline(tokenizer):
    ex = pool_examples(2)[0]
    ids, labels = encode_example(ex, tokenizer, None)
    last_eos = max(i for i, x in enumerate(ids) if x == tokenizer.eos_token_id)
    assert labels[last_eos:] == ids[last_eos:] and tokenizer.decode(ids[last_eos + 1:]).strip(" ") == "\n"
    assert sum(x == tokenizer.eos_token_id for x in labels) == sum(m["role"] == "assistant" for m in ex["messages"])


def test_prompt_completion_pool_examples_equal_the_reference(tokenizer):
    rows = [{"id": "a", "prompt": "<|user|>\nQ?\n<|assistant|>\n", "completion": "A."},
            {"id": "b", "prompt": "Translate: chat", "completion": "cat"},          # joined by a space
            {"id": "c", "prompt": "Sum 2 and 3.", "completion": " 5"},
            {"id": "d", "prompt": "Tab\t", "completion": "x\n"}]
    for ex in rows:
        for n in (512, 6):
            assert encode_example(ex, tokenizer, n) == reference_encode_prompt_completion(ex, tokenizer, n), ex["id"]


@needs_data
@pytest.mark.parametrize("name", ["mmlu", "bbh", "tydiqa"])
def test_dval_encoding_equals_the_reference(tokenizer, name):
    """D_val: prompt and completion as the reference builds them, no EOS, loss on the completion."""
    rows = getattr(targets, name)(DATA)
    for ex in rows[:: max(1, len(rows) // 30)]:
        query = ex["messages"][0]["content"]
        query = "<|user|>\n" + query + "\n<|assistant|>\n" + ex["assistant_prefix"]
        completion = ex["messages"][-1]["content"]
        assert encode_example(ex, tokenizer, None, completion_eos=False) == \
            reference_dval(query, completion, tokenizer, 100_000), ex["id"]
        # cut on the right as the reference would, when it is shorter (our D_val keeps the end)
        assert encode_example(ex, tokenizer, 64, completion_eos=False, truncation="right") == \
            reference_dval(query, completion, tokenizer, 64), ex["id"]


def test_messages_target_follows_the_dval_rule(tokenizer):
    """A conversation in target=jsonl: the prompt is the Tulu text before its last assistant turn
    plus ``<|assistant|>\\n``; the completion is that turn as written; no EOS."""
    ex = {"id": "t", "messages": [{"role": "system", "content": "Be brief. "},
                                  {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                                  {"role": "user", "content": "2+3?"}, {"role": "assistant", "content": " 5"}]}
    query = f"<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\nHello{tokenizer.eos_token}\n<|user|>\n2+3?\n<|assistant|>\n"
    ids, labels = encode_example(ex, tokenizer, None, completion_eos=False)
    assert (ids, labels) == reference_dval(query, " 5", tokenizer, 100_000)
    assert tokenizer.eos_token_id not in [x for x in labels if x != IGNORE_INDEX]


@needs_data
def test_stored_pool_features_equal_a_reference_recomputation(shared_cache, tiny_model_dir, tiny_model_cfg,
                                                               tiny_tokenizer, tmp_path):
    """A run on a real pool with ``datastore.projection=none``: every stored pool row has cosine
    >= 0.9999 with an fp32 batch-size-1 Adam-direction gradient of the reference encoding."""
    import json

    import numpy as np
    from peft import PeftModel

    from less.checkpoints import CHECKPOINT_META
    from less.data.formats import write_jsonl
    from less.gradients.adam import adam_direction, load_moments
    from less.gradients.per_example import per_example_loss
    from less.models import load_model
    from tests.conftest import run_pipeline

    pool = [dict(ex) for ex in pool_examples()][::4]
    write_jsonl(tmp_path / "pool.jsonl", pool)
    write_jsonl(tmp_path / "target.jsonl", targets.mmlu(DATA)[:10])
    max_length = 512
    res = run_pipeline(["pool=jsonl", f"pool.files=[{tmp_path / 'pool.jsonl'}]", "target=jsonl",
                        f"target.file={tmp_path / 'target.jsonl'}", "datastore.projection=none",
                        f"datastore.max_length={max_length}", "stages=[prepare,warmup,datastore,select]"], shared_cache,
                       tmp_path / "out")
    by_id = {ex["id"]: ex for ex in pool}
    store = Path(res["stages"]["datastore"]["dir"])
    warm = Path(res["stages"]["warmup"]["dir"])
    ckpts = {c["epoch"]: warm / c["dir"] for c in json.loads((warm / "warmup.json").read_text())["checkpoints"]}
    files = [f for f in json.loads((store / "manifest.json").read_text())["files"] if f["split"] == "pool"]
    assert files and all(f["projection"] == "none" for f in files)
    worst = 1.0
    for f in files:
        rows = np.load(store / f["path"]).astype(np.float32)
        ids = [json.loads(line)["id"] for line in open(store / f["ids"])]
        assert sorted(ids) == sorted(by_id)
        ckpt = ckpts[f["checkpoint"]]
        model = PeftModel.from_pretrained(load_model(tiny_model_cfg, str(tiny_model_dir),
                                                     torch.device("cpu")), str(ckpt), is_trainable=True)
        model.eval()
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        names = json.loads((ckpt / CHECKPOINT_META).read_text())["optimizer_param_names"]
        mom = load_moments(ckpt, names, {n: tuple(p.shape) for n, p in named})
        for row, id_ in zip(rows, ids):
            input_ids, labels = reference_encode_messages(by_id[id_], tiny_tokenizer, max_length)
            loss = per_example_loss(model(input_ids=torch.tensor([input_ids])).logits, torch.tensor([labels])).sum()
            grads = torch.autograd.grad(loss, [p for _, p in named])
            ref = torch.cat([adam_direction(g, *mom.by_name[n], *(mom.betas or (0.9, 0.999)), mom.eps or 1e-8).flatten()
                             for (n, _), g in zip(named, grads)]).numpy()
            worst = min(worst, float(row @ ref / (np.linalg.norm(row) * np.linalg.norm(ref))))
    assert worst >= 0.9999, worst

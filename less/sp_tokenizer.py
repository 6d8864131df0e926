"""A Llama-style SentencePiece BPE tokenizer trained here (the hub's Llama-2 tokenizer is out of
reach offline): byte fallback, a dummy-prefix space, digits split, no normalisation, newlines left
to byte fallback (training reads one line per sentence, as Llama's corpus), ids unk=0 bos=1 eos=2.
Saved as a transformers ``LlamaTokenizer`` with ``legacy=True``, so, as Llama-2's fast tokenizer,
text after a special token gets its own ``▁`` (``</s>\\n`` -> ``</s> ▁ <0x0A>``).

Trained on the instruction pools' text under ``data.root`` (Dolly, FLAN v2 CoT, the NIv2 sample,
OASST1), never on the evaluation sets' questions.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

from less.errors import ConfigError

TRAIN_SOURCES = ("dolly", "cot", "flan_v2", "oasst1")


def pool_texts(root: Path, per_source: int = 3000, seed: int = 0) -> list[str]:
    """Message contents of a seeded sample of each instruction source under ``root``."""
    import random

    from less.data import pools

    texts = []
    for name in TRAIN_SOURCES:
        rows = pools.RAW_SOURCES[name](root, seed)
        rows = random.Random(seed).sample(rows, min(per_source, len(rows)))
        texts += [m["content"] for r in rows for m in r["messages"]]
    return texts


def train_llama_tokenizer(texts: list[str], out: Path, vocab_size: int = 8000) -> Path:
    """Train on ``texts`` (single-threaded, so the model depends only on the texts) and save a
    transformers tokenizer directory at ``out`` (built beside it, then renamed)."""
    try:
        import sentencepiece as spm
    except ImportError:
        raise ConfigError("training a SentencePiece tokenizer needs the sentencepiece package "
                          "(pip install sentencepiece)") from None
    from transformers import AutoTokenizer

    lines = [line for t in texts for line in t.split("\n") if line.strip()]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, add_dummy_prefix=True, split_digits=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", allow_whitespace_only_pieces=True, character_coverage=0.99995,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, input_sentence_size=0,
        shuffle_input_sentence=False, max_sentence_length=1 << 16, minloglevel=2)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "tokenizer.model").write_bytes(model.getvalue())
    config = {"tokenizer_class": "LlamaTokenizer", "legacy": True, "add_bos_token": True, "add_eos_token": False,
              "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    (tmp / "tokenizer_config.json").write_text(json.dumps(config))
    tok = AutoTokenizer.from_pretrained(tmp)  # converts the SentencePiece model to tokenizer.json
    tok.save_pretrained(tmp)
    saved = json.loads((tmp / "tokenizer_config.json").read_text())
    (tmp / "tokenizer_config.json").write_text(json.dumps({**saved, "legacy": True}, indent=2))  # kept on reload
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out

"""Example formats, JSONL I/O and the Tulu chat encoding with assistant-only labels.

An example is a dict with a stable ``id`` and either ``messages`` (chat turns with ``role`` in
user/assistant/system and ``content``) or ``prompt``/``completion`` (already-formatted prompt text,
loss on the completion). The Tulu format is
``<|system|>\\n..\\n<|user|>\\n..\\n<|assistant|>\\n..</s>\\n``; only assistant content and its EOS
carry labels, everything else gets -100.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from less.errors import DataError

IGNORE_INDEX = -100
ROLES = ("system", "user", "assistant")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write rows to ``path`` atomically (temporary name, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def validate_example(row: dict[str, Any], where: str) -> None:
    """Raise DataError naming ``where`` (file:line) if ``row`` is not a usable example."""
    if "id" not in row or not isinstance(row["id"], (str, int)):
        raise DataError(f"{where}: missing 'id'")
    if "messages" in row:
        msgs = row["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise DataError(f"{where}: 'messages' must be a non-empty list")
        for m in msgs:
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise DataError(f"{where}: each message needs role in {ROLES} and string content")
    elif "prompt" in row and "completion" in row:
        if not isinstance(row["prompt"], str) or not isinstance(row["completion"], str):
            raise DataError(f"{where}: 'prompt' and 'completion' must be strings")
    else:
        raise DataError(f"{where}: needs 'messages' or 'prompt'+'completion'")


def read_examples(path: str | Path) -> list[dict[str, Any]]:
    """Read and validate an example JSONL file; duplicate ids are an error."""
    rows = read_jsonl(path)
    seen: dict[str, int] = {}
    for i, row in enumerate(rows, 1):
        validate_example(row, f"{path}:{i}")
        rid = str(row["id"])
        if rid in seen:
            raise DataError(f"{path}:{i}: duplicate id {rid!r} (first at example {seen[rid]})")
        seen[rid] = i
    return rows


def tulu_segments(example: dict[str, Any]) -> list[tuple[str, bool]]:
    """Split an example into (text, has_labels) segments; the EOS follows every labelled segment."""
    if "messages" not in example:
        return [(example["prompt"], False), (example["completion"], True)]
    segs: list[tuple[str, bool]] = []
    prefix = ""
    for m in example["messages"]:
        if m["role"] == "assistant":
            segs.append((prefix + "<|assistant|>\n", False))
            segs.append((m["content"], True))
            prefix = "\n"
        else:
            prefix += f"<|{m['role']}|>\n{m['content']}\n"
    if prefix.strip():
        segs.append((prefix, False))
    return segs


def tulu_text(example: dict[str, Any], eos: str = "</s>") -> str:
    """The full Tulu text; prompt/completion examples get no EOS when ``eos`` is empty."""
    return "".join(t + (eos if lab else "") for t, lab in tulu_segments(example))


@dataclass
class Encoded:
    ids: list[str]
    input_ids: list[list[int]]
    labels: list[list[int]]
    dropped: Counter = field(default_factory=Counter)
    dropped_ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def item(self, i: int) -> dict[str, list[int]]:
        return {
            "input_ids": self.input_ids[i],
            "attention_mask": [1] * len(self.input_ids[i]),
            "labels": self.labels[i],
        }


def encode_example(example: dict[str, Any], tokenizer, max_length: int,
                   completion_eos: bool = True) -> tuple[list[int], list[int]]:
    """Tokenize the whole Tulu text at once (as open-instruct does) and label the tokens that start
    inside an assistant turn or its EOS. Tokenizing segments separately would differ for
    sentencepiece tokenizers, which prefix every separate call with a space marker.

    ``completion_eos=False`` leaves the EOS off prompt/completion examples (LESS's D_val format).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{type(tokenizer).__name__} is not a fast tokenizer; offsets are needed for masking")
    eos = tokenizer.eos_token
    text, spans = "", []
    with_eos = completion_eos or "messages" in example
    for seg, labelled in tulu_segments(example):
        if labelled:
            seg = seg + (eos if with_eos else "")
            spans.append((len(text), len(text) + len(seg)))
        text += seg
    enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True, truncation=False)
    ids = enc["input_ids"]
    labels = [IGNORE_INDEX] * len(ids)
    for t, (start, end) in enumerate(enc["offset_mapping"]):
        if end > start and any(a <= start < b for a, b in spans):
            labels[t] = ids[t]
    return ids[:max_length], labels[:max_length]


def encode_examples(examples: list[dict[str, Any]], tokenizer, max_length: int,
                    completion_eos: bool = True) -> Encoded:
    """Tokenize with assistant-only labels; examples left with no label are dropped and counted."""
    out = Encoded([], [], [])
    for ex in examples:
        if "messages" in ex and not any(m["role"] == "assistant" for m in ex["messages"]):
            out.dropped["no_assistant_turn"] += 1
            out.dropped_ids.append(str(ex["id"]))
            continue
        ids, labels = encode_example(ex, tokenizer, max_length, completion_eos)
        if all(x == IGNORE_INDEX for x in labels):
            out.dropped["no_labels_after_truncation"] += 1
            out.dropped_ids.append(str(ex["id"]))
            continue
        out.ids.append(str(ex["id"]))
        out.input_ids.append(ids)
        out.labels.append(labels)
    return out

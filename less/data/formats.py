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

from less.errors import ConfigError, DataError

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
    last = max(i for i, m in enumerate(example["messages"]) if m["role"] == "assistant") \
        if any(m["role"] == "assistant" for m in example["messages"]) else -1
    for i, m in enumerate(example["messages"]):
        if m["role"] == "assistant":
            # an unlabelled start of the final answer (e.g. D_val's "The answer is:")
            lead = example.get("assistant_prefix", "") if i == last else ""
            segs.append((prefix + "<|assistant|>\n" + lead, False))
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
    truncated: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    def item(self, i: int) -> dict[str, list[int]]:
        return {
            "input_ids": self.input_ids[i],
            "attention_mask": [1] * len(self.input_ids[i]),
            "labels": self.labels[i],
        }


CHAT_FORMATS = ("tulu", "tokenizer")


def _tulu_render(example: dict[str, Any], eos: str) -> tuple[str, list[tuple[int, int]]]:
    text, spans = "", []
    for seg, labelled in tulu_segments(example):
        if labelled:
            seg = seg + eos
            spans.append((len(text), len(text) + len(seg)))
        text += seg
    return text, spans


def _template_render(example: dict[str, Any], tokenizer, completion_eos: bool
                     ) -> tuple[str, list[tuple[int, int]]]:
    """Render with the tokenizer's own chat template; each assistant turn's span is found by
    rendering the conversation up to it (with and without the turn), which must be prefixes."""
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("chat_format=tokenizer but the tokenizer has no chat template")
    msgs = [{"role": m["role"], "content": m["content"]} for m in example["messages"]]
    turns = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
    text, spans = "", []
    for i in turns:
        lead = example.get("assistant_prefix", "") if i == turns[-1] else ""
        before = tokenizer.apply_chat_template(msgs[:i], add_generation_prompt=True, tokenize=False)
        through = tokenizer.apply_chat_template(
            [*msgs[:i], {"role": "assistant", "content": lead + msgs[i]["content"]}], tokenize=False)
        start = len(before) + len(lead)
        if not (before.startswith(text) and through.startswith(before + lead)
                and through[start:].startswith(msgs[i]["content"])):
            raise ConfigError(f"chat_format=tokenizer: example {example['id']}: the chat template does not render turns as "
                             "prefixes of each other, so assistant tokens cannot be masked exactly")
        spans.append((start, len(through) if completion_eos else start + len(msgs[i]["content"])))
        text = through
    return text, spans


def truncate(ids: list[int], labels: list[int], max_length: int, side: str) -> tuple[list[int], list[int]]:
    if side == "left":
        return ids[-max_length:], labels[-max_length:]
    return ids[:max_length], labels[:max_length]


def encode_example(example: dict[str, Any], tokenizer, max_length: int | None,
                   completion_eos: bool = True, chat_format: str = "tulu",
                   truncation: str = "right") -> tuple[list[int], list[int]]:
    """Tokenize the whole rendered text at once (as open-instruct does) and label the tokens that
    start inside an assistant turn (and its EOS). Tokenizing segments separately would differ for
    sentencepiece tokenizers, which prefix every separate call with a space marker.

    ``completion_eos=False`` leaves the EOS off (LESS's D_val: loss on the completion only).
    ``chat_format="tokenizer"`` renders ``messages`` with the tokenizer's chat template instead of
    Tulu; prompt/completion examples are used as written in either format.
    ``truncation="left"`` keeps the last ``max_length`` tokens (the completion) instead of the first.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"{type(tokenizer).__name__} is not a fast tokenizer; offsets are needed for masking")
    if chat_format == "tokenizer" and "messages" in example:
        text, spans = _template_render(example, tokenizer, completion_eos)
        special = False  # the template writes BOS itself
    else:
        text, spans = _tulu_render(example, tokenizer.eos_token if completion_eos else "")
        special = True
    enc = tokenizer(text, add_special_tokens=special, return_offsets_mapping=True, truncation=False)
    ids = enc["input_ids"]
    labels = [IGNORE_INDEX] * len(ids)
    for t, (start, end) in enumerate(enc["offset_mapping"]):
        if end > start and any(a <= start < b for a, b in spans):
            labels[t] = ids[t]
    return (ids, labels) if max_length is None else truncate(ids, labels, max_length, truncation)


def encode_examples(examples: list[dict[str, Any]], tokenizer, max_length: int,
                    completion_eos: bool = True, chat_format: str = "tulu",
                    truncation: str = "right") -> Encoded:
    """Tokenize with assistant-only labels; examples left with no label are dropped and counted,
    and examples cut to ``max_length`` are counted as ``truncated``."""
    out = Encoded([], [], [])
    for ex in examples:
        if "messages" in ex and not any(m["role"] == "assistant" for m in ex["messages"]):
            out.dropped["no_assistant_turn"] += 1
            out.dropped_ids.append(str(ex["id"]))
            continue
        ids, labels = encode_example(ex, tokenizer, None, completion_eos, chat_format)
        if len(ids) > max_length:
            out.truncated += 1
            ids, labels = truncate(ids, labels, max_length, truncation)
        if all(x == IGNORE_INDEX for x in labels):
            out.dropped["no_labels_after_truncation"] += 1
            out.dropped_ids.append(str(ex["id"]))
            continue
        out.ids.append(str(ex["id"]))
        out.input_ids.append(ids)
        out.labels.append(labels)
    return out

"""Example formats, JSONL I/O and the Tulu chat encoding with assistant-only labels.

An example is a dict with a stable ``id`` and either ``messages`` (chat turns with ``role`` in
user/assistant/system and ``content``) or ``prompt``/``completion`` (already-formatted prompt text,
loss on the completion). The Tulu format is
``<|system|>\\n..\\n<|user|>\\n..\\n<|assistant|>\\n..</s>\\n``. Encoding follows LESS's reference
code (``less/data_selection/get_training_dataset.py`` and ``get_validation_dataset.py``) token for
token: an assistant turn's labels are its content, its EOS and the newline after it; D_val examples
are labelled on their completion only, without EOS.
"""

from __future__ import annotations

import csv
import io
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


def _not_utf8(path: str | Path, data: bytes, e: UnicodeDecodeError, first_line: int = 1) -> DataError:
    """``path:line: not valid UTF-8 (byte 0x.. at column n)`` for a decode error in ``data`` (the
    file's bytes from the start of line ``first_line``); the column counts bytes from 1."""
    line = first_line + data.count(b"\n", 0, e.start)
    column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
    return DataError(f"{path}:{line}: not valid UTF-8 (byte 0x{data[e.start]:02x} at column {column})")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None


def read_text(path: str | Path, newline: str | None = None) -> str:
    """A user's text file, decoded as UTF-8; a byte that is not names ``file:line`` and its column.
    ``newline=None`` translates line endings to ``\n`` as ``open()`` does; ``""`` keeps them (CSV)."""
    path = Path(path)
    data = _read_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _not_utf8(path, data, e) from None
    return text.replace("\r\n", "\n").replace("\r", "\n") if newline is None else text


def read_json(path: str | Path) -> Any:
    """A user's JSON file; bad bytes and malformed JSON name ``file:line``."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None


def read_csv(path: str | Path, **kwargs: Any) -> list[list[str]]:
    """The rows of a user's CSV (``delimiter="\t"`` for TSV) file; bad bytes name ``file:line``."""
    return list(csv.reader(io.StringIO(read_text(path, newline=""), newline=""), **kwargs))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    rows = []
    try:
        fh = open(path, "rb")  # bytes, so that a line that is not UTF-8 can be named
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None
    with fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise _not_utf8(path, raw, e, lineno) from None
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
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:  # e.g. a full disk: no half-written temporary left beside the file
        tmp.unlink(missing_ok=True)
        raise


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


def concat_messages(messages: list[dict[str, str]], eos: str = "</s>") -> str:
    """The Tulu text of a conversation, as the reference's ``concat_messages``: every content
    ``.strip()``ped, each assistant turn followed by EOS and a newline."""
    out = ""
    for m in messages:
        if m["role"] == "assistant":
            out += "<|assistant|>\n" + m["content"].strip() + eos + "\n"
        else:
            out += f"<|{m['role']}|>\n" + m["content"].strip() + "\n"
    return out


def _separated(prompt: str, completion: str) -> str:
    """The reference's prompt/completion join: a space when neither side has one at the seam."""
    ws = (" ", "\n", "\t")
    return prompt + completion if prompt.endswith(ws) or completion.startswith(ws) else prompt + " " + completion


def tulu_text(example: dict[str, Any], eos: str = "</s>") -> str:
    """The training text of an example (pool, warmup, target training): a conversation's
    ``concat_messages``; a prompt/completion pair joined as the reference does, then EOS."""
    if "messages" in example:
        return concat_messages(example["messages"], eos)
    return _separated(example["prompt"], example["completion"]) + eos


def dval_parts(example: dict[str, Any], answer_prefix: bool = True) -> tuple[str, str]:
    """(prompt, completion) of a D_val example, used as written (no strip, no EOS), as the
    reference's ``get_validation_dataset``. A conversation's completion is its last assistant
    turn; the prompt is the Tulu text of the turns before it (as in training), then
    ``<|assistant|>\n`` and the example's ``assistant_prefix`` (e.g. ``The answer is:``; left out
    with ``answer_prefix=False``)."""
    if "messages" not in example:
        return example["prompt"], example["completion"]
    msgs = example["messages"]
    last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
    prefix = example.get("assistant_prefix", "") if answer_prefix else ""
    prompt = concat_messages(msgs[:last]) + "<|assistant|>\n" + prefix
    return prompt, msgs[last]["content"]


def dval_text(example: dict[str, Any]) -> str:
    return "".join(dval_parts(example))


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
TURNS = ("all", "last")


@dataclass(frozen=True)
class Encoding:
    """The encoding choices the reference code makes silently, as options (``datastore.encoding``).
    The defaults are the reference's: every assistant turn of a training example labelled, each
    with its EOS (and the newline after it); D_val's answer prefix (``The answer is:``) kept."""

    eos_label: bool = True     # label the EOS closing each assistant turn (training rule)
    turns: str = "all"         # all | last: which assistant turns of a conversation carry labels
    answer_prefix: bool = True  # D_val rule: the example's assistant_prefix before the completion

    def __post_init__(self):
        if self.turns not in TURNS:
            raise ConfigError(f"datastore.encoding.turns must be one of {', '.join(TURNS)}, got {self.turns!r}")


REFERENCE_ENCODING = Encoding()


def _unlabel_eos(ids: list[int], labels: list[int], eos_id: int | None) -> list[int]:
    """Labels without each labelled EOS and the labelled tokens after it up to the next unlabelled
    one (the newline that closes the turn)."""
    out, off = list(labels), False
    for t, x in enumerate(ids):
        if out[t] == IGNORE_INDEX:
            off = False
        elif off or x == eos_id:
            out[t], off = IGNORE_INDEX, True
    return out


def _template_render(example: dict[str, Any], tokenizer, completion_eos: bool, answer_prefix: bool = True
                     ) -> tuple[str, list[tuple[int, int]]]:
    """Render with the tokenizer's own chat template; each assistant turn's span is found by
    rendering the conversation up to it (with and without the turn), which must be prefixes."""
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("chat_format=tokenizer but the tokenizer has no chat template")
    msgs = [{"role": m["role"], "content": m["content"]} for m in example["messages"]]
    turns = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
    text, spans = "", []
    for i in turns:
        lead = example.get("assistant_prefix", "") if i == turns[-1] and answer_prefix else ""
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


def _encode_template(example: dict[str, Any], tokenizer, completion_eos: bool, encoding: Encoding = REFERENCE_ENCODING
                     ) -> tuple[list[int], list[int]]:
    """Whole-text tokenization with labels on the tokens that start inside an assistant span."""
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"{type(tokenizer).__name__} is not a fast tokenizer; offsets are needed for masking")
    text, spans = _template_render(example, tokenizer, completion_eos, encoding.answer_prefix)
    if encoding.turns == "last":
        spans = spans[-1:]
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)  # the template writes BOS
    ids = enc["input_ids"]
    labels = [IGNORE_INDEX] * len(ids)
    for t, (start, end) in enumerate(enc["offset_mapping"]):
        if end > start and any(a <= start < b for a, b in spans):
            labels[t] = ids[t]
    return ids, labels


def truncate(ids: list[int], labels: list[int], max_length: int, side: str) -> tuple[list[int], list[int]]:
    if side == "left":
        return ids[-max_length:], labels[-max_length:]
    return ids[:max_length], labels[:max_length]


def _lengths(tokenizer, texts: list[str]) -> list[int]:
    return [len(x) for x in tokenizer(texts, add_special_tokens=True)["input_ids"]] if texts else []


def _encode_messages(messages: list[dict[str, str]], tokenizer) -> tuple[list[int], list[int]]:
    """The reference's ``encode_with_messages_format``: tokenize the whole text, label every token,
    then unlabel each non-assistant message, from the token count of the text before it to the
    token count of the text through it (and the ``<|assistant|>\n`` that follows), each prefix
    tokenized on its own. An assistant turn keeps its content, EOS and the newline after it."""
    eos = tokenizer.eos_token
    ids = tokenizer(concat_messages(messages, eos), add_special_tokens=True)["input_ids"]
    starts, ends = [], []
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            continue
        starts.append(concat_messages(messages[:i], eos) if i else None)
        nxt = i + 1 < len(messages) and messages[i + 1]["role"] == "assistant"
        ends.append(concat_messages(messages[: i + 1], eos) + ("<|assistant|>\n" if nxt else ""))
    lengths = iter(_lengths(tokenizer, [t for t in starts if t is not None] + ends))
    start_at = [0 if t is None else next(lengths) for t in starts]
    labels = list(ids)
    for a, b in zip(start_at, lengths):
        labels[a:b] = [IGNORE_INDEX] * len(labels[a:b])
    return ids, labels


def _encode_prompt_completion(prompt: str, text: str, tokenizer) -> tuple[list[int], list[int]]:
    """Tokenize ``text`` whole and unlabel as many leading tokens as ``prompt`` tokenizes to."""
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    n_prompt = _lengths(tokenizer, [prompt])[0]
    return ids, [IGNORE_INDEX] * min(n_prompt, len(ids)) + ids[n_prompt:]


def _last_turn_only(messages: list[dict[str, str]], tokenizer, labels: list[int]) -> list[int]:
    """Labels of the reference's encoding with every token before the last assistant turn's content
    unlabelled (the same prefix tokenization as ``_encode_messages``)."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    if last == 0:
        return labels
    n = _lengths(tokenizer, [concat_messages(messages[:last], tokenizer.eos_token) + "<|assistant|>\n"])[0]
    return [IGNORE_INDEX] * min(n, len(labels)) + labels[n:]


def encode_example(example: dict[str, Any], tokenizer, max_length: int | None,
                   completion_eos: bool = True, chat_format: str = "tulu",
                   truncation: str = "right", encoding: Encoding = REFERENCE_ENCODING) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one example, token for token as LESS's reference code makes them.

    Training rule (``completion_eos=True``: pool, warmup, target training): a conversation as
    ``encode_with_messages_format`` (see ``_encode_messages``); a prompt/completion pair as
    ``encode_with_prompt_completion_format`` (joined by ``tulu_text``, EOS appended, the prompt's
    token count unlabelled).
    D_val rule (``completion_eos=False``): ``dval_parts`` joined, no EOS, the prompt's token count
    unlabelled (the reference's ``get_validation_dataset``).
    ``chat_format="tokenizer"`` renders conversations with the tokenizer's own chat template
    instead (each assistant turn located by rendering the conversation up to it; not in LESS).
    ``truncation="left"`` keeps the last ``max_length`` tokens (the completion) instead of the first.
    ``encoding`` varies the reference's choices (:class:`Encoding`): the training rule's EOS label
    and labelled turns, the D_val rule's answer prefix.
    """
    if chat_format == "tokenizer" and "messages" in example:  # spans end before the EOS without eos_label
        return _truncated(_encode_template(example, tokenizer, completion_eos and encoding.eos_label, encoding),
                          max_length, truncation)
    if not completion_eos:
        prompt, completion = dval_parts(example, encoding.answer_prefix)
        ids, labels = _encode_prompt_completion(prompt, prompt + completion, tokenizer)
    elif "messages" in example:
        ids, labels = _encode_messages(example["messages"], tokenizer)
        if encoding.turns == "last":
            labels = _last_turn_only(example["messages"], tokenizer, labels)
    else:
        ids, labels = _encode_prompt_completion(example["prompt"], tulu_text(example, tokenizer.eos_token), tokenizer)
    if completion_eos and not encoding.eos_label:
        labels = _unlabel_eos(ids, labels, tokenizer.eos_token_id)
    return _truncated((ids, labels), max_length, truncation)


def _truncated(encoded: tuple[list[int], list[int]], max_length: int | None, side: str) -> tuple[list[int], list[int]]:
    return encoded if max_length is None else truncate(*encoded, max_length, side)


def encode_examples(examples: list[dict[str, Any]], tokenizer, max_length: int,
                    completion_eos: bool = True, chat_format: str = "tulu",
                    truncation: str = "right", encoding: Encoding = REFERENCE_ENCODING) -> Encoded:
    """Tokenize with assistant-only labels; examples left with no label are dropped and counted,
    and examples cut to ``max_length`` are counted as ``truncated``."""
    out = Encoded([], [], [])
    for ex in examples:
        if "messages" in ex and not any(m["role"] == "assistant" for m in ex["messages"]):
            out.dropped["no_assistant_turn"] += 1
            out.dropped_ids.append(str(ex["id"]))
            continue
        ids, labels = encode_example(ex, tokenizer, None, completion_eos, chat_format, encoding=encoding)
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

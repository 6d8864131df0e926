"""Converters from the raw public sources to pool examples in the chat ``messages`` format.

Every example carries ``dataset`` (its source) and a stable unique ``id``. The paper's pool is
FLAN v2 (here: the Super-NaturalInstructions sample with FLAN's natinst_v2 zero-shot templates),
FLAN v2 CoT (the CoT source TSVs with FLAN's zero-shot CoT templates), Dolly and OASST1
(root-to-leaf conversations of the message trees); ``less_data`` reads the processed pool exactly
as published by the paper's authors.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig

from less.data.formats import read_csv, read_examples, read_json, read_jsonl
from less.data.kinds import pool_kind
from less.data.locate import data_root, find
from less.errors import DataError
from less.identity import data_id, tree_id

Example = dict[str, Any]

COT_TEMPLATE_KEYS = {"aqua": "stream_aqua", "creak": "cot_creak", "ecqa": "cot_ecqa", "esnli": "cot_esnli",
                     "gsm8k": "cot_gsm8k", "qasc": "cot_qasc", "qed": "stream_qed",
                     "sensemaking": "cot_sensemaking", "strategyqa": "cot_strategyqa"}


def _chat(user: str, assistant: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def _template_rng(seed: int, key: str) -> random.Random:
    return random.Random(f"{seed}:{key}")


def dolly(root: Path, seed: int) -> list[Example]:
    """Dolly-15k: instruction (+ blank line + context when present) -> response."""
    path = find(root, ["dolly"], "Dolly-15k")
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files:
        raise DataError(f"{path}: no Dolly JSONL file (set by data.root)")
    out = []
    for i, row in enumerate(read_jsonl(files[0])):
        for key in ("instruction", "response"):
            if not isinstance(row.get(key), str):
                raise DataError(f"{files[0]}:{i + 1}: missing '{key}'")
        ctx = (row.get("context") or "").strip()
        user = row["instruction"].strip() + (f"\n\n{ctx}" if ctx else "")
        out.append({"dataset": "dolly", "id": str(row.get("id", f"dolly_{i}")),
                    "messages": _chat(user, row["response"].strip())})
    return out


def cot(root: Path, seed: int) -> list[Example]:
    """FLAN v2 CoT: (question, answer, rationale) rows rendered with a seeded zero-shot template."""
    d = find(root, ["cot_flan_v2"], "FLAN v2 CoT data")
    templates = read_json(d / "flan_v2_cot_zeroshot_templates.json")["templates"]
    out = []
    for tsv in sorted(d.glob("*_train.tsv")):
        name = tsv.name.removesuffix("_train.tsv")
        if name not in COT_TEMPLATE_KEYS:
            raise DataError(f"{tsv}: unknown CoT dataset {name!r}")
        options = templates[COT_TEMPLATE_KEYS[name]]
        for lineno, row in enumerate(read_csv(tsv, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if len(row) != 3:
                raise DataError(f"{tsv}:{lineno}: expected 3 tab-separated fields, got {len(row)}")
            q, a, r = (x.replace("\\n", "\n").strip() for x in row)
            inp, tgt = _template_rng(seed, f"{name}_{lineno}").choice(options)
            fields = {"question": q, "answer": a, "chain_of_thought": r}
            out.append({"dataset": "cot", "id": f"cot_{name}_{lineno - 1}",
                        "messages": _chat(inp.format(**fields).strip(), tgt.format(**fields).strip())})
    if not out:
        raise DataError(f"{d}: no *_train.tsv files (set by data.root)")
    return out


def flan_v2(root: Path, seed: int) -> list[Example]:
    """FLAN v2 stand-in: Super-NaturalInstructions instances with FLAN's natinst_v2 templates."""
    d = find(root, ["flan_v2_proxy_niv2"], "FLAN v2 (NIv2) data")
    templates = read_json(d / "flan_v2_natinst_v2_zeroshot_templates.json")["templates"]
    files = sorted(d.glob("*.jsonl"))
    if not files:
        raise DataError(f"{d}: no NIv2 JSONL file (set by data.root)")
    out = []
    for lineno, row in enumerate(read_jsonl(files[0]), 1):
        outputs = row.get("output")
        if not row.get("definition") or "input" not in row or not outputs:
            raise DataError(f"{files[0]}:{lineno}: needs definition, input and output")
        output = outputs[0] if isinstance(outputs, list) else outputs
        inp, tgt = _template_rng(seed, row["id"]).choice(templates)
        fields = {"Definition": row["definition"], "input": row["input"], "output": output}
        out.append({"dataset": "flan_v2", "id": f"flan_v2_{row['id']}",
                    "messages": _chat(inp.format(**fields).strip(), tgt.format(**fields).strip())})
    return out


def oasst1(root: Path, seed: int) -> list[Example]:
    """OASST1 message trees -> every root-to-leaf conversation that ends with an assistant turn.

    Deleted messages and their subtrees are skipped (as open-instruct's converter does).
    """
    path = find(root, ["oasst1/oasst1_validation_en_messages.jsonl", "oasst1"], "OASST1 messages")
    if path.is_dir():
        cands = sorted(path.glob("*messages*.jsonl"))
        if not cands:
            raise DataError(f"{path}: no OASST1 messages JSONL (set by data.root)")
        path = cands[0]
    msgs = read_jsonl(path)
    children: dict[str | None, list[dict]] = {}
    for m in msgs:
        if m.get("deleted"):
            continue
        children.setdefault(m.get("parent_id"), []).append(m)
    role = {"prompter": "user", "assistant": "assistant"}
    out: list[Example] = []

    def walk(node: dict, path: list[dict[str, str]]) -> None:
        path = [*path, {"role": role[node["role"]], "content": node["text"]}]
        kids = children.get(node["message_id"], [])
        if not kids:
            if node["role"] == "assistant":
                out.append({"dataset": "oasst1", "id": f"oasst1_{node['message_id']}",
                            "message_tree_id": node.get("message_tree_id"), "messages": path})
            return
        for k in kids:
            walk(k, path)

    for root_msg in children.get(None, []):
        walk(root_msg, [])
    return out


RAW_SOURCES: dict[str, Callable[[Path, int], list[Example]]] = {
    "flan_v2": flan_v2, "cot": cot, "dolly": dolly, "oasst1": oasst1}
# what each converter reads under data.root (a file, or every file below a directory)
RAW_PATHS = {"flan_v2": "flan_v2_proxy_niv2", "cot": "cot_flan_v2", "dolly": "dolly", "oasst1": "oasst1"}


def cap(rows: list[Example], n: int | None, seed: int, name: str) -> list[Example]:
    """A seeded random subset of at most ``n`` rows, in their original order."""
    if n is None or len(rows) <= n:
        return rows
    keep = sorted(random.Random(f"cap:{seed}:{name}").sample(range(len(rows)), n))
    return [rows[i] for i in keep]


LESS_DATA_ORDER = ("flan_v2", "cot", "dolly", "oasst1")
LESS_DATA_FILES = ["train/processed/*/*.jsonl", "*/*.jsonl", "*.jsonl"]


def less_data_reads(pool_cfg: DictConfig, data_cfg: DictConfig) -> dict[str, Any]:
    if pool_cfg.get("path"):
        return {"path": tree_id(pool_cfg.path, LESS_DATA_FILES)}
    return {"data": data_id(data_cfg, LESS_DATA_FILES)}


def raw_reads(pool_cfg: DictConfig, data_cfg: DictConfig) -> dict[str, Any]:
    return {"data": data_id(data_cfg, [RAW_PATHS[s] for s in pool_cfg.sources if s in RAW_PATHS])}


@pool_kind("less_data", reads=less_data_reads)
def less_data(pool_cfg: DictConfig, data_cfg: DictConfig) -> list[Example]:
    """The processed pool as published (princeton-nlp/less_data): train/processed/<source>/*.jsonl."""
    if pool_cfg.get("path"):
        root = Path(str(pool_cfg.path)).expanduser().resolve()
        if not root.is_dir():
            raise DataError(f"{root}: directory not found (set by pool.path)")
    else:
        root = data_root(data_cfg, "the processed LESS pool", ["train/processed/*/*.jsonl"])
    files = sorted(root.glob(LESS_DATA_FILES[0])) or sorted(root.glob(LESS_DATA_FILES[1])) \
        or sorted(root.glob(LESS_DATA_FILES[2]))
    # the reference's train_files order (warmup_lora_train.sh), which its warmup permutation indexes
    order = {s: i for i, s in enumerate(LESS_DATA_ORDER)}
    files.sort(key=lambda f: (order.get(f.parent.name if f.parent != root else f.stem, len(order)), str(f)))
    if not files:
        raise DataError(f"{root}: no processed pool JSONL files (expected train/processed/<source>/*.jsonl)")
    out = []
    for f in files:
        source = f.parent.name if f.parent != root else f.stem
        if pool_cfg.sources and source not in pool_cfg.sources:
            continue
        rows = read_examples(f)
        for r in rows:
            r.setdefault("dataset", source)
        out.extend(cap(rows, pool_cfg.max_per_source, pool_cfg.seed, source))
    return out


@pool_kind("raw", reads=raw_reads)
def raw_pool(pool_cfg: DictConfig, data_cfg: DictConfig) -> list[Example]:
    """One or more raw sources converted here, each capped at ``pool.max_per_source``."""
    unknown = [s for s in pool_cfg.sources if s not in RAW_SOURCES]
    if unknown:
        raise DataError(f"pool.sources: unknown source(s) {unknown}; choose from {sorted(RAW_SOURCES)}")
    if not data_cfg.get("root"):
        raise DataError("pool sources are converted from local raw files: set data.root "
                        "(or use pool=less_data to read the processed pool from the hub)")
    root = data_root(data_cfg, "raw pool sources", [])
    out = []
    for s in pool_cfg.sources:
        out.extend(cap(RAW_SOURCES[s](root, pool_cfg.seed), pool_cfg.max_per_source, pool_cfg.seed, s))
    return out

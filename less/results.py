"""results.json, the run summary and the compute accounting: plain data, no torch (``analysis``
imports this module).

Accounting uses the usual dense-transformer rules with N = the base model's parameters: training
(warmup, target training) ~ 6 N per token per epoch; feature extraction ~ 4 N per token per
checkpoint (forward + backward to the LoRA weights); evaluation is not estimated.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

PEAK_FLOPS = 989e12  # H100 SXM dense bf16
MFU = 0.4           # assumed utilisation for the GPU-hour estimate


def merge(into: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``part`` into ``into`` (dicts merged key by key, other values replaced)."""
    for k, v in part.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            merge(into[k], v)
        else:
            into[k] = v
    return into


def flatten_metrics(tree: dict[str, Any], prefix: str, sep: str = "/") -> dict[str, Any]:
    """{"eval/mmlu/acc": .., "eval/mmlu/subtasks/anatomy/acc": ..} from the nested eval results."""
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten_metrics(v, key, sep))
        else:
            out[key] = v
    return out


def estimate(n_selector: int | None, n_model: int | None, warmup_tokens: int | None, warmup_epochs: int,
             feature_tokens: int | None, n_checkpoints: int, train_tokens: int | None, train_epochs: int
             ) -> dict[str, Any]:
    """Estimated FLOPs per stage (None where a factor is unknown) and H100-hours for their sum."""
    def mul(*xs):
        return None if any(x is None for x in xs) else float(math.prod(xs))

    flops = {"warmup": mul(6, n_selector, warmup_tokens, warmup_epochs),
             "datastore": mul(4, n_selector, feature_tokens, n_checkpoints),
             "train": mul(6, n_model, train_tokens, train_epochs)}
    known = [v for v in flops.values() if v is not None]
    total = sum(known) if known else None
    return {"flops": flops, "flops_total": total,
            "gpu_hours_h100_at_40pct_mfu": total / (PEAK_FLOPS * MFU) / 3600 if total is not None else None}


def accounting(seconds: dict[str, float], token_counts: dict[str, int] | None, selected_ids: list[str] | None,
               warmup: dict[str, Any], features: list[dict[str, Any]], train: dict[str, Any],
               params: dict[str, int | None]) -> dict[str, Any]:
    """Tokens, epochs, repeated tokens, estimated FLOPs and wall time of a run, from its artifacts'
    records (warmup.json, features.json of pool and target, train.json) and the pool's token counts."""
    tokens: dict[str, Any] = {}
    if token_counts is not None:
        tokens["pool"] = sum(token_counts.values())
        if selected_ids is not None:
            tokens["selected"] = sum(token_counts.get(str(i), 0) for i in selected_ids)
    for name, rec in (("warmup", warmup), ("train", train)):
        if rec.get("n_tokens") is not None:
            tokens.update({f"{name}_examples": rec["n_tokens"], f"{name}_trained": rec["n_tokens"] * rec["epochs"],
                           f"{name}_repeated": rec["n_tokens"] * (rec["epochs"] - 1)})
    feature_tokens = sum(m.get("n_tokens", 0) for m in features) if features else None
    n_ckpt = len(features[0]["checkpoints"]) if features else 0
    if feature_tokens is not None:
        tokens["features"] = feature_tokens
    return {"seconds": seconds, "tokens": tokens,
            "epochs": {"warmup": warmup.get("epochs"), "train": train.get("epochs")}, "params": params,
            **estimate(params.get("selector"), params.get("model"), warmup.get("n_tokens"),
                       warmup.get("epochs") or 0, feature_tokens, n_ckpt, train.get("n_tokens"),
                       train.get("epochs") or 0)}


def summary(r: dict[str, Any], path: Path) -> str:
    """The short human summary printed at the end of every run."""
    lines = ["", "== LESS run summary =="]
    pool = r.get("data", {}).get("pool")
    if pool and "n" in pool:
        lines.append(f"pool: {pool['n']} examples from {len(pool['by_source'])} sources"
                     + (f"; dropped {pool['dropped']}" if pool.get("dropped") else ""))
    tgt = r.get("data", {}).get("target")
    if tgt and "n" in tgt:
        lines.append(f"target: {tgt['name']}, {tgt['n']} examples in {len(tgt['by_subtask'])} subtasks"
                     + (f"; dropped {tgt['dropped']}" if tgt.get("dropped") else ""))
    sel = r.get("selection")
    if sel:
        detail = f", dim {sel['proj_dim']}" if sel.get("proj_dim") else ""
        lines.append(f"selected: {sel['n_selected']} of {sel['n_ranked']} ({sel['method']}{detail})")
        if sel.get("jaccard_vs_less") is not None and sel["method"] != "less":
            lines.append(f"overlap with the LESS selection (Jaccard): {sel['jaccard_vs_less']:.3f}")
        if sel.get("target_share") is not None:
            ratio = sel["target_share"] / sel["base_share"] if sel["base_share"] else float("nan")
            lines.append(f"target skill '{sel['target_skill']}': {sel['target_share']:.1%} of the selection"
                         f" vs {sel['base_share']:.1%} of the pool ({ratio:.1f}x)")
    for name in ("warmup", "train"):
        t = r.get(name)
        if t and t.get("train_loss") is not None:
            final = f", final logged loss {t['final_loss']:.4f}" if t.get("final_loss") is not None else ""
            lines.append(f"{name}: {t.get('n_examples')} examples, {t.get('steps')} steps, "
                         f"mean train loss {t['train_loss']:.4f}{final}")
    for key, label in (("eval", ""), ("eval_base", " (base model)")):
        for task, ms in r.get(key, {}).items():
            if not isinstance(ms, dict):  # e.g. tydiqa_shot_source
                lines.append(f"eval {task}{label}: {ms}")
                continue
            subs = ms.get("subtasks", {})
            lines.append(f"eval {task}{label}: " + ", ".join(
                f"{m}={v:.4f}" + (f" ± {ms[m + '_stderr']:.4f}" if isinstance(ms.get(m + "_stderr"), float) else "")
                for m, v in ms.items() if m != "subtasks" and not m.endswith("stderr"))
                + (f" ({len(subs)} subtasks in results.json)" if subs else ""))
    for name, s in r["stages"].items():
        state = "cached" if s["cached"] else "computed"
        if s.get("complete") is False:
            state += f", incomplete: {s['missing_chunks']} chunks left to other shards"
        label = f"{name} ({s.get('built', 'tiny')})" if name in ("model", "selector") else name  # a model built here
        lines.append(f"stage {label:<15} {s['seconds']:8.1f}s  {state}")
    w = r.get("wandb", {})
    if w.get("skipped"):
        lines.append(f"wandb: not logged again: this job configuration's run {w.get('id')} finished earlier "
                     f"({w['skipped'].get('url') or w['skipped'].get('dir')})")
    else:
        lines.append(f"wandb: {w.get('mode')} run {w.get('id')} at {w.get('dir')}" if w.get("mode") else "wandb: off")
    if w.get("fallback"):
        lines.append(f"wandb: {w.get('requested_mode')} was asked for but {w['fallback']}; upload with: wandb sync {w['dir']}")
    lines += [f"warning: {x}" for x in r.get("warnings", [])]
    lines.append(f"results: {path}")
    return "\n".join(lines)

"""results.json, the run summary and the compute accounting: plain data, no torch (``analysis``
imports this module).

Which stage reports, accounts or costs what is the stage's declaration (less.graph.Stage); this
module only assembles. Costs follow the usual dense-transformer rules with N = the base model's
parameters: training (warmup, target training) ~ 6 N per token per epoch; feature extraction ~ 4 N
per token per checkpoint (forward + backward to the LoRA weights); evaluation is not estimated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Cost:
    """A stage's compute, ~ ``factor`` x N x ``tokens`` x ``times`` FLOPs, N the parameter count of
    the stage named ``params`` (None where a factor is unknown)."""

    params: str
    factor: int
    tokens: int | None
    times: int

    def flops(self, params: dict[str, int | None]) -> float | None:
        xs = (self.factor, params.get(self.params), self.tokens, self.times)
        return None if any(x is None for x in xs) else float(math.prod(xs))


def estimate(costs: dict[str, Cost | None], params: dict[str, int | None]) -> dict[str, Any]:
    """Estimated FLOPs per stage (None where a factor is unknown) and H100-hours for their sum."""
    flops = {name: c.flops(params) if c is not None else None for name, c in costs.items()}
    known = [v for v in flops.values() if v is not None]
    total = sum(known) if known else None
    return {"flops": flops, "flops_total": total,
            "gpu_hours_h100_at_40pct_mfu": total / (PEAK_FLOPS * MFU) / 3600 if total is not None else None}


def accounting(seconds: dict[str, float], parts: list[dict[str, Any]], params: dict[str, int | None],
               costs: dict[str, Cost | None]) -> dict[str, Any]:
    """Tokens, epochs, parameters, estimated FLOPs and wall time of a run, from its stages' parts
    (their records: tokens, epochs), parameter counts and costs."""
    acc: dict[str, Any] = {"seconds": seconds, "tokens": {}, "epochs": {}}
    for part in parts:
        merge(acc, part)
    return {**acc, "params": params, **estimate(costs, params)}


def summary(r: dict[str, Any], path: Path, stage_lines: list[str]) -> str:
    """The short human summary printed at the end of every run: the stages' own lines, then each
    step's time, W&B, warnings and where results.json is."""
    lines = ["", "== LESS run summary ==", *stage_lines]
    for name, s in r["stages"].items():
        state = "cached" if s["cached"] else "computed"
        if s.get("complete") is False:
            state += f", incomplete: {s['missing_chunks']} chunks left to other shards"
        label = f"{name} ({s['built']})" if s.get("built") else name  # a step-less stage built here: its kind
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

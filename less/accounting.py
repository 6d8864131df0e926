"""Compute accounting: tokens, epochs, repeated tokens and estimated FLOPs per stage.

Estimates use the usual dense-transformer rules with N = the base model's parameters: training
(warmup, target training) ~ 6 N per token per epoch; feature extraction ~ 4 N per token per
checkpoint (forward + backward to the LoRA weights); evaluation is not estimated.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

PEAK_FLOPS = 989e12  # H100 SXM dense bf16
MFU = 0.4           # assumed utilisation for the GPU-hour estimate


@lru_cache(maxsize=16)
def param_count(path: str, trust_remote_code: bool = False) -> int | None:
    """Parameters of a model, counted on the meta device from its config (no weights loaded)."""
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
        return sum(p.numel() for p in model.parameters())
    except Exception:  # offline hub id, gated model: unknown, reported as null
        return None


def estimate(n_selector: int | None, n_model: int | None, warmup_tokens: int | None, warmup_epochs: int,
             feature_tokens: int | None, n_checkpoints: int, train_tokens: int | None, train_epochs: int
             ) -> dict[str, Any]:
    def mul(*xs):
        return None if any(x is None for x in xs) else float(__import__("math").prod(xs))

    flops = {"warmup": mul(6, n_selector, warmup_tokens, warmup_epochs),
             "datastore": mul(4, n_selector, feature_tokens, n_checkpoints),
             "train": mul(6, n_model, train_tokens, train_epochs)}
    known = [v for v in flops.values() if v is not None]
    total = sum(known) if known else None
    return {"flops": flops, "flops_total": total,
            "gpu_hours_h100_at_40pct_mfu": total / (PEAK_FLOPS * MFU) / 3600 if total is not None else None}

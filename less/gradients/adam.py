"""The Adam direction used for pool features, and the warmup checkpoints' Adam moments.

Gamma(g) = (b1*m + (1-b1)*g) / sqrt(b2*v + (1-b2)*g^2 + eps): the next Adam update direction from
the checkpoint's moments m, v, with eps inside the square root and no bias correction (REFERENCE
section 1).
"""

from __future__ import annotations

from pathlib import Path

import torch

from less.errors import DataError


def adam_direction(g: torch.Tensor, m: torch.Tensor, v: torch.Tensor,
                   beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> torch.Tensor:
    return (beta1 * m + (1 - beta1) * g) / torch.sqrt(beta2 * v + (1 - beta2) * g * g + eps)


def load_moments(ckpt: Path, optimizer_param_names: list[str],
                 expected: dict[str, tuple[int, ...]]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Read ``optimizer.pt`` of a checkpoint and return {parameter name: (exp_avg, exp_avg_sq)}.

    Accepts both layouts: state keyed by integer index (plain Trainer; mapped to names through the
    optimizer's parameter order recorded at save time) and state keyed by name (FSDP-style).
    Every expected parameter must be present with the expected shape.
    """
    path = Path(ckpt) / "optimizer.pt"
    if not path.is_file():
        raise DataError(f"{path}: optimizer state missing from warmup checkpoint")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    state = sd["state"]
    if state and all(isinstance(k, str) for k in state):
        by_name = state
    else:
        order = [i for g in sd["param_groups"] for i in g["params"]]
        if len(order) != len(optimizer_param_names):
            raise DataError(f"{path}: optimizer has {len(order)} parameters, checkpoint metadata names "
                            f"{len(optimizer_param_names)}")
        by_name = {optimizer_param_names[pos]: state[idx] for pos, idx in enumerate(order) if idx in state}
    out = {}
    for name, shape in expected.items():
        if name not in by_name:
            raise DataError(f"{path}: no Adam moments for parameter {name}")
        m, v = by_name[name]["exp_avg"], by_name[name]["exp_avg_sq"]
        if tuple(m.shape) != tuple(shape) or tuple(v.shape) != tuple(shape):
            raise DataError(f"{path}: moments of {name} have shape {tuple(m.shape)}, expected {shape}")
        out[name] = (m.float(), v.float())
    return out

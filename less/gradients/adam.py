"""The Adam direction used for pool features, and the warmup checkpoints' Adam moments.

Gamma(g) = (b1*m + (1-b1)*g) / sqrt(b2*v + (1-b2)*g^2 + eps): the next Adam update direction from
the checkpoint's moments m, v, with eps inside the square root and no bias correction (REFERENCE
section 1). ``gradient_type=precond`` (TrackStar) takes g / sqrt(v + eps) on both sides instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from less.errors import DataError

OPTIMIZER_FILES = ("optimizer.pt", "optimizer.bin")
SHARDED_OPTIMIZER = "optimizer_0"  # FSDP's SHARDED_STATE_DICT: a torch.distributed.checkpoint directory


def read_optimizer_state(ckpt: Path) -> tuple[dict, Path]:
    """A checkpoint's optimizer state dict and the file or directory it came from: ``optimizer.pt``
    (Trainer), ``optimizer.bin`` (accelerate; FSDP's FULL_STATE_DICT, name-keyed) or
    ``optimizer_0/`` (FSDP's SHARDED_STATE_DICT: a torch.distributed.checkpoint directory written by
    every rank, read back whole here without a process group)."""
    ckpt = Path(ckpt)
    path = next((ckpt / f for f in OPTIMIZER_FILES if (ckpt / f).is_file()), None)
    if path is not None:
        return torch.load(path, map_location="cpu", weights_only=True), path
    sharded = ckpt / SHARDED_OPTIMIZER
    if (sharded / ".metadata").is_file():
        import tempfile

        from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

        with tempfile.TemporaryDirectory() as tmp:
            dcp_to_torch_save(sharded, Path(tmp) / "optimizer.pt")
            sd = torch.load(Path(tmp) / "optimizer.pt", map_location="cpu", weights_only=True)
        if "optimizer" not in sd:
            raise DataError(f"{sharded}: a distributed checkpoint without an 'optimizer' entry")
        return sd["optimizer"], sharded
    per_rank = sorted(ckpt.glob("optimizer_0_rank*.bin"))
    if per_rank:
        raise DataError(f"{per_rank[0]}: per-rank FSDP optimizer files (accelerate's use_dcp=False) cannot be "
                        "merged; save warmup checkpoints with fsdp_config.state_dict_type FULL_STATE_DICT")
    raise DataError(f"{ckpt}: optimizer state missing from warmup checkpoint "
                    f"(looked for {', '.join(OPTIMIZER_FILES)}, {SHARDED_OPTIMIZER}/)")


def adam_direction(g: torch.Tensor, m: torch.Tensor, v: torch.Tensor,
                   beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> torch.Tensor:
    return (beta1 * m + (1 - beta1) * g) / torch.sqrt(beta2 * v + (1 - beta2) * g * g + eps)


def mapping_terms(g: torch.Tensor, m: torch.Tensor | None, v: torch.Tensor | None, mapping: str = "adam",
                  betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
                  ) -> tuple[torch.Tensor | float, torch.Tensor | None]:
    """The feature map at gradient ``g`` as ``offset + scale * g`` with its denominator held at ``g``:
    Adam's direction has scale (1 - b1) / D(g) and offset b1 m / D(g), D(g) = sqrt(b2 v + (1 - b2) g^2
    + eps) (the same value as :func:`adam_direction` up to rounding); ``precond`` has scale
    1 / sqrt(v + eps) and no offset; no moments (``sgd``): scale 1, no offset. Linear in g for a fixed
    denominator, so a sum of gradients (an example's tokens) maps term by term (less.explain)."""
    if m is None or v is None:
        return 1.0, None
    if mapping == "precond":
        return 1 / torch.sqrt(v + eps), None
    b1, b2 = betas
    denom = torch.sqrt(b2 * v + (1 - b2) * g * g + eps)
    return (1 - b1) / denom, b1 * m / denom


def second_moment_preconditioned(g: torch.Tensor, v: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """g / sqrt(v + eps): the gradient scaled by the checkpoint's Adam second moment, the same for
    pool and target (TrackStar's optimizer correction; eps inside the root as in ``adam_direction``,
    no bias correction)."""
    return g / torch.sqrt(v + eps)


@dataclass
class Moments:
    by_name: dict[str, tuple[torch.Tensor, torch.Tensor]]
    betas: tuple[float, float] | None  # from the saved param groups, when present
    eps: float | None
    path: Path


def load_moments(ckpt: Path, optimizer_param_names: list[str] | None,
                 expected: dict[str, tuple[int, ...]]) -> Moments:
    """Read a checkpoint's optimizer state and return the moments of every expected parameter.

    Layouts (``read_optimizer_state``): ``optimizer.pt`` (transformers Trainer), ``optimizer.bin``
    (accelerate / FSDP full state dict, the reference LESS warmup) or ``optimizer_0/`` (FSDP
    sharded state dict), with state keyed by integer index or by parameter name. Integer
    indices are mapped to names through ``optimizer_param_names`` (the order recorded at save
    time) or, when that is None, the trainable-parameter order of ``expected``. Every expected
    parameter must be present with the expected shape.
    """
    sd, path = read_optimizer_state(ckpt)
    if "state" not in sd:
        raise DataError(f"{path}: not an optimizer state dict (no 'state')")
    state, groups = sd["state"], sd.get("param_groups", [])
    if state and all(isinstance(k, str) for k in state):
        by_name = state
    else:
        names = optimizer_param_names if optimizer_param_names is not None else list(expected)
        order = [i for g in groups for i in g["params"]] if groups else sorted(state)
        if len(order) != len(names):
            raise DataError(f"{path}: optimizer has {len(order)} parameters, the model has {len(names)} "
                            "trainable ones")
        by_name = {names[pos]: state[idx] for pos, idx in enumerate(order) if idx in state}
    out = {}
    for name, shape in expected.items():
        if name not in by_name:
            raise DataError(f"{path}: no Adam moments for parameter {name}")
        m, v = by_name[name]["exp_avg"], by_name[name]["exp_avg_sq"]
        if tuple(m.shape) != tuple(shape) or tuple(v.shape) != tuple(shape):
            if m.numel() == v.numel() == torch.Size(shape).numel() and m.dim() == 1:  # FSDP flattened
                m, v = m.view(shape), v.view(shape)
            else:
                raise DataError(f"{path}: moments of {name} have shape {tuple(m.shape)}, expected {tuple(shape)}")
        out[name] = (m.float(), v.float())
    g0 = groups[0] if groups else {}
    betas = tuple(float(b) for b in g0["betas"]) if "betas" in g0 else None
    eps = float(g0["eps"]) if "eps" in g0 else None
    return Moments(out, betas, eps, path)

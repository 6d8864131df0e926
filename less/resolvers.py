"""Config resolvers: ``${gpu:}``, the GPU of a sweep job (docs/multi-gpu.md)."""

from __future__ import annotations


def _gpu() -> str:
    """``${gpu:}``: the GPU of this Hydra job, ``cuda:<hydra.job.num mod the GPUs visible here>``, so
    the jobs of a joblib sweep on one node take its GPUs in turn (a single run: ``cuda:0``)."""
    import torch
    from hydra.core.hydra_config import HydraConfig

    n = torch.cuda.device_count()
    if n == 0:
        raise ValueError("${gpu:}: no CUDA device is visible here; use device=cpu")
    num = HydraConfig.get().job.get("num") if HydraConfig.initialized() else None
    return f"cuda:{int(num or 0) % n}"


def register() -> None:
    """Register this project's resolvers (idempotent); less.cli and less.api do on import, so run.py,
    the Python API and a sweep's worker processes (which import less.cli) all have them."""
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("gpu", _gpu, replace=True)


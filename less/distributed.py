"""Several processes of one job: ``torchrun``, ``accelerate launch`` or SLURM tasks (submitit).

The launcher starts one process per device and tells each its place through the environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``; under SLURM ``SLURM_PROCID``, ``SLURM_NTASKS``,
``SLURM_LOCALID``, exported as the former by submitit's helper). Every process walks the same
stage graph (less.runner); what each does at a stage:

- ``main`` stages (prepare, the tiny model, selection, evaluation, the target features): rank 0
  builds, the others wait for it (``share``) and then read the artifact from the cache;
- ``all`` stages (warmup and target training): every rank runs the Trainer (DDP, or FSDP/DeepSpeed
  when configured) into the same temporary directory, renamed by rank 0 once all are done;
- ``split`` stages (pool gradient features): each rank computes its own contiguous run of chunks on
  its own device; rank 0 assembles the artifact once all are on disk.

Ranks wait for each other through a gloo process group of their own (on CPU and GPU alike, so a
long wait for rank 0 never trips the NCCL watchdog) with ``distributed.timeout_minutes``; the
Trainer's collectives use the default group (NCCL on GPUs, gloo on CPU; 30 minutes at most). One process is rank 0 of 1 and
every call here is free.
"""

from __future__ import annotations

import datetime
import logging
import os
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

_group = None  # the gloo group used for our own waits (None: one process, or not started)


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    return int(v) if v else default


def world() -> int:
    """How many processes this job has (1 without a launcher)."""
    return _env_int("WORLD_SIZE", default=1)


def rank() -> int:
    return _env_int("RANK", default=0)


def local_rank() -> int:
    """This process's index on its node: its GPU (``cuda:<local_rank>``)."""
    return _env_int("LOCAL_RANK", default=0)


def is_main() -> bool:
    return rank() == 0


def from_slurm() -> bool:
    """In a task of a submitit SLURM job with several tasks (``hydra/launcher=slurm
    hydra.launcher.tasks_per_node=8``) and no launcher variables: export them from SLURM's with
    submitit's helper (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).
    Returns whether it did. (Under a plain ``srun``, start torchrun in each node's task instead.)"""
    if ("RANK" in os.environ or os.environ.get("SUBMITIT_EXECUTOR") != "slurm"
            or _env_int("SLURM_NTASKS", default=1) <= 1):
        return False
    from submitit.helpers import TorchDistributedEnvironment

    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return True


def start(timeout_minutes: float, cuda: bool) -> None:
    """Join the job's process group (no-op for one process or when already joined): the default
    group with NCCL for CUDA devices, gloo on CPU (the Trainer's DDP uses it), plus a gloo group
    for ``share``/``barrier``."""
    global _group
    if world() <= 1 or _group is not None:
        return
    import torch
    import torch.distributed as dist

    timeout = datetime.timedelta(minutes=float(timeout_minutes))
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(local_rank())
        # the Trainer's collectives: a rank that died mid-step is noticed after the Trainer's own
        # default (30 min), not after the long waits for rank 0 below
        dist.init_process_group("nccl" if cuda else "gloo", timeout=min(timeout, datetime.timedelta(minutes=30)))
    _group = dist.new_group(backend="gloo", timeout=timeout)


def started() -> bool:
    return _group is not None


def share(obj: T) -> T:
    """Rank 0's ``obj`` on every rank; every rank waits here until rank 0 arrives."""
    if _group is None:
        return obj
    import torch.distributed as dist

    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0, group=_group)
    return box[0]


def barrier() -> None:
    """Wait until every rank arrives."""
    if _group is not None:
        import torch.distributed as dist

        dist.barrier(group=_group)


def gather(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if _group is None:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world()
    dist.all_gather_object(out, obj, group=_group)
    return out


def subshard(shard: int, num_shards: int) -> tuple[int, int]:
    """This rank's part of a datastore shard: shard ``shard`` of ``num_shards`` jobs, each of
    ``world()`` ranks, is shard ``shard * world + rank`` of ``num_shards * world`` (chunks are
    contiguous runs, so the ranks of one job cover exactly that job's chunks)."""
    return shard * world() + rank(), num_shards * world()


def close() -> None:
    """Leave the process group (end of the job)."""
    global _group
    if _group is None:
        return
    import torch.distributed as dist

    _group = None
    if dist.is_initialized():
        dist.destroy_process_group()


"""A LoRA warmup step under FSDP2 on CPU (gloo), saved the way accelerate saves FSDP optimizer state
(``less.gradients.adam`` must read both layouts), next to the same steps in one process.

    torchrun --standalone --nproc_per_node=2 -m tests.fsdp_save <model dir> <out dir>

writes ``<out>/full/optimizer.bin`` (FULL_STATE_DICT: rank 0 saves the gathered, name-keyed state),
``<out>/sharded/optimizer_0/`` (SHARDED_STATE_DICT: every rank writes its shard with
torch.distributed.checkpoint) and, from rank 0 alone, ``<out>/single/optimizer.pt`` (one process on
the ranks' batches together: the moments FSDP must reproduce) with ``names.json``, the optimizer's
parameter order.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

STEPS, BATCH, SEQ = 2, 2, 12


def lora_model(model_dir: str):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)  # every rank (and the one-process reference) starts from the same weights
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return get_peft_model(base, LoraConfig(r=4, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))


def batch(rank: int, step: int, vocab: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randint(3, vocab, (BATCH, SEQ), generator=g)


def loss_of(model, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids, labels=ids).loss


def main(model_dir: str, out: Path) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    model = lora_model(model_dir)
    vocab = model.config.vocab_size
    for layer in model.base_model.model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(STEPS):
        opt.zero_grad()
        loss_of(model, batch(rank, step, vocab)).backward()  # FSDP averages the ranks' gradients
        opt.step()
    full = get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank == 0:
        (out / "full").mkdir(parents=True, exist_ok=True)
        torch.save(full, out / "full" / "optimizer.bin")
    dcp.save({"optimizer": get_optimizer_state_dict(model, opt)}, checkpoint_id=str(out / "sharded" / "optimizer_0"))
    dist.barrier()
    if rank == 0:  # the same steps in one process: the mean of the ranks' losses
        ref = lora_model(model_dir)
        params = [(n, p) for n, p in ref.named_parameters() if p.requires_grad]
        ropt = torch.optim.AdamW([p for _, p in params], lr=1e-2)
        for step in range(STEPS):
            ropt.zero_grad()
            (sum(loss_of(ref, batch(r, step, vocab)) for r in range(world)) / world).backward()
            ropt.step()
        (out / "single").mkdir(parents=True, exist_ok=True)
        torch.save(ropt.state_dict(), out / "single" / "optimizer.pt")
        (out / "single" / "names.json").write_text(json.dumps([n for n, _ in params]))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))

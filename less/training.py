"""LoRA (or full) fine-tuning with transformers' Trainer, shared by warmup and target training.

Warmup keeps one checkpoint per epoch. Beside each HF checkpoint (adapter weights, ``optimizer.pt``
keyed by integer index, scheduler state) this module writes ``less_checkpoint.json``: the epoch,
that epoch's average learning rate, and the names of the parameters in the optimizer's index order,
so the Adam moments can be matched to parameters by name whatever the optimizer's grouping.

Every ``logging_steps`` optimizer steps the Trainer's logs (loss, learning rate, grad norm) are kept
as the run's training curve (``history`` of the result, stored in the artifact) and handed to a
``curve(step, metrics)`` callback (the runner sends them to W&B under the stage's prefix, against
the stage's own step axis). The progress bar is labelled with the stage.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig
from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import ProgressCallback

from less import distributed
from less.cache import write_json_atomic
from less.checkpoints import CHECKPOINT_META
from less.data.formats import IGNORE_INDEX, Encoded
from less.errors import ConfigError
from less.gradients.per_example import per_example_loss

log = logging.getLogger(__name__)


class EncodedDataset(torch.utils.data.Dataset):
    def __init__(self, enc: Encoded):
        self.enc = enc

    def __len__(self) -> int:
        return len(self.enc)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.enc.item(i)


class EpochLearningRates(TrainerCallback):
    """Records the learning rate of every optimizer step and writes per-epoch metadata on save."""

    def __init__(self) -> None:
        self.step_lrs: list[float] = []
        self.epoch_lrs: list[float] = []
        self._epoch_start = 0

    def on_optimizer_step(self, args, state, control, optimizer=None, **kw):
        self.step_lrs.append(float(optimizer.param_groups[0]["lr"]))

    def on_epoch_end(self, args, state, control, **kw):
        lrs = self.step_lrs[self._epoch_start:]
        self.epoch_lrs.append(sum(lrs) / len(lrs) if lrs else 0.0)
        self._epoch_start = len(self.step_lrs)

    def on_save(self, args, state, control, model=None, optimizer=None, **kw):
        if not state.is_world_process_zero:  # one writer; the checkpoint directory is rank 0's to make
            return
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        names = {id(p): n for n, p in model.named_parameters()}
        order = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
        write_json_atomic(ckpt / CHECKPOINT_META, {
            "epoch": len(self.epoch_lrs), "step": state.global_step,
            "avg_lr": self.epoch_lrs[-1] if self.epoch_lrs else None,
            "optimizer_param_names": order,
            "betas": list(optimizer.param_groups[0].get("betas", (0.9, 0.999))),
        })


CURVE_KEYS = {"loss": "loss", "learning_rate": "lr", "grad_norm": "grad_norm", "epoch": "epoch"}


class Curve(TrainerCallback):
    """The training curve: at every Trainer log with a loss, ``{"step", "loss", "lr", "grad_norm",
    "epoch"}`` (the keys present) is kept in ``history`` and passed to ``sink(step, metrics)``."""

    def __init__(self, sink: Callable[[int, dict[str, float]], None] | None = None) -> None:
        self.sink = sink
        self.history: list[dict[str, float]] = []

    def on_log(self, args, state, control, logs=None, **kw):
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return  # the end-of-training record (train_runtime, train_loss) is not a curve point
        point = {"step": int(state.global_step), **{
            name: float(logs[k]) for k, name in CURVE_KEYS.items() if logs.get(k) is not None}}
        self.history.append(point)
        if self.sink is not None:
            self.sink(point["step"], {k: v for k, v in point.items() if k != "step"})


class StageProgress(ProgressCallback):
    """transformers' progress bar, labelled with the stage it belongs to (``warmup``, ``train``)."""

    def __init__(self, desc: str) -> None:
        super().__init__()
        self.desc = desc

    def on_train_begin(self, args, state, control, **kw):
        super().on_train_begin(args, state, control, **kw)
        if self.training_bar is not None:
            self.training_bar.set_description(self.desc)


class ExampleMeanTrainer(Trainer):
    """Loss = mean over examples of each example's token-mean loss.

    This is the paper's recipe (batch size 1 per device with gradient accumulation, where every
    example weighs the same whatever its length). transformers 5's Trainer instead averages over all
    tokens of the accumulated batch, which weighs long examples more (``loss: token_mean``).
    """

    loss_is_scaled_for_ga = False  # Trainer divides by the accumulation steps; DDP averages ranks

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = per_example_loss(outputs.logits, labels).mean()
        return (loss, outputs) if return_outputs else loss


TRAINERS = {"example_mean": ExampleMeanTrainer, "token_mean": Trainer}


def collator(tokenizer):
    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX,
                                  return_tensors="pt")


def accumulation_steps(cfg: DictConfig) -> int:
    """Steps per update so that per-device batch x steps x processes = the effective batch size."""
    world = distributed.world()
    per_update = cfg.per_device_batch_size * world
    if cfg.batch_size % per_update:
        raise ConfigError(f"batch_size {cfg.batch_size} is not a multiple of per_device_batch_size "
                          f"{cfg.per_device_batch_size} x {world} processes")
    return cfg.batch_size // per_update


def sharding(cfg: DictConfig) -> dict[str, Any]:
    """The Trainer's sharding arguments from a warmup/train config: ``fsdp`` (bool) with
    ``fsdp_config`` (a dict, transformers' keys), or ``deepspeed`` (a JSON file or a dict). Plain
    data, passed through; both need several processes (torchrun) on GPUs."""
    from omegaconf import OmegaConf

    out: dict[str, Any] = {}
    if cfg.get("fsdp"):
        out["fsdp"] = True
        out["fsdp_config"] = OmegaConf.to_container(cfg.fsdp_config, resolve=True) if cfg.get("fsdp_config") else {}
    if cfg.get("deepspeed"):
        ds = cfg.deepspeed
        out["deepspeed"] = OmegaConf.to_container(ds, resolve=True) if not isinstance(ds, str) else str(Path(ds).expanduser())
    return out


def fit(model, tokenizer, enc: Encoded, cfg: DictConfig, out_dir: Path, seed: int,
        save_every_epoch: bool, device: torch.device, stage: str = "train",
        curve: Callable[[int, dict[str, float]], None] | None = None,
        save_to: Path | None = None) -> dict[str, Any]:
    """Train ``model`` on ``enc`` with Trainer; returns the mean train loss, the steps, per-epoch
    LRs, the logged curve (``history``) and its last loss (``final_loss``). ``stage`` labels the
    progress bar; ``curve(step, metrics)`` gets every curve point as it is logged; ``save_to``:
    where the trained model (or adapter) is saved, by the Trainer (under FSDP every rank takes part).

    Under torchrun every rank calls this with the same ``out_dir``: the Trainer runs DDP (or
    FSDP/DeepSpeed, ``sharding``), rank 0 writes the checkpoints."""
    lrs = EpochLearningRates()
    points = Curve(curve)
    args = TrainingArguments(
        output_dir=str(out_dir),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=accumulation_steps(cfg),
        learning_rate=cfg.lr,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=float(cfg.warmup_ratio),  # transformers 5: a value below 1 is a ratio
        weight_decay=cfg.weight_decay,
        bf16=bool(cfg.bf16),
        optim=cfg.get("optim") or "adamw_torch",
        gradient_checkpointing=bool(cfg.gradient_checkpointing),
        save_strategy="epoch" if save_every_epoch else "no",
        save_only_model=False,
        logging_steps=max(1, cfg.get("logging_steps", 10)),
        logging_first_step=True,  # the curve starts at step 1
        report_to=[],
        seed=seed,
        data_seed=seed,
        remove_unused_columns=False,
        use_cpu=device.type == "cpu",
        disable_tqdm=False,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # every trainable parameter (LoRA or all) gets a gradient
        # several processes: accelerate pads the epoch's last micro-batches with examples from its start
        # unless they split evenly over the ranks; then none, and each update sees the same examples
        # (same weights) as in one process
        accelerator_config={"even_batches": -(-len(enc) // cfg.per_device_batch_size) % distributed.world() != 0},
        **sharding(cfg),
    )
    trainer = TRAINERS[cfg.loss](model=model, args=args, train_dataset=EncodedDataset(enc),
                      data_collator=collator(tokenizer), callbacks=[lrs, points])
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(StageProgress(stage))
    result = trainer.train()
    if save_to is not None:
        trainer.save_model(str(save_to))
    # A pickle of TrainingArguments naming the temporary build directory: its bytes would depend on
    # where the artifact was built, and loading it needs weights_only=False. key.json has the config.
    if trainer.is_world_process_zero():
        for f in [*Path(out_dir).rglob("training_args.bin"), *(Path(save_to).rglob("training_args.bin") if save_to else [])]:
            f.unlink(missing_ok=True)
    return {"train_loss": result.training_loss, "steps": result.global_step, "epoch_lrs": lrs.epoch_lrs,
            "history": points.history, "final_loss": points.history[-1]["loss"] if points.history else None}

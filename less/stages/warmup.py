"""The ``warmup`` step: LoRA training of the selector on a random ``warmup.fraction`` of the pool,
one checkpoint per epoch (adapter, AdamW moments, the epoch's average learning rate). Also the
checkpoints features can come from instead: a fresh LoRA (the no-warmup ablation) or an external
run (``datastore.warmup_dir``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
from omegaconf import DictConfig

from less import distributed
from less.cache import Artifact, to_plain, write_json_atomic
from less.checkpoints import CHECKPOINT_META
from less.data.formats import encode_examples, read_examples, write_jsonl
from less.errors import ConfigError, DataError, require
from less.graph import Context, Inputs, Stage
from less.models import DTYPES as MODEL_DTYPES
from less.models import load_model, load_tokenizer, lora_config, model_spec
from less.results import Cost
from less.stages.model import source
from less.stages.token_counts import pool_tokens_estimate


# How training is spread over devices, not what it computes (beyond float rounding, like the number
# of processes): left out of the warmup and train artifacts' keys.
SHARDING_KEYS = ("fsdp", "fsdp_config", "deepspeed")


def training_spec(cfg: DictConfig) -> dict[str, Any]:
    """A warmup/train config as its artifact's key sees it (without ``SHARDING_KEYS``)."""
    return {k: v for k, v in to_plain(cfg).items() if k not in SHARDING_KEYS}


def needs_gradients(ctx: Context) -> bool:
    return ctx.method.needs == "gradients"


def warmup_indices(n_pool: int, fraction: float, seed: int) -> list[int]:
    """The reference's ``load_raw_dataset``: the first ``int(n_pool * fraction)`` (at least one) of
    a legacy-NumPy permutation seeded with ``seed`` (its ``sample_data_seed``, 42), in that order."""
    n = max(1, int(fraction * n_pool))
    return np.random.RandomState(seed).permutation(n_pool)[:n].tolist()


def needs_warmup(ctx: Context) -> bool:
    """The warmup run is made for the gradient features (unless they come from a fresh LoRA or an
    external run), for representations taken with its last checkpoint (rds/kcenter ``model: warmup``)
    and for EK-FAC's factors and scores (its last checkpoint's LoRA)."""
    from less.stages import influence, representations

    ds = ctx.cfg.datastore
    return ((needs_gradients(ctx) and ds.use_warmup and not ds.warmup_dir) or representations.uses_warmup(ctx)
            or influence.uses_warmup(ctx))


def build_warmup(ctx: Context, inputs: Inputs, out: Path) -> None:
    from peft import get_peft_model

    from less.training import fit

    cfg, w = ctx.cfg, ctx.cfg.warmup
    pool = read_examples(inputs["pool"].dir / "pool.jsonl")
    subset = [pool[i] for i in warmup_indices(len(pool), w.fraction, w.sample_seed)]
    n = len(subset)
    src = source(ctx, inputs, "selector")
    tok = load_tokenizer(ctx.selector, src)
    enc = encode_examples(subset, tok, w.max_length, chat_format=cfg.chat_format)
    if not len(enc):
        raise DataError(f"warmup subset of {n} examples has no trainable example ({dict(enc.dropped)})")
    model = get_peft_model(load_model(ctx.selector, src, ctx.device, dtype=w.dtype), lora_config(w.lora))
    metrics = fit(model, tok, enc, w, out / "trainer", cfg.seed, save_every_epoch=True, device=ctx.device,
                  stage="warmup", curve=ctx.curve("warmup"))
    if not distributed.is_main():  # the other ranks of a torchrun job trained with it; rank 0 writes the rest
        return
    ckpts = sorted((out / "trainer").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    if len(ckpts) != w.epochs:
        raise RuntimeError(f"warmup wrote {len(ckpts)} checkpoints for {w.epochs} epochs")
    entries = []
    for c in ckpts:
        meta = json.loads((c / CHECKPOINT_META).read_text())
        entries.append({"epoch": meta["epoch"], "step": meta["step"], "avg_lr": meta["avg_lr"],
                        "dir": str(c.relative_to(out))})
    write_jsonl(out / "warmup_ids.jsonl", [{"id": i} for i in enc.ids])
    write_json_atomic(out / "warmup.json", {"n_examples": len(enc), "n_tokens": sum(map(len, enc.input_ids)),
                                            "epochs": w.epochs, "dropped": dict(enc.dropped),
                                            "checkpoints": entries, "train_loss": metrics["train_loss"],
                                            "final_loss": metrics["final_loss"], "steps": metrics["steps"],
                                            "history": metrics["history"]})


def build_init_adapter(ctx: Context, inputs: Inputs, out: Path) -> None:
    """The no-warmup ablation: a freshly initialised LoRA (B = 0, so only B has gradients) saved as
    the single checkpoint 0 with weight 1; there is no optimizer state, so features are SGD."""
    import torch
    from peft import get_peft_model

    base = load_model(ctx.selector, source(ctx, inputs, "selector"), torch.device("cpu"))
    get_peft_model(base, lora_config(ctx.cfg.warmup.lora)).save_pretrained(out / "checkpoint-0")
    write_json_atomic(out / "warmup.json", {"n_examples": 0, "checkpoints": [
        {"epoch": 0, "step": 0, "avg_lr": 1.0, "dir": "checkpoint-0"}]})


def _report(ctx: Context, art) -> dict[str, Any]:
    w = json.loads((art.dir / "warmup.json").read_text())
    return {"warmup": {"n_examples": w["n_examples"], "train_loss": w["train_loss"], "final_loss": w["final_loss"],
                       "steps": w["steps"],
                       "checkpoints": [{"epoch": c["epoch"], "avg_lr": c["avg_lr"]} for c in w["checkpoints"]]}}


def _record(art: Artifact | None, record: str) -> dict[str, Any]:
    path = art.dir / record if art is not None else None
    return json.loads(path.read_text()) if path is not None and path.is_file() else {}


def training_accounting(name: str, record: str):
    """A training stage's ``accounting``: the tokens of its examples, trained (x epochs) and
    repeated (x epochs - 1), and its epochs (None when the run did not get it)."""
    def accounting(ctx: Context, art: Artifact | None) -> dict[str, Any]:
        rec = _record(art, record)
        n = rec.get("n_tokens")
        tokens = {} if n is None else {f"{name}_examples": n, f"{name}_trained": n * rec["epochs"],
                                       f"{name}_repeated": n * (rec["epochs"] - 1)}
        return {"tokens": tokens, "epochs": {name: rec.get("epochs")}}
    return accounting


def training_cost(model: str, record: str, cfg: Callable[[Context], DictConfig], share: Callable[[Context], float]):
    """A training stage's ``cost``: 6 N per token per epoch of ``model``; before it is built, on
    ``share`` of the pool's estimated tokens for ``cfg(ctx).epochs``."""
    def cost(ctx: Context, art: Artifact | None) -> Cost:
        if art is None:
            n = pool_tokens_estimate(ctx)
            return Cost(model, 6, n and int(n * share(ctx)), cfg(ctx).epochs)
        rec = _record(art, record)
        return Cost(model, 6, rec.get("n_tokens"), rec.get("epochs") or 0)
    return cost


def training_summary(name: str):
    """A training stage's summary line, from its report."""
    def summary(r: dict[str, Any]) -> list[str]:
        t = r.get(name)
        if not t or t.get("train_loss") is None:
            return []
        final = f", final logged loss {t['final_loss']:.4f}" if t.get("final_loss") is not None else ""
        return [f"{name}: {t.get('n_examples')} examples, {t.get('steps')} steps, "
                f"mean train loss {t['train_loss']:.4f}{final}"]
    return summary


def track_curve(prefix: str, record: str):
    """A stage's ``track``: its training curve to W&B (``<prefix>/loss`` ... against
    ``<prefix>/step``) when the artifact came from the cache; a build in this run sent it live."""
    def track(ctx: Context, art, reported: dict[str, Any], tracker) -> None:
        if art.cached:
            for point in json.loads((art.dir / record).read_text()).get("history", []):
                tracker.curve(prefix, point["step"], {k: v for k, v in point.items() if k != "step"})
    return track


def _check_deepspeed(name: str, ds_cfg) -> None:
    """A DeepSpeed config the pipeline can use: for target training only (the datastore needs the
    warmup's Adam moments per parameter, which ZeRO keeps flattened), and under ZeRO-3 with the
    16-bit weights gathered at save (else the trained model is saved empty)."""
    from omegaconf import OmegaConf

    require(name == "train", "warmup.deepspeed: not supported (the datastore reads the warmup's Adam moments per "
                             "parameter; ZeRO keeps them flattened): use warmup.fsdp")
    if isinstance(ds_cfg, str):
        path = Path(ds_cfg).expanduser()
        require(path.is_file(), f"train.deepspeed={ds_cfg}: no such file")
        try:
            conf = json.loads(path.read_text())
        except ValueError as e:
            raise ConfigError(f"{path}: not valid JSON ({e}) (set by train.deepspeed)") from None
    else:
        conf = OmegaConf.to_container(ds_cfg, resolve=True)
    zero = conf.get("zero_optimization") or {}
    require(zero.get("stage") != 3 or zero.get("stage3_gather_16bit_weights_on_model_save") is True,
            "train.deepspeed: ZeRO stage 3 needs zero_optimization.stage3_gather_16bit_weights_on_model_save: true "
            "(else the trained model is saved without its weights)")


def check_training(cfg: DictConfig, name: str) -> None:
    """The settings of one Trainer run, ``warmup`` or ``train``."""
    node = cfg[name]
    require(0 <= node.warmup_ratio < 1, f"{name}.warmup_ratio must be in [0, 1), got {node.warmup_ratio}")
    require(node.loss in ("example_mean", "token_mean"),
            f"{name}.loss must be example_mean or token_mean, got {node.loss!r}")
    require(node.get("dtype") in MODEL_DTYPES, f"{name}.dtype must be one of {sorted(MODEL_DTYPES)}, got {node.get('dtype')!r}")
    require(isinstance(node.get("fsdp", False), bool), f"{name}.fsdp must be true or false, got {node.get('fsdp')!r}")
    require(node.get("fsdp_config") is None or isinstance(node.get("fsdp_config"), DictConfig),
            f"{name}.fsdp_config must be a mapping of transformers' fsdp_config keys, got {node.get('fsdp_config')!r}")
    ds_cfg = node.get("deepspeed")
    require(ds_cfg is None or isinstance(ds_cfg, (str, DictConfig)),
            f"{name}.deepspeed must be a JSON file path or a mapping, got {ds_cfg!r}")
    require(not (node.get("fsdp") and ds_cfg), f"{name}.fsdp and {name}.deepspeed are both set; choose one")
    state_dict = (node.get("fsdp_config") or {}).get("state_dict_type", "FULL_STATE_DICT")
    require(not node.get("fsdp") or state_dict == "FULL_STATE_DICT",
            f"{name}.fsdp_config.state_dict_type={state_dict}: the model (or adapter) must be saved whole for "
            "the next stages to load it; use FULL_STATE_DICT")
    if ds_cfg:
        _check_deepspeed(name, ds_cfg)
    per_update = node.per_device_batch_size * distributed.world()
    require(node.batch_size % per_update == 0,
            f"{name}.batch_size ({node.batch_size}) is not a multiple of {name}.per_device_batch_size "
            f"({node.per_device_batch_size}) x {distributed.world()} processes")
    if (node.get("fsdp") or ds_cfg) and name in cfg.stages and not cfg.plan:
        import torch

        require(torch.cuda.is_available() and cfg.device != "cpu",
                f"{name}.{'fsdp' if node.get('fsdp') else 'deepspeed'} needs GPUs (accelerate would run plain "
                "DDP on CPU); launch with torchrun on a GPU node, or unset it")


def check_warmup(cfg: DictConfig) -> None:
    w = cfg.warmup
    require(0 < w.fraction <= 1, f"warmup.fraction must be in (0, 1], got {w.fraction}")
    require(w.epochs >= 1, f"warmup.epochs must be >= 1, got {w.epochs}")
    check_training(cfg, "warmup")


WARMUP = Stage(
    "warmup", step="warmup", build=build_warmup, ranks="all", report=_report, track=track_curve("warmup", "warmup.json"),
    summary=training_summary("warmup"), accounting=training_accounting("warmup", "warmup.json"),
    cost=training_cost("selector", "warmup.json", lambda ctx: ctx.cfg.warmup, lambda ctx: ctx.cfg.warmup.fraction),
    wandb_type="checkpoints", wandb_files=("warmup.json",),
    inputs=lambda ctx: {"pool": "pool", "selector": "selector"},
    config=lambda ctx: {"selector": model_spec(ctx.selector), "chat_format": ctx.cfg.chat_format,
                        "warmup": training_spec(ctx.cfg.warmup), "seed": ctx.cfg.seed},
    applies=needs_warmup, check=check_warmup)

INIT_ADAPTER = Stage(
    "init_adapter", step="datastore", build=build_init_adapter,
    inputs=lambda ctx: {"selector": "selector"},
    config=lambda ctx: {"selector": model_spec(ctx.selector), "lora": to_plain(ctx.cfg.warmup.lora),
                        "seed": ctx.cfg.seed},
    applies=lambda ctx: needs_gradients(ctx) and not ctx.cfg.datastore.use_warmup and not ctx.cfg.datastore.warmup_dir)

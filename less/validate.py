"""Up-front config checks, so a bad value fails before any stage runs (and names its key)."""

from __future__ import annotations

from omegaconf import DictConfig

from less.errors import ConfigError
from less.gradients.store import DTYPES
from less.graph import STEPS
from less.models import DTYPES as MODEL_DTYPES
from less.selection import registry


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(msg)


def _check_deepspeed(name: str, ds_cfg) -> None:
    """A DeepSpeed config the pipeline can use: for target training only (the datastore needs the
    warmup's Adam moments per parameter, which ZeRO keeps flattened), and under ZeRO-3 with the
    16-bit weights gathered at save (else the trained model is saved empty)."""
    import json
    from pathlib import Path

    from omegaconf import OmegaConf

    _check(name == "train", "warmup.deepspeed: not supported (the datastore reads the warmup's Adam moments per "
                            "parameter; ZeRO keeps them flattened): use warmup.fsdp")
    if isinstance(ds_cfg, str):
        path = Path(ds_cfg).expanduser()
        _check(path.is_file(), f"train.deepspeed={ds_cfg}: no such file")
        try:
            conf = json.loads(path.read_text())
        except ValueError as e:
            raise ConfigError(f"{path}: not valid JSON ({e}) (set by train.deepspeed)") from None
    else:
        conf = OmegaConf.to_container(ds_cfg, resolve=True)
    zero = conf.get("zero_optimization") or {}
    _check(zero.get("stage") != 3 or zero.get("stage3_gather_16bit_weights_on_model_save") is True,
           "train.deepspeed: ZeRO stage 3 needs zero_optimization.stage3_gather_16bit_weights_on_model_save: true "
           "(else the trained model is saved without its weights)")


def validate(cfg: DictConfig) -> None:
    unknown = [s for s in cfg.stages if s not in STEPS]
    _check(not unknown, f"stages: unknown stage(s) {unknown}; choose from {list(STEPS)}")
    w, ds, s, t = cfg.warmup, cfg.datastore, cfg.selection, cfg.train
    _check(0 < w.fraction <= 1, f"warmup.fraction must be in (0, 1], got {w.fraction}")
    _check(w.epochs >= 1, f"warmup.epochs must be >= 1, got {w.epochs}")
    for name, node in (("warmup", w), ("train", t)):
        _check(0 <= node.warmup_ratio < 1, f"{name}.warmup_ratio must be in [0, 1), got {node.warmup_ratio}")
        _check(node.loss in ("example_mean", "token_mean"),
               f"{name}.loss must be example_mean or token_mean, got {node.loss!r}")
        _check(node.get("dtype") in MODEL_DTYPES, f"{name}.dtype must be one of {sorted(MODEL_DTYPES)}, got {node.get('dtype')!r}")
        _check(isinstance(node.get("fsdp", False), bool), f"{name}.fsdp must be true or false, got {node.get('fsdp')!r}")
        _check(node.get("fsdp_config") is None or isinstance(node.get("fsdp_config"), DictConfig),
               f"{name}.fsdp_config must be a mapping of transformers' fsdp_config keys, got {node.get('fsdp_config')!r}")
        ds_cfg = node.get("deepspeed")
        _check(ds_cfg is None or isinstance(ds_cfg, (str, DictConfig)),
               f"{name}.deepspeed must be a JSON file path or a mapping, got {ds_cfg!r}")
        _check(not (node.get("fsdp") and ds_cfg), f"{name}.fsdp and {name}.deepspeed are both set; choose one")
        state_dict = (node.get("fsdp_config") or {}).get("state_dict_type", "FULL_STATE_DICT")
        _check(not node.get("fsdp") or state_dict == "FULL_STATE_DICT",
               f"{name}.fsdp_config.state_dict_type={state_dict}: the model (or adapter) must be saved whole for "
               "the next stages to load it; use FULL_STATE_DICT")
        if ds_cfg:
            _check_deepspeed(name, ds_cfg)
        from less import distributed

        per_update = node.per_device_batch_size * distributed.world()
        _check(node.batch_size % per_update == 0,
               f"{name}.batch_size ({node.batch_size}) is not a multiple of {name}.per_device_batch_size "
               f"({node.per_device_batch_size}) x {distributed.world()} processes")
        if (node.get("fsdp") or ds_cfg) and name in cfg.stages and not cfg.plan:
            import torch

            _check(torch.cuda.is_available() and cfg.device != "cpu",
                   f"{name}.{'fsdp' if node.get('fsdp') else 'deepspeed'} needs GPUs (accelerate would run plain "
                   "DDP on CPU); launch with torchrun on a GPU node, or unset it")
    _check(t.mode in ("lora", "full"), f"train.mode must be lora or full, got {t.mode!r}")
    _check(ds.gradient_type in ("adam", "sgd"), f"datastore.gradient_type must be adam or sgd, got {ds.gradient_type!r}")
    if isinstance(ds.projection, str):
        _check(ds.projection == "none", f"datastore.projection must be a mapping or 'none', got {ds.projection!r}")
        dims = None
    else:
        dims = list(ds.projection.dims)
        _check(bool(dims) and all(isinstance(d, int) and d > 0 for d in dims),
               f"datastore.projection.dims must be a non-empty list of positive integers, got {dims}")
        _check(ds.projection.batch_size >= 1, f"datastore.projection.batch_size must be >= 1, got {ds.projection.batch_size}")
        if ds.dtype == "bit":
            _check(all(d % 8 == 0 for d in dims), f"datastore.dtype=bit needs dims divisible by 8, got {dims}")
    _check(0 <= ds.shard < ds.num_shards, f"datastore.shard must be in [0, num_shards={ds.num_shards}), got {ds.shard}")
    for key in ("chunk_size", "token_budget", "max_batch_size"):
        _check(ds[key] >= 1, f"datastore.{key} must be >= 1, got {ds[key]}")
    _check(ds.target_truncation in ("left", "right"),
           f"datastore.target_truncation must be left or right, got {ds.target_truncation!r}")
    _check(ds.dtype in DTYPES, f"datastore.dtype must be one of {DTYPES}, got {ds.dtype!r}")
    internal = ds.use_warmup and not ds.warmup_dir  # epochs 1..warmup.epochs exist
    if ds.checkpoints is not None and internal:
        _check(all(1 <= e <= w.epochs for e in ds.checkpoints),
               f"datastore.checkpoints {list(ds.checkpoints)} must be epochs in 1..{w.epochs}")
    method = registry.get(s.method)  # names the registered methods if unknown
    _check(ds.use_warmup or ds.gradient_type == "sgd" or bool(ds.warmup_dir),
           "datastore.use_warmup=false has no optimizer state: set datastore.gradient_type=sgd")
    if method.check is not None:
        method.check(cfg)
    if "subtask_reduce" in s:
        _check(s.subtask_reduce in ("max", "mean"), f"selection.subtask_reduce must be max or mean, got {s.subtask_reduce!r}")
    if s.k is None:
        _check(s.fraction is not None and 0 < s.fraction <= 1,
               f"selection.fraction must be in (0, 1] (or set selection.k), got {s.fraction}")
    else:
        _check(isinstance(s.k, int) and s.k >= 1, f"selection.k must be a positive integer, got {s.k}")
    if s.get("proj_dim") is not None and dims is not None:
        _check(s.proj_dim in dims, f"selection.proj_dim={s.proj_dim} is not in datastore.projection.dims {dims}")
    if s.get("checkpoints") is not None and internal:
        avail = list(ds.checkpoints) if ds.checkpoints is not None else list(range(1, w.epochs + 1))
        _check(bool(s.checkpoints) and set(s.checkpoints) <= set(avail),
               f"selection.checkpoints {list(s.checkpoints)} must be a subset of {avail}")
    e = cfg.eval
    _check(e.protocol in ("paper", "lm_eval"), f"eval.protocol must be paper or lm_eval, got {e.protocol!r}")
    _check(e.backend in ("hf", "vllm"), f"eval.backend must be hf or vllm, got {e.backend!r}")
    _check(not e.adapter or (e.model and e.model != "base"), "eval.adapter needs eval.model (the adapter's base)")
    _check(e.tydiqa.shot_source in ("train", "dval"),
           f"eval.tydiqa.shot_source must be train or dval, got {e.tydiqa.shot_source!r}")
    for key, n in (("eval.tydiqa.per_language", e.tydiqa.per_language), ("eval.bbh.per_task", e.bbh.per_task)):
        _check(n is None or (isinstance(n, int) and not isinstance(n, bool) and n >= 1),
               f"{key} must be a positive integer or null (all), got {n!r}")
    if "eval" in cfg.stages:  # before hours of training, not at the end
        from less.evaluation.tasks import check_tydiqa_train

        check_tydiqa_train(e, cfg.data)
    if "eval" in cfg.stages and "less_synthetic_color" in cfg.eval.tasks:
        _check(cfg.target.kind == "synthetic", "eval.tasks: less_synthetic_color needs target=synthetic "
               f"(got target={cfg.target.name}); set eval.tasks or leave eval out of stages")
    for role in ("model", "selector"):
        m = cfg.get(role)
        if m is not None and m.kind == "small":
            from less.small_model import require_root

            require_root(cfg.data)
    _check(cfg.chat_format in ("tulu", "tokenizer"), f"chat_format must be tulu or tokenizer, got {cfg.chat_format!r}")
    _check(cfg.logger.name in ("wandb", "none"), f"logger.name must be wandb or none, got {cfg.logger.name!r}")
    if cfg.logger.name == "wandb":
        _check(cfg.logger.mode in ("offline", "online", "disabled"),
               f"logger.mode must be offline, online or disabled, got {cfg.logger.mode!r}")

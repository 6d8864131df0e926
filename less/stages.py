"""The pipeline's stages. Each is a function from config and its inputs' artifact directories to a
new artifact directory (written into the temporary directory it is given)."""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from less.cache import Cache, write_json_atomic
from less.data import sources
from less.data.formats import encode_examples, read_examples, write_jsonl
from less.errors import ConfigError, DataError
from less.models import DTYPES, load_model, load_tokenizer, lora_config

log = logging.getLogger(__name__)
PACKAGE_TASKS = Path(__file__).parent / "tasks"


# ----------------------------------------------------------------------------- prepare
def prepare(cfg: DictConfig, out: Path) -> None:
    pool = sources.load_pool(cfg.pool, cfg.data)
    target = sources.load_target(cfg.target, cfg.data)
    write_jsonl(out / "pool.jsonl", pool)
    write_jsonl(out / "target.jsonl", target)
    (out / "eval_data").mkdir()
    for task, rows in sources.eval_data(cfg.target).items():
        write_jsonl(out / "eval_data" / f"{task}.jsonl", rows)
    write_json_atomic(out / "data.json", {
        "pool": {"n": len(pool), "by_source": sources.counts(pool, "dataset")},
        "target": {"name": cfg.target.name, "n": len(target),
                   "by_subtask": sources.counts(target, "subtask")},
    })


# ----------------------------------------------------------------------------- warmup
def warmup(cfg: DictConfig, selector_cfg: DictConfig, cache: Cache, prepare_dir: Path,
           out: Path, device: torch.device) -> None:
    from peft import get_peft_model

    from less.training import fit

    w = cfg.warmup
    pool = read_examples(prepare_dir / "pool.jsonl")
    rng = np.random.default_rng(cfg.seed)
    n = max(1, int(round(w.fraction * len(pool))))
    subset = [pool[i] for i in sorted(rng.choice(len(pool), n, replace=False))]
    tok = load_tokenizer(selector_cfg, cache)
    enc = encode_examples(subset, tok, w.max_length, chat_format=cfg.chat_format)
    if not len(enc):
        raise DataError(f"warmup subset of {n} examples has no trainable example ({dict(enc.dropped)})")
    model = get_peft_model(load_model(selector_cfg, cache, device), lora_config(w.lora))
    metrics = fit(model, tok, enc, w, out / "trainer", cfg.seed, save_every_epoch=True, device=device)
    ckpts = sorted((out / "trainer").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    if len(ckpts) != w.epochs:
        raise RuntimeError(f"warmup wrote {len(ckpts)} checkpoints for {w.epochs} epochs")
    entries = []
    for c in ckpts:
        meta = json.loads((c / "less_checkpoint.json").read_text())
        entries.append({"epoch": meta["epoch"], "step": meta["step"], "avg_lr": meta["avg_lr"],
                        "dir": str(c.relative_to(out))})
    write_jsonl(out / "warmup_ids.jsonl", [{"id": i} for i in enc.ids])
    write_json_atomic(out / "warmup.json", {"n_examples": len(enc), "dropped": dict(enc.dropped),
                                            "checkpoints": entries, "train_loss": metrics["train_loss"]})


def warmup_checkpoints(warmup_dir: Path, wanted: list[int] | None, key: str) -> list[dict[str, Any]]:
    entries = json.loads((warmup_dir / "warmup.json").read_text())["checkpoints"]
    if wanted is None:
        return entries
    have = {e["epoch"]: e for e in entries}
    missing = [e for e in wanted if e not in have]
    if missing:
        raise ConfigError(f"{key}: epochs {missing} not among the warmup checkpoints {sorted(have)}")
    return [have[e] for e in wanted]


# ----------------------------------------------------------------------------- datastore
def features(cfg: DictConfig, selector_cfg: DictConfig, cache: Cache, warmup_dir: Path,
             examples_path: Path, split: str, out: Path, device: torch.device) -> None:
    """Per-checkpoint projected gradient features of one split (pool: Adam or SGD; target: SGD)."""
    from peft import PeftModel

    from less.gradients.adam import load_moments
    from less.gradients.features import compute_features
    from less.training import read_checkpoint_meta

    ds = cfg.datastore
    gtype = ds.gradient_type if split == "pool" else "sgd"
    dims = sorted({int(d) for d in ds.proj_dims})
    tok = load_tokenizer(selector_cfg, cache)
    examples = read_examples(examples_path)
    # D_val completions carry no EOS (as in LESS); pool examples are encoded as in training
    enc = encode_examples(examples, tok, ds.max_length, completion_eos=split == "pool",
                          chat_format=cfg.chat_format,
                          truncation="right" if split == "pool" else ds.target_truncation)
    if not len(enc):
        raise DataError(f"{examples_path}: no example has a labelled token ({dict(enc.dropped)})")
    ckpts = warmup_checkpoints(warmup_dir, list(ds.checkpoints) if ds.checkpoints else None,
                               "datastore.checkpoints")
    dtype = np.dtype(ds.dtype)
    entries = []
    for c in ckpts:
        ckpt_dir = warmup_dir / c["dir"]
        model = PeftModel.from_pretrained(load_model(selector_cfg, cache, device), str(ckpt_dir),
                                          is_trainable=True)
        moments, betas = None, (0.9, 0.999)
        if gtype == "adam":
            meta = read_checkpoint_meta(ckpt_dir)
            shapes = {n: tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad}
            moments = load_moments(ckpt_dir, meta["optimizer_param_names"], shapes)
            betas = tuple(meta["betas"])
        feats = compute_features(model, enc, pad_id=tok.pad_token_id, dims=dims, seed=ds.seed,
                                 batch_size=ds.batch_size, device=device, moments=moments,
                                 betas=betas, eps=ds.adam_eps, normalize=ds.normalize,
                                 desc=f"{split} features epoch {c['epoch']}")
        files = {}
        for d, x in feats.items():
            name = f"ckpt{c['epoch']}_d{d}.npy"
            np.save(out / name, x.astype(dtype))
            files[str(d)] = name
        entries.append({"epoch": c["epoch"], "avg_lr": c["avg_lr"], "files": files})
        del model
    write_jsonl(out / "ids.jsonl", [{"id": i} for i in enc.ids])
    write_json_atomic(out / "features.json", {
        "split": split, "gradient_type": gtype, "normalized": bool(ds.normalize), "dims": dims,
        "dtype": dtype.name, "n": len(enc), "n_input": len(examples), "dropped": dict(enc.dropped),
        "truncated": enc.truncated,
        "dropped_ids": enc.dropped_ids, "ids": "ids.jsonl", "checkpoints": entries})


def datastore_manifest(pool_dir: Path, target_dir: Path, out: Path, final_dir: Path) -> None:
    """manifest.json: every feature array with its checkpoint, split, type, dim and LR weight.

    Paths are relative to the datastore's final directory (``out`` is renamed to ``final_dir``).
    """
    def rel(path: Path) -> str:
        return os.path.relpath(path, final_dir)

    files = []
    for split_dir in (pool_dir, target_dir):
        meta = json.loads((split_dir / "features.json").read_text())
        lrs = [c["avg_lr"] for c in meta["checkpoints"]]
        total = sum(lrs)
        for c in meta["checkpoints"]:
            for d, name in c["files"].items():
                files.append({
                    "path": rel(split_dir / name), "checkpoint": c["epoch"],
                    "split": meta["split"], "gradient_type": meta["gradient_type"], "dim": int(d),
                    "normalized": meta["normalized"], "dtype": meta["dtype"], "rows": meta["n"],
                    "avg_lr": c["avg_lr"], "lr_weight": c["avg_lr"] / total if total > 0 else None,
                    "ids": rel(split_dir / meta["ids"])})
    write_json_atomic(out / "manifest.json", {
        "pool": rel(pool_dir), "target": rel(target_dir), "files": files})


def read_manifest(datastore_dir: Path) -> dict[str, Any]:
    man = json.loads((datastore_dir / "manifest.json").read_text())
    for f in man["files"]:
        f["abspath"] = (datastore_dir / f["path"]).resolve()
        f["idspath"] = (datastore_dir / f["ids"]).resolve()
    return man


# ----------------------------------------------------------------------------- select
def select(cfg: DictConfig, prepare_dir: Path, datastore_dir: Path, out: Path) -> dict[str, Any]:
    from less.selection.scoring import checkpoint_weights, less_scores, top_indices

    s = cfg.selection  # values checked up front by less.validate
    man = read_manifest(datastore_dir)
    dims = sorted({f["dim"] for f in man["files"]})
    dim = int(s.proj_dim) if s.proj_dim is not None else max(dims)
    if dim not in dims:
        raise ConfigError(f"selection.proj_dim={dim} is not in the datastore's dims {dims}")
    epochs = sorted({f["checkpoint"] for f in man["files"] if f["split"] == "pool"})
    use = list(s.checkpoints) if s.checkpoints else epochs
    if set(use) - set(epochs):
        raise ConfigError(f"selection.checkpoints {use} not all in the datastore's {epochs}")

    def arrays(split):
        fs = sorted((f for f in man["files"] if f["split"] == split and f["dim"] == dim
                     and f["checkpoint"] in use), key=lambda f: f["checkpoint"])
        ids = [json.loads(line)["id"] for line in open(fs[0]["idspath"])]
        return [np.load(f["abspath"], mmap_mode="r") for f in fs], ids, fs

    pool_x, pool_ids, pool_files = arrays("pool")
    target_x, target_ids, _ = arrays("target")
    pool = {str(r["id"]): r for r in read_examples(prepare_dir / "pool.jsonl")}
    target = {str(r["id"]): r for r in read_examples(prepare_dir / "target.jsonl")}
    pool_meta = json.loads((datastore_dir / man["pool"] / "features.json").read_text())
    # Coverage: every pool example is either featurised or dropped with a reason, never skipped.
    if set(pool_ids) | set(pool_meta["dropped_ids"]) != set(pool) or len(pool_ids) != len(set(pool_ids)):
        raise DataError(f"{datastore_dir}: datastore rows do not cover the pool {prepare_dir / 'pool.jsonl'}")
    weights = checkpoint_weights([f["avg_lr"] for f in pool_files])
    subtasks = [target[t]["subtask"] for t in target_ids]
    scores, per_sub = less_scores(pool_x, target_x, weights, subtasks)
    # the fraction is of the whole pool, dropped examples included
    order, n_sel = top_indices(scores, None if s.k is not None else s.fraction, s.k, n_pool=len(pool))

    with open(out / "ranking.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["rank", "id", "source", "score"])
        for rank, i in enumerate(order, 1):
            w.writerow([rank, pool_ids[i], pool[pool_ids[i]].get("dataset"), f"{scores[i]:.8g}"])
    selected = [pool[pool_ids[i]] for i in order[:n_sel]]
    write_jsonl(out / "selected.jsonl", selected)
    np.save(out / "scores.npy", scores)
    stats = selection_stats(cfg, list(pool.values()), selected)
    stats.update({"method": s.method, "n_selected": n_sel, "n_ranked": len(order), "proj_dim": dim,
                  "checkpoints": use, "checkpoint_weights": weights.tolist(),
                  "n_dropped": len(pool_meta["dropped_ids"]), "dropped": pool_meta["dropped"],
                  "subtasks": list(dict.fromkeys(subtasks))})
    write_json_atomic(out / "selection.json", stats)
    return stats


def selection_stats(cfg: DictConfig, pool: list[dict], selected: list[dict]) -> dict[str, Any]:
    skill = cfg.target.get("skill")
    has_skills = skill is not None and all("skill" in r for r in pool)
    share = (lambda rows: sum(r["skill"] == skill for r in rows) / len(rows)) if has_skills else None
    return {"by_source": sources.counts(selected, "dataset"),
            "target_skill": skill if has_skills else None,
            "target_share": share(selected) if share else None,
            "base_share": share(pool) if share else None}


# ----------------------------------------------------------------------------- train
def train(cfg: DictConfig, cache: Cache, select_dir: Path, out: Path, device: torch.device) -> dict:
    from peft import get_peft_model

    from less.training import fit

    t = cfg.train
    tok = load_tokenizer(cfg.model, cache)
    enc = encode_examples(read_examples(select_dir / "selected.jsonl"), tok, t.max_length,
                          chat_format=cfg.chat_format)
    if not len(enc):
        raise DataError(f"{select_dir / 'selected.jsonl'}: no trainable example ({dict(enc.dropped)})")
    model = load_model(cfg.model, cache, device)
    if t.mode == "lora":
        model = get_peft_model(model, lora_config(t.lora))
    metrics = fit(model, tok, enc, t, out / "trainer", cfg.seed, save_every_epoch=False, device=device)
    model.save_pretrained(out / ("adapter" if t.mode == "lora" else "model"))
    if t.mode == "full":
        tok.save_pretrained(out / "model")
    info = {"mode": t.mode, "n_examples": len(enc), "dropped": dict(enc.dropped),
            "train_loss": metrics["train_loss"], "steps": metrics["steps"]}
    write_json_atomic(out / "train.json", info)
    return info


# ----------------------------------------------------------------------------- eval
def evaluate(cfg: DictConfig, cache: Cache, prepare_dir: Path, train_dir: Path, out: Path,
             device: torch.device) -> dict[str, dict[str, float]]:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    e = cfg.eval
    tok = load_tokenizer(cfg.model, cache)
    if (train_dir / "adapter").is_dir():
        from peft import PeftModel

        model = PeftModel.from_pretrained(load_model(cfg.model, cache, device), str(train_dir / "adapter"))
        model = model.merge_and_unload()
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(
            train_dir / "model", dtype=DTYPES[cfg.model.dtype],
            trust_remote_code=bool(cfg.model.trust_remote_code)).to(device)
    model.eval()
    # Tasks whose test data the target ships: a wrapper YAML points the package task at the file.
    task_dir = out / "tasks"
    task_dir.mkdir()
    for data in sorted((prepare_dir / "eval_data").glob("*.jsonl")):
        base = PACKAGE_TASKS / f"{data.stem}.yaml"
        if data.stem in e.tasks and base.is_file():
            (task_dir / f"{data.stem}.yaml").write_text(
                f"include: {base}\ndataset_kwargs:\n  data_files:\n    test: {data.resolve()}\n")
    manager = TaskManager(include_path=[str(task_dir), *map(str, e.include_paths)])
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=e.batch_size, device=str(device))
    res = lm_eval.simple_evaluate(model=lm, tasks=list(e.tasks), num_fewshot=e.num_fewshot,
                                  limit=e.limit, task_manager=manager, log_samples=False,
                                  random_seed=cfg.seed, numpy_random_seed=cfg.seed,
                                  torch_random_seed=cfg.seed, fewshot_random_seed=cfg.seed)
    metrics: dict[str, dict[str, float]] = {}
    for task, vals in res["results"].items():
        for k, v in vals.items():
            if "," not in k or not isinstance(v, (int, float)):
                continue
            metric, filt = k.split(",", 1)
            metrics.setdefault(task, {})[metric if filt == "none" else f"{metric}_{filt}"] = float(v)
    write_json_atomic(out / "metrics.json", metrics)
    return metrics

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

from less.cache import Cache, to_plain, write_json_atomic
from less.data import sources
from less.data.formats import encode_examples, read_examples, write_jsonl
from less.errors import ConfigError, DataError
from less.models import load_model, load_tokenizer, lora_config
from less.training import CHECKPOINT_META

log = logging.getLogger(__name__)


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
    write_json_atomic(out / "warmup.json", {"n_examples": len(enc), "n_tokens": sum(map(len, enc.input_ids)),
                                            "epochs": w.epochs, "dropped": dict(enc.dropped),
                                            "checkpoints": entries, "train_loss": metrics["train_loss"]})


def init_adapter(cfg: DictConfig, selector_cfg: DictConfig, cache: Cache, out: Path) -> None:
    """The no-warmup ablation: a freshly initialised LoRA (B = 0, so only B has gradients) saved as
    the single checkpoint 0 with weight 1; there is no optimizer state, so features are SGD."""
    from peft import get_peft_model

    torch.manual_seed(cfg.seed)
    model = get_peft_model(load_model(selector_cfg, cache, torch.device("cpu")), lora_config(cfg.warmup.lora))
    model.save_pretrained(out / "checkpoint-0")
    write_json_atomic(out / "warmup.json", {"n_examples": 0, "checkpoints": [
        {"epoch": 0, "step": 0, "avg_lr": 1.0, "dir": "checkpoint-0"}]})


def warmup_checkpoints(warmup_dir: Path, ds: DictConfig) -> list[dict[str, Any]]:
    """The checkpoints features are taken from, with their epoch's average learning rate.

    Our warmup records them in ``warmup.json``; an external run (``datastore.warmup_dir``: a
    Trainer / reference-LESS output dir with ``checkpoint-*/``) gets them from each checkpoint's
    ``less_checkpoint.json``, else its ``trainer_state.json`` log, else ``datastore.lr_weights``.
    """
    if (warmup_dir / "warmup.json").is_file():
        entries = json.loads((warmup_dir / "warmup.json").read_text())["checkpoints"]
    else:
        dirs = sorted(warmup_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
        if not dirs:
            raise DataError(f"{warmup_dir}: no checkpoint-* directories (set by datastore.warmup_dir)")
        lrs = list(ds.lr_weights) if ds.get("lr_weights") else None
        if lrs is not None and len(lrs) != len(dirs):
            raise ConfigError(f"datastore.lr_weights has {len(lrs)} values for {len(dirs)} checkpoints in {warmup_dir}")
        entries = []
        for e, d in enumerate(dirs, 1):
            lr = lrs[e - 1] if lrs is not None else _recorded_lr(d, e)
            if lr is None:
                raise DataError(f"{d}: no learning rate recorded for epoch {e}; set datastore.lr_weights")
            entries.append({"epoch": e, "step": int(d.name.split("-")[-1]), "avg_lr": lr, "dir": str(d)})
    wanted = list(ds.checkpoints) if ds.checkpoints else None
    if wanted is None:
        return entries
    have = {e["epoch"]: e for e in entries}
    missing = [e for e in wanted if e not in have]
    if missing:
        raise ConfigError(f"datastore.checkpoints: epochs {missing} not among the warmup checkpoints {sorted(have)}")
    return [have[e] for e in wanted]


def _recorded_lr(ckpt: Path, epoch: int) -> float | None:
    if (ckpt / CHECKPOINT_META).is_file():
        return json.loads((ckpt / CHECKPOINT_META).read_text())["avg_lr"]
    if (ckpt / "trainer_state.json").is_file():
        hist = json.loads((ckpt / "trainer_state.json").read_text()).get("log_history", [])
        lrs = [h["learning_rate"] for h in hist if "learning_rate" in h and epoch - 1 < h.get("epoch", 0) <= epoch]
        return sum(lrs) / len(lrs) if lrs else None
    return None


# ----------------------------------------------------------------------------- datastore
def projection_dims(ds: DictConfig) -> list[int] | None:
    """Sorted projection dims, or None for ``datastore.projection=none`` (flat features)."""
    if isinstance(ds.projection, str):
        return None
    return sorted({int(d) for d in ds.projection.dims})


def chunks_of(n_rows: int, chunk_size: int, shard: int, num_shards: int) -> list[tuple[int, int]]:
    """This shard's chunks: a contiguous run of the split's fixed chunks (shard-independent)."""
    chunks = [(s, min(n_rows, s + chunk_size)) for s in range(0, n_rows, chunk_size)]
    lo, hi = len(chunks) * shard // num_shards, len(chunks) * (shard + 1) // num_shards
    return chunks[lo:hi]


class SplitFeatures:
    """Extraction of one split's features into resumable chunk files under ``work``."""

    def __init__(self, cfg: DictConfig, selector_cfg: DictConfig, cache: Cache, warmup_dir: Path,
                 examples_path: Path, split: str, work: Path, device: torch.device):
        self.cfg, self.selector_cfg, self.cache = cfg, selector_cfg, cache
        self.ds, self.split, self.work, self.device = cfg.datastore, split, work, device
        self.warmup_dir = warmup_dir
        self.gtype = self.ds.gradient_type if split == "pool" else "sgd"
        self.tok = load_tokenizer(selector_cfg, cache)
        self.examples = read_examples(examples_path)
        # D_val completions carry no EOS (as in LESS); pool examples are encoded as in training
        self.enc = encode_examples(self.examples, self.tok, self.ds.max_length, completion_eos=split == "pool",
                                   chat_format=cfg.chat_format,
                                   truncation="right" if split == "pool" else self.ds.target_truncation)
        if not len(self.enc):
            raise DataError(f"{examples_path}: no example has a labelled token ({dict(self.enc.dropped)})")
        self.ckpts = warmup_checkpoints(warmup_dir, self.ds)
        self.dims = projection_dims(self.ds)

    def _flat_dim(self) -> int | None:
        meta = self.work / "flat_dim.txt"
        return int(meta.read_text()) if meta.is_file() else None

    def missing(self, shard: int, num_shards: int) -> dict[int, list[tuple[int, int]]]:
        from less.gradients.store import chunk_done

        mine = chunks_of(len(self.enc), self.ds.chunk_size, shard, num_shards)
        dmax = self.dims[-1] if self.dims else self._flat_dim()
        return {c["epoch"]: [ch for ch in mine if dmax is None or not chunk_done(self.work, c["epoch"], dmax, *ch)]
                for c in self.ckpts}

    def extract(self, shard: int = 0, num_shards: int = 1) -> None:
        """Compute every chunk of this shard that is not on disk yet (a killed run resumes here)."""
        from tqdm.auto import tqdm

        from less.gradients.features import finish
        from less.gradients.store import write_chunk

        todo = self.missing(shard, num_shards)
        for c in self.ckpts:
            chunks = todo[c["epoch"]]
            if not chunks:
                continue
            model, ex = self._extractor(self.warmup_dir / c["dir"])
            self.work.mkdir(parents=True, exist_ok=True)
            if self.dims is None:
                (self.work / "flat_dim.txt").write_text(str(ex.total))
            try:
                for start, stop in tqdm(chunks, desc=f"{self.split} features epoch {c['epoch']}", leave=False):
                    x = ex.unscaled(self.enc, list(range(start, stop)))
                    feats = {d: finish(x[:, :d], bool(self.ds.normalize)).numpy()
                             for d in (self.dims or [ex.total])}
                    write_chunk(self.work, c["epoch"], feats, start, stop, self.ds.dtype)
            finally:
                ex.close()
            del model

    def _extractor(self, ckpt_dir: Path):
        from peft import PeftModel

        from less.gradients.adam import load_moments
        from less.gradients.features import FeatureExtractor

        model = PeftModel.from_pretrained(load_model(self.selector_cfg, self.cache, self.device),
                                          str(ckpt_dir), is_trainable=True)
        moments, betas, eps = None, (0.9, 0.999), float(self.ds.adam_eps)
        if self.gtype == "adam":
            meta_file = ckpt_dir / CHECKPOINT_META
            names = json.loads(meta_file.read_text())["optimizer_param_names"] if meta_file.is_file() else None
            shapes = {n: tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad}
            mom = load_moments(ckpt_dir, names, shapes)
            moments, betas = mom.by_name, mom.betas or betas
            eps = mom.eps if mom.eps is not None else eps
        proj = self.ds.projection
        ex = FeatureExtractor(
            model, pad_id=self.tok.pad_token_id, dims=self.dims, seed=0 if self.dims is None else proj.seed,
            device=self.device, moments=moments, betas=betas, eps=eps, token_budget=self.ds.token_budget,
            max_batch=self.ds.max_batch_size,
            projection_batch=self.ds.max_batch_size if self.dims is None else proj.batch_size,
            cache_bytes=0 if self.dims is None else int(proj.cache_gb * 2**30))
        if self.ds.gradient_checkpointing:
            # HF checkpoints only in train mode; dropout modules stay in eval (features need it off)
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.train()
            for m in model.modules():
                if isinstance(m, torch.nn.Dropout):
                    m.eval()
        return model, ex

    def complete(self) -> bool:
        return all(not v for v in self.missing(0, 1).values()) and (self.dims is not None or bool(self._flat_dim()))

    def assemble(self, out: Path) -> None:
        """The final features artifact: one array per (checkpoint, dim), rows in split order."""
        from less.gradients.store import assemble

        dims = self.dims or [self._flat_dim()]
        entries = []
        for c in self.ckpts:
            files = {str(d): assemble(self.work, out, c["epoch"], d, len(self.enc), self.ds.dtype) for d in dims}
            entries.append({"epoch": c["epoch"], "avg_lr": c["avg_lr"], "files": files})
        write_jsonl(out / "ids.jsonl", [{"id": i} for i in self.enc.ids])
        write_json_atomic(out / "features.json", {
            "split": self.split, "gradient_type": self.gtype, "normalized": bool(self.ds.normalize),
            "projection": "none" if self.dims is None else "rademacher", "dims": dims, "dtype": self.ds.dtype,
            "n": len(self.enc), "n_tokens": sum(map(len, self.enc.input_ids)), "n_input": len(self.examples),
            "dropped": dict(self.enc.dropped),
            "truncated": self.enc.truncated, "dropped_ids": self.enc.dropped_ids, "ids": "ids.jsonl",
            "checkpoints": entries})


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
                entry = {"path": rel(split_dir / name), "checkpoint": c["epoch"], "split": meta["split"],
                         "gradient_type": meta["gradient_type"], "dim": int(d), "projection": meta["projection"],
                         "normalized": meta["normalized"], "dtype": meta["dtype"], "rows": meta["n"],
                         "avg_lr": c["avg_lr"], "lr_weight": c["avg_lr"] / total if total > 0 else None,
                         "ids": rel(split_dir / meta["ids"])}
                if meta["dtype"] == "int8":
                    entry["scale"] = rel(split_dir / name.replace(".npy", ".scale.npy"))
                files.append(entry)
    write_json_atomic(out / "manifest.json", {
        "pool": rel(pool_dir), "target": rel(target_dir), "files": files})


def read_manifest(datastore_dir: Path) -> dict[str, Any]:
    man = json.loads((datastore_dir / "manifest.json").read_text())
    for f in man["files"]:
        f["abspath"] = (datastore_dir / f["path"]).resolve()
        f["idspath"] = (datastore_dir / f["ids"]).resolve()
    return man


# ----------------------------------------------------------------------------- accounting
def token_counts(cfg: DictConfig, cache: Cache, prepare_dir: Path, out: Path) -> None:
    """Tokens per pool example with the target model's tokenizer, as training would encode them."""
    tok = load_tokenizer(cfg.model, cache)
    rows = read_examples(prepare_dir / "pool.jsonl")
    enc = encode_examples(rows, tok, cfg.train.max_length, chat_format=cfg.chat_format)
    write_json_atomic(out / "tokens.json", {"by_id": dict(zip(enc.ids, map(len, enc.input_ids))),
                                            "dropped": dict(enc.dropped)})


# ----------------------------------------------------------------------------- select
GRADIENT_METHODS = ("less",)


def target_free(selection: dict[str, Any]) -> bool:
    """Methods whose selection does not depend on the target set (cached once for all targets)."""
    return selection["method"] in ("random", "full", "length")
REPRESENTATION_METHODS = ("rds", "kcenter")


def representations(cfg: DictConfig, selector_cfg: DictConfig, cache: Cache, prepare_dir: Path, out: Path,
                    device: torch.device) -> None:
    """Mean-pooled last hidden states of the selector model for the pool and the target."""
    from less.selection.representations import mean_pooled

    tok = load_tokenizer(selector_cfg, cache)
    model = load_model(selector_cfg, cache, device)
    s = cfg.selection
    for split in ("pool", "target"):
        rows = read_examples(prepare_dir / f"{split}.jsonl")
        enc = encode_examples(rows, tok, s.max_length, completion_eos=split == "pool", chat_format=cfg.chat_format,
                              truncation="right" if split == "pool" else "left")
        np.save(out / f"{split}.npy", mean_pooled(model, enc, tok.pad_token_id, device, desc=f"{split} representations"))
        write_jsonl(out / f"{split}_ids.jsonl", [{"id": i} for i in enc.ids])


def less_method_scores(cfg: DictConfig, datastore_dir: Path, pool_ids_all: set[str], target: dict[str, dict]
                       ) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    from less.gradients.store import FeatureArray
    from less.selection.scoring import checkpoint_weights, less_scores

    s = cfg.selection
    man = read_manifest(datastore_dir)
    dims = sorted({f["dim"] for f in man["files"]})
    flat = all(f.get("projection") == "none" for f in man["files"])
    dim = int(s.proj_dim) if s.proj_dim is not None and not flat else max(dims)
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
        return [FeatureArray(f["abspath"], f["dtype"], f["dim"]) for f in fs], ids, fs

    pool_x, pool_ids, pool_files = arrays("pool")
    target_x, target_ids, _ = arrays("target")
    pool_meta = json.loads((datastore_dir / man["pool"] / "features.json").read_text())
    # Coverage: every pool example is either featurised or dropped with a reason, never skipped.
    if set(pool_ids) | set(pool_meta["dropped_ids"]) != pool_ids_all or len(pool_ids) != len(set(pool_ids)):
        raise DataError(f"{datastore_dir}: datastore rows do not cover the pool")
    lrs = [f["avg_lr"] for f in pool_files]
    weights = checkpoint_weights([1.0] * len(lrs) if s.checkpoint_weights == "uniform" else lrs)
    subtasks = [target[t]["subtask"] for t in target_ids]
    scores = less_scores(pool_x, [np.asarray(t) for t in target_x], weights, subtasks, reduce=s.subtask_reduce)
    return scores, pool_ids, {"proj_dim": dim, "checkpoints": use, "checkpoint_weights": weights.tolist(),
                              "n_dropped": len(pool_meta["dropped_ids"]), "dropped": pool_meta["dropped"],
                              "datastore": str(datastore_dir)}


def select(cfg: DictConfig, prepare_dir: Path, datastore_dir: Path | None, reps_dir: Path | None,
           out: Path) -> dict[str, Any]:
    from less.selection import methods as M
    from less.selection.scoring import n_selected, ranking_order

    s = cfg.selection  # values checked up front by less.validate
    pool_rows = read_examples(prepare_dir / "pool.jsonl")
    pool = {str(r["id"]): r for r in pool_rows}
    target_rows = read_examples(prepare_dir / "target.jsonl")
    target = {str(r["id"]): r for r in target_rows}
    subtasks = [r["subtask"] for r in target_rows]
    extra: dict[str, Any] = {}
    ids = list(pool)
    if s.method == "less":
        scores, ids, extra = less_method_scores(cfg, datastore_dir, set(pool), target)
    elif s.method in ("random", "full"):
        scores = M.random_scores(len(ids), cfg.seed) if s.method == "random" else np.zeros(len(ids))
    elif s.method == "length":
        scores = M.length_scores(pool_rows)
    elif s.method == "bm25":
        scores = M.bm25_scores(pool_rows, target_rows, subtasks, s.subtask_reduce)
    elif s.method == "dsir":
        scores = M.dsir_scores(pool_rows, target_rows, s.dsir.buckets, s.dsir.resample, cfg.seed)
    else:  # representation methods
        ids = [json.loads(line)["id"] for line in open(reps_dir / "pool_ids.jsonl")]
        t_ids = [json.loads(line)["id"] for line in open(reps_dir / "target_ids.jsonl")]
        p_reps, t_reps = np.load(reps_dir / "pool.npy"), np.load(reps_dir / "target.npy")
        if s.method == "rds":
            scores = M.cosine_scores(p_reps, t_reps, [target[t]["subtask"] for t in t_ids], s.subtask_reduce)
        else:
            k = n_selected(len(ids), None if s.k is not None else s.fraction, s.k, n_pool=len(pool))
            scores = M.kcenter_scores(p_reps, k, cfg.seed, s.kcenter.n_clusters,
                                      t_reps if s.kcenter.centered_on_target else None)
    scores = np.asarray(scores, dtype=np.float64)
    if s.method == "full":
        n_sel = len(ids)
    else:  # the fraction is of the whole pool, dropped examples included
        n_sel = n_selected(len(scores), None if s.k is not None else s.fraction, s.k, n_pool=len(pool))
    order = ranking_order(scores)  # the ranking file lists every row, so one full sort serves both
    with open(out / "ranking.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["rank", "id", "source", "score"])
        for rank, i in enumerate(order, 1):
            w.writerow([rank, ids[i], pool[ids[i]].get("dataset"), f"{scores[i]:.8g}"])
    selected = [pool[ids[i]] for i in order[:n_sel]]
    write_jsonl(out / "selected.jsonl", selected)
    np.save(out / "scores.npy", scores)
    stats = selection_stats(cfg, pool_rows, selected)
    stats.update({"method": s.method, "n_selected": n_sel, "n_ranked": len(order),
                  "subtasks": None if target_free(to_plain(s)) else list(dict.fromkeys(subtasks)), **extra})
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
    info = {"mode": t.mode, "n_examples": len(enc), "n_tokens": sum(map(len, enc.input_ids)), "epochs": t.epochs,
            "dropped": dict(enc.dropped),
            "train_loss": metrics["train_loss"], "steps": metrics["steps"]}
    write_json_atomic(out / "train.json", info)
    return info


# ----------------------------------------------------------------------------- eval
def evaluate(cfg: DictConfig, cache: Cache, prepare_dir: Path | None, train_dir: Path | None, out: Path,
             device: torch.device) -> dict[str, Any]:
    from less.evaluation.run import evaluate as run_eval

    metrics = run_eval(cfg, cache, out, device, prepare_dir, train_dir)
    write_json_atomic(out / "metrics.json", metrics)
    return metrics

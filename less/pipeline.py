"""The LESS pipeline: prepare -> warmup -> datastore -> select -> train -> eval.

Each stage's artifact is cached under a key of exactly the config it depends on plus its inputs'
keys (see less.cache). ``stages=[...]`` runs a subset; a stage left out takes its artifact from the
cache or fails naming the missing key. Every run writes ``results.json`` to Hydra's output
directory and prints a short summary.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from less import stages as S
from less.cache import Artifact, Cache, to_plain, write_json_atomic
from less.data.sources import data_spec, pool_spec, target_spec
from less.errors import CacheMiss, DataError, LessError
from less.models import local_files_stamp, model_path, model_spec, resolve_device
from less.tracking import NullTracker, make_tracker
from less.validate import STAGES, validate

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Entry point called by run.py. User errors become one line on stderr and exit code 2."""
    try:
        return Pipeline(cfg).run()
    except LessError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


LESS_SELECTION = Path(__file__).resolve().parents[1] / "conf" / "selection" / "less.yaml"


def less_selection(selection: DictConfig) -> dict[str, Any] | None:
    """The default LESS selection with this run's fraction / k (to compare against), if known."""
    if not LESS_SELECTION.is_file():
        return None
    base = to_plain(OmegaConf.load(LESS_SELECTION))
    base.update(fraction=selection.get("fraction"), k=selection.get("k"))
    return base


SPEED_ONLY = {"token_budget", "max_batch_size", "gradient_checkpointing", "chunk_size", "shard", "num_shards"}


def datastore_spec(ds: DictConfig) -> dict[str, Any]:
    """The datastore settings features depend on (not how fast or in how many jobs they are made)."""
    spec = {k: v for k, v in to_plain(ds).items() if k not in SPEED_ONLY and k not in ("warmup_dir", "lr_weights")}
    if isinstance(spec["projection"], dict):
        spec["projection"] = {k: v for k, v in spec["projection"].items() if k not in ("batch_size", "cache_gb")}
    return spec


def external_warmup_spec(ds: DictConfig) -> dict[str, Any]:
    """Identity of an external warmup run: its checkpoints' files and the given LRs."""
    root = Path(ds.warmup_dir).expanduser().resolve()
    files = {str(p.relative_to(root)): [p.stat().st_size, p.stat().st_mtime_ns]
             for p in sorted(root.glob("checkpoint-*/*")) if p.is_file()}
    return {"external": str(root), "files": files, "lr_weights": to_plain(ds.lr_weights)}


def flatten_metrics(tree: dict[str, Any], prefix: str, sep: str = "/") -> dict[str, Any]:
    """{"eval/mmlu/acc": .., "eval/mmlu/subtasks/anatomy/acc": ..} from the nested eval results."""
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten_metrics(v, key, sep))
        else:
            out[key] = v
    return out


def run_name(cfg: DictConfig, out_dir: Path) -> str:
    """W&B run name: the run name plus this job's overrides (e.g. ``default:selection.fraction=0.1``)."""
    from hydra.core.hydra_config import HydraConfig

    overrides = HydraConfig.get().job.override_dirname if HydraConfig.initialized() else ""
    return f"{cfg.name}:{overrides or out_dir.name}"


def output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


class Pipeline:
    def __init__(self, cfg: DictConfig, out_dir: Path | None = None):
        self.cfg = cfg
        validate(cfg)
        self.out_dir = out_dir or output_dir()
        self.cache = Cache(cfg.cache_dir)
        self.device = resolve_device(cfg.device)
        self.selector = cfg.selector if cfg.get("selector") else cfg.model
        self.results: dict[str, Any] = {"stages": {}}
        self.tracker = NullTracker()

    # -- keys: exactly what each artifact depends on ------------------------------------------
    def specs(self) -> dict[str, dict[str, Any]]:
        c = self.cfg
        ds = datastore_spec(c.datastore)
        sp: dict[str, dict[str, Any]] = {}
        pool, target = pool_spec(c.pool, c.data), target_spec(c.target, c.data)
        sp["prepare"] = {"pool": pool, "target": target}
        sp["warmup"] = {"selector": model_spec(self.selector), "pool": pool, "chat_format": c.chat_format,
                        "warmup": to_plain(c.warmup), "seed": c.seed}
        sp["init_adapter"] = {"selector": model_spec(self.selector), "lora": to_plain(c.warmup.lora), "seed": c.seed}
        if c.datastore.warmup_dir:
            wkey = {**external_warmup_spec(c.datastore), "selector": model_spec(self.selector)}
        elif not c.datastore.use_warmup:  # the no-warmup ablation: a freshly initialised LoRA
            wkey = {"init_adapter": self.cache.lookup("init_adapter", sp["init_adapter"]).key}
        else:
            wkey = self.cache.lookup("warmup", sp["warmup"]).key
        sp["pool_features"] = {"warmup": wkey, "pool": pool, "split": "pool", "chat_format": c.chat_format,
                               **{k: v for k, v in ds.items() if k != "target_truncation"}}
        sp["target_features"] = {"warmup": wkey, "target": target, "split": "target", "chat_format": c.chat_format,
                                 **{k: v for k, v in ds.items() if k != "gradient_type"}}
        sp["datastore"] = {"pool": self.cache.lookup("features", sp["pool_features"]).key,
                           "target": self.cache.lookup("features", sp["target_features"]).key}
        sp["representations"] = {"selector": model_spec(self.selector), "pool": pool, "target": target,
                                 "chat_format": c.chat_format, "max_length": c.selection.get("max_length")}
        sp["select"] = self.select_spec(sp, to_plain(c.selection))
        less = less_selection(c.selection)
        sp["select_less"] = self.select_spec(sp, less) if less is not None else None
        sp["train"] = {"model": model_spec(c.model), "select": self.cache.lookup("select", sp["select"]).key,
                       "chat_format": c.chat_format, "train": to_plain(c.train), "seed": c.seed}
        e = c.eval
        if "eval" not in c.stages:
            sp["eval"] = None
            return sp
        sp["eval"] = {"eval": to_plain(e), "data": data_spec(c.data), "device": self.device.type,
                      "prepare": self.cache.lookup("prepare", sp["prepare"]).key if self.needs_prepared_eval() else None,
                      "seed": c.seed}
        if not e.model:  # the trained target model
            sp["eval"].update(train=self.cache.lookup("train", sp["train"]).key, model=model_spec(c.model))
        elif e.model == "base":
            sp["eval"].update(model=model_spec(c.model))
        else:
            sp["eval"].update(model=str(e.model), model_files=local_files_stamp(e.model), model_cfg=model_spec(c.model),
                              adapter_files=local_files_stamp(e.adapter))
        return sp

    def stage(self, name: str, kind: str, spec: dict, build: Callable[[Path], Any]) -> Artifact:
        """Build (or reuse) the artifact if ``name`` is to run, else require it in the cache."""
        if name not in self.cfg.stages:
            return self.cache.require(kind, spec, f"add '{name}' to stages to compute it")
        t0 = time.time()
        art = self.cache.get_or_build(kind, spec, build)
        rec = self.results["stages"].setdefault(name, {"seconds": 0.0, "cached": True, "dir": str(art.dir)})
        rec["seconds"] = round(rec["seconds"] + time.time() - t0, 3)
        rec["cached"] = rec["cached"] and art.cached
        rec.setdefault("key", art.key)
        return art

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        c = self.cfg
        from transformers import set_seed

        set_seed(c.seed)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        sp = self._specs = self.specs()
        if c.plan:
            return self.plan(sp)
        self.tracker = make_tracker(c.logger, OmegaConf.to_container(c, resolve=True), self.out_dir,
                                    name=run_name(c, self.out_dir))
        try:
            self._run(sp)
        finally:
            self.tracker.finish()
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        return self.results

    def _run(self, sp: dict[str, dict[str, Any]]) -> None:
        c, dev = self.cfg, self.device
        done: dict[str, Artifact] = {}

        def get(name: str) -> Artifact:
            """The artifact of stage ``name``: built if it is to run, else from the cache."""
            if name not in done:
                done[name] = builders[name]()
            return done[name]

        def datastore() -> Artifact | None:
            if "datastore" not in c.stages:
                return self.cache.require("datastore", sp["datastore"], "add 'datastore' to stages")
            ds = c.datastore
            if ds.warmup_dir:
                warm = Path(ds.warmup_dir).expanduser().resolve()
                if not warm.is_dir():
                    raise DataError(f"{warm}: warmup run not found (set by datastore.warmup_dir)")
            elif not ds.use_warmup:
                warm = self.cache.get_or_build("init_adapter", sp["init_adapter"], lambda d: S.init_adapter(
                    c, self.selector, self.cache, d)).dir
            else:
                warm = get("warmup").dir
            prep = get("prepare")
            feats = {}
            for split in ("pool", "target"):
                shard = (ds.shard, ds.num_shards) if split == "pool" else (0, 1)
                feats[split] = self.split_features(split, sp[f"{split}_features"], warm, prep.dir, *shard)
            if feats["pool"] is None or feats["target"] is None:
                self.results["stages"]["datastore"].pop("key", None)
                return None
            final = self.cache.lookup("datastore", sp["datastore"]).dir
            store = self.stage("datastore", "datastore", sp["datastore"], lambda d: S.datastore_manifest(
                feats["pool"].dir, feats["target"].dir, d, final))
            self.results["stages"]["datastore"].update(dir=str(store.dir), key=store.key)
            return store

        builders: dict[str, Callable[[], Artifact]] = {
            "prepare": lambda: self.stage("prepare", "prepare", sp["prepare"], lambda d: S.prepare(c, d)),
            "warmup": lambda: self.stage("warmup", "warmup", sp["warmup"], lambda d: S.warmup(
                c, self.selector, self.cache, get("prepare").dir, d, dev)),
            "datastore": datastore,
            "select": lambda: self.stage("select", "select", sp["select"], lambda d: S.select(
                c, get("prepare").dir, complete_store() if method in S.GRADIENT_METHODS else None,
                self.cache.get_or_build("representations", sp["representations"], lambda r: S.representations(
                    c, self.selector, self.cache, get("prepare").dir, r, dev)).dir
                if method in S.REPRESENTATION_METHODS else None, d)),
            "train": lambda: self.stage("train", "train", sp["train"], lambda d: S.train(
                c, self.cache, get("select").dir, d, dev)),
            "eval": lambda: self.stage("eval", "eval", sp["eval"], lambda d: S.evaluate(
                c, self.cache, get("prepare").dir if self.needs_prepared_eval() else None,
                None if c.eval.model else get("train").dir, d, dev)),
        }
        def complete_store() -> Path:
            store = get("datastore")
            if store is None:
                raise CacheMiss(f"the pool features are incomplete (shard {c.datastore.shard} of "
                                f"{c.datastore.num_shards} done); run the other shards, then stages=[select]")
            return store.dir

        method = c.selection.method
        for name in STAGES:
            if name in ("warmup", "datastore") and method not in S.GRADIENT_METHODS and name in c.stages:
                log.info("skipping %s: selection.method=%s needs no gradients", name, method)
                continue
            if name == "warmup" and (c.datastore.warmup_dir or not c.datastore.use_warmup):
                continue  # features come from an external run or the untuned model
            if name in c.stages:
                get(name)
        done = {k: v for k, v in done.items() if v is not None}
        self._collect(done)
        self._accounting(done, sp)
        self._finish()

    def select_spec(self, sp: dict, selection: dict[str, Any]) -> dict[str, Any]:
        if S.target_free(selection):  # the same selection (and trained model) for every target
            spec = {"pool": sp["prepare"]["pool"], "selection": selection, "seed": self.cfg.seed}
        else:
            spec = {"prepare": self.cache.lookup("prepare", sp["prepare"]).key,
                    "target_skill": self.cfg.target.get("skill"), "selection": selection, "seed": self.cfg.seed}
        if selection["method"] in S.GRADIENT_METHODS:
            spec["datastore"] = self.cache.lookup("datastore", sp["datastore"]).key
        if selection["method"] in S.REPRESENTATION_METHODS:
            spec["representations"] = self.cache.lookup("representations", sp["representations"]).key
        return spec

    def needs_prepared_eval(self) -> bool:
        """Whether an eval task reads test data the target writes at prepare time (synthetic)."""
        return "eval" in self.cfg.stages and "less_synthetic_arithmetic" in self.cfg.eval.tasks

    def split_features(self, split: str, spec: dict, warmup_dir: Path, prepare_dir: Path,
                       shard: int, num_shards: int) -> Artifact | None:
        """One split's features: this shard's chunks are extracted outside any lock (shards run in
        parallel, a killed job resumes from its chunk files); whoever completes the set assembles it."""
        art = self.cache.lookup("features", spec)
        if art.cached:
            return self.stage("datastore", "features", spec, lambda d: None)
        # pool chunks are shared by the shards of a sweep; each job extracts the (small) target alone
        work = self.cache.root / "features" / (f".work-{art.key}" if split == "pool" else f".work-{art.key}-{os.getpid()}")
        t0 = time.time()
        sf = S.SplitFeatures(self.cfg, self.selector, self.cache, warmup_dir, prepare_dir / f"{split}.jsonl",
                             split, work, self.device)
        sf.extract(shard, num_shards)
        rec = self.results["stages"].setdefault("datastore", {"seconds": 0.0, "cached": False, "dir": str(work)})
        rec["seconds"] = round(rec["seconds"] + time.time() - t0, 3)
        rec["cached"] = False
        if not (self.cache.lookup("features", spec).cached or sf.complete()
                or self.cache.lookup("features", spec).cached):
            missing = sum(len(v) for v in sf.missing(0, 1).values())
            rec.update(complete=False, shard=shard, num_shards=num_shards, missing_chunks=missing)
            log.info("%s features: shard %d of %d done, %d chunks left to other shards",
                     split, shard, num_shards, missing)
            return None
        art = self.stage("datastore", "features", spec, sf.assemble)
        shutil.rmtree(work, ignore_errors=True)
        return art

    # -- results, tracking, summary ------------------------------------------------------------
    def _collect(self, done: dict[str, Artifact]) -> None:
        r = self.results
        if "prepare" in done:
            r["data"] = json.loads((done["prepare"].dir / "data.json").read_text())
        if "datastore" in done:
            man = S.read_manifest(done["datastore"].dir)
            for split in ("pool", "target"):
                meta = json.loads((done["datastore"].dir / man[split] / "features.json").read_text())
                r.setdefault("data", {}).setdefault(split, {}).update(
                    dropped=meta["dropped"], truncated=meta.get("truncated", 0))
                if meta["dropped"]:
                    log.warning("%s: %d examples dropped %s", split, len(meta["dropped_ids"]), meta["dropped"])
            self.tracker.summary({f"data/{s}/dropped/{k}": v for s in ("pool", "target")
                                  for k, v in r["data"][s]["dropped"].items()})
        if "select" in done:
            d = done["select"].dir
            stats = json.loads((d / "selection.json").read_text())
            if S.target_free(to_plain(self.cfg.selection)):  # shares for this run's target, not the builder's
                from less.data.formats import read_examples

                prep = done.get("prepare") or self.cache.lookup("prepare", self._specs["prepare"])
                if prep.cached or "prepare" in done:
                    stats.update(S.selection_stats(self.cfg, read_examples(prep.dir / "pool.jsonl"),
                                                   read_examples(d / "selected.jsonl")))
                else:
                    stats.update(target_share=None, base_share=None)
            r["selection"] = {**stats, "ranking": str(d / "ranking.csv"),
                              "selected": str(d / "selected.jsonl"), "jaccard_vs_less": self.jaccard_vs_less(d)}
            self._track_selection(d, stats)
        if "eval" in done:
            d = done["eval"].dir
            r["eval"] = json.loads((d / "metrics.json").read_text())
            flat = flatten_metrics(r["eval"], "eval")
            self.tracker.log(flat)
            self.tracker.summary(flat)
            self.tracker.table("eval/metrics", ["task", "subtask", "metric", "value"], [
                [k.split("/")[1], k.split("/")[3] if "/subtasks/" in k else "", k.rsplit("/", 1)[1], v]
                for k, v in flat.items()])
            samples = sorted((d / "samples").glob("*.jsonl")) if (d / "samples").is_dir() else []
            if samples:
                self.tracker.artifact(f"eval-samples-{d.name}", "eval_samples", samples)
        self.tracker.log({f"stages/{n}/seconds": s["seconds"] for n, s in r["stages"].items()})

    def _accounting(self, done: dict[str, Artifact], sp: dict[str, dict[str, Any]]) -> None:
        """Tokens, epochs, repeated tokens, estimated FLOPs and wall time of this run."""
        from less.accounting import estimate, param_count

        c, r = self.cfg, self.results
        acc: dict[str, Any] = {"seconds": {n: s["seconds"] for n, s in r["stages"].items()}}
        tokens: dict[str, Any] = {}
        if "prepare" in done:
            spec = {"model": model_spec(c.model), "pool": sp["prepare"]["pool"], "chat_format": c.chat_format,
                    "max_length": c.train.max_length}
            tc = self.cache.get_or_build("token_counts", spec, lambda d: S.token_counts(c, self.cache, done["prepare"].dir, d))
            by_id = json.loads((tc.dir / "tokens.json").read_text())["by_id"]
            tokens["pool"] = sum(by_id.values())
            if "select" in done:
                tokens["selected"] = sum(by_id.get(str(json.loads(x)["id"]), 0)
                                         for x in open(done["select"].dir / "selected.jsonl"))
        read = lambda p: json.loads(p.read_text()) if p.is_file() else {}
        warm = read(done["warmup"].dir / "warmup.json") if "warmup" in done else {}
        if warm.get("n_tokens") is not None:
            tokens.update(warmup_examples=warm["n_tokens"], warmup_trained=warm["n_tokens"] * warm["epochs"],
                          warmup_repeated=warm["n_tokens"] * (warm["epochs"] - 1))
        n_ckpt, feature_tokens = 0, None
        if "datastore" in done:
            man = S.read_manifest(done["datastore"].dir)
            metas = [read(done["datastore"].dir / man[split] / "features.json") for split in ("pool", "target")]
            feature_tokens = sum(m.get("n_tokens", 0) for m in metas)
            n_ckpt = len(metas[0]["checkpoints"])
            tokens["features"] = feature_tokens
        tr = read(done["train"].dir / "train.json") if "train" in done else {}
        if tr.get("n_tokens") is not None:
            tokens.update(train_examples=tr["n_tokens"], train_trained=tr["n_tokens"] * tr["epochs"],
                          train_repeated=tr["n_tokens"] * (tr["epochs"] - 1))
        n_sel = param_count(model_path(self.selector, self.cache), bool(self.selector.trust_remote_code))
        n_mod = param_count(model_path(c.model, self.cache), bool(c.model.trust_remote_code))
        acc.update(tokens=tokens, epochs={"warmup": warm.get("epochs"), "train": tr.get("epochs")},
                   params={"selector": n_sel, "model": n_mod},
                   **estimate(n_sel, n_mod, warm.get("n_tokens"), warm.get("epochs") or 0, feature_tokens, n_ckpt,
                              tr.get("n_tokens"), tr.get("epochs") or 0))
        r["accounting"] = acc
        self.tracker.summary({k: v for k, v in flatten_metrics(acc, "accounting").items() if v is not None})

    def plan(self, sp: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Dry run: which stages of this job are cached, which would run, and their estimated cost."""
        from less.accounting import estimate, param_count

        c = self.cfg
        method = c.selection.method
        kinds = {"prepare": ("prepare", "prepare"), "warmup": ("warmup", "warmup"),  # (artifact kind, spec)
                 "datastore": ("datastore", "datastore"), "select": ("select", "select"),
                 "train": ("train", "train"), "eval": ("eval", "eval")}
        status = {}
        for name in STAGES:
            if name not in c.stages or (name in ("warmup", "datastore") and method not in S.GRADIENT_METHODS) \
                    or (name == "warmup" and (c.datastore.warmup_dir or not c.datastore.use_warmup)):
                continue
            kind, key = kinds[name]
            status[name] = "cached" if self.cache.lookup(kind, sp[key]).cached else "to run"
        prep = self.cache.lookup("prepare", sp["prepare"])
        pool_tokens = None
        if prep.cached:  # ~4 characters per token until the token counts are known
            chars = sum(len(line) for line in open(prep.dir / "pool.jsonl", encoding="utf-8"))
            pool_tokens = chars // 4
        frac = 1.0 if method == "full" else (c.selection.get("fraction") or 0.05)

        def params(m: DictConfig) -> int | None:  # without building a tiny model that is not built yet
            if m.kind == "tiny" and not self.cache.lookup("model", model_spec(m)).cached:
                return None
            return param_count(model_path(m, self.cache), bool(m.trust_remote_code))

        n_sel, n_mod = params(self.selector), params(c.model)
        ds = c.datastore
        n_ckpt = len(ds.checkpoints) if ds.checkpoints else (1 if not ds.use_warmup else c.warmup.epochs)
        todo = lambda stage, v: v if status.get(stage) == "to run" else None
        est = estimate(n_sel, n_mod,
                       todo("warmup", pool_tokens and int(pool_tokens * c.warmup.fraction)), c.warmup.epochs,
                       todo("datastore", pool_tokens), n_ckpt,
                       todo("train", pool_tokens and int(pool_tokens * frac)), c.train.epochs)
        plan = {"job": run_name(c, self.out_dir), "stages": status, "pool_tokens_estimate": pool_tokens, **est}
        write_json_atomic(self.out_dir / "plan.json", plan)
        cost = ", ".join(f"{k} {v:.2g}" for k, v in est["flops"].items() if v)
        print(f"plan {plan['job']}: " + ", ".join(f"{k} {v}" for k, v in status.items())
              + (f" | remaining FLOPs: {cost}" if cost else "") + (
                  f" (~{est['gpu_hours_h100_at_40pct_mfu']:.2g} H100-hours)" if est["gpu_hours_h100_at_40pct_mfu"] else ""))
        return plan

    def jaccard_vs_less(self, select_dir: Path) -> float | None:
        """Overlap of this selection with the LESS selection of the same configuration, if cached."""
        spec = self._specs.get("select_less")
        if spec is None:
            return None
        less = self.cache.lookup("select", spec)
        if not less.cached:
            return None
        ids = lambda p: {json.loads(line)["id"] for line in open(p / "selected.jsonl")}
        a, b = ids(select_dir), ids(less.dir)
        return len(a & b) / len(a | b) if a | b else None

    def _track_selection(self, d: Path, stats: dict[str, Any]) -> None:
        t = self.tracker
        t.summary({f"selection/{k}": v for k, v in stats.items()
                   if isinstance(v, (int, float, str)) or v is None})
        t.table("selection/by_source", ["source", "n"], [[k, v] for k, v in stats["by_source"].items()])
        t.histogram("selection/scores", np.load(d / "scores.npy"))
        with open(d / "ranking.csv") as fh:
            rows = [line.rstrip("\n").split(",") for line in fh][1:101]
        t.table("selection/top", ["rank", "id", "source", "score"],
                [[int(a), b, c, float(s)] for a, b, c, s in rows])
        t.artifact(f"ranking-{d.name}", "ranking", [d / "ranking.csv", d / "selection.json"])
        t.artifact(f"selected-{d.name}", "selection", [d / "selected.jsonl"])

    def _finish(self) -> None:
        r = self.results
        r["config"] = {"name": self.cfg.name, "model": self.cfg.model.name,
                       "selector": self.selector.name, "pool": self.cfg.pool.name,
                       "target": self.cfg.target.name, "stages": list(self.cfg.stages)}
        r["wandb"] = {"mode": self.tracker.mode, "dir": self.tracker.dir}
        write_json_atomic(self.out_dir / "results.json", r)
        print(summary(r, self.out_dir / "results.json"))


def summary(r: dict[str, Any], path: Path) -> str:
    lines = ["", "== LESS run summary =="]
    pool = r.get("data", {}).get("pool")
    if pool:
        lines.append(f"pool: {pool['n']} examples from {len(pool['by_source'])} sources"
                     + (f"; dropped {pool['dropped']}" if pool.get("dropped") else ""))
    tgt = r.get("data", {}).get("target")
    if tgt:
        lines.append(f"target: {tgt['name']}, {tgt['n']} examples in {len(tgt['by_subtask'])} subtasks"
                     + (f"; dropped {tgt['dropped']}" if tgt.get("dropped") else ""))
    sel = r.get("selection")
    if sel:
        detail = f", dim {sel['proj_dim']}" if sel.get("proj_dim") else ""
        lines.append(f"selected: {sel['n_selected']} of {sel['n_ranked']} ({sel['method']}{detail})")
        if sel.get("jaccard_vs_less") is not None and sel["method"] != "less":
            lines.append(f"overlap with the LESS selection (Jaccard): {sel['jaccard_vs_less']:.3f}")
        if sel.get("target_share") is not None:
            ratio = sel["target_share"] / sel["base_share"] if sel["base_share"] else float("nan")
            lines.append(f"target skill '{sel['target_skill']}': {sel['target_share']:.1%} of the selection"
                         f" vs {sel['base_share']:.1%} of the pool ({ratio:.1f}x)")
    for task, ms in r.get("eval", {}).items():
        subs = ms.get("subtasks", {})
        lines.append(f"eval {task}: " + ", ".join(f"{m}={v:.4f}" for m, v in ms.items()
                                                   if m != "subtasks" and not m.endswith("stderr"))
                     + (f" ({len(subs)} subtasks in results.json)" if subs else ""))
    for name, s in r["stages"].items():
        lines.append(f"stage {name:<9} {s['seconds']:8.1f}s  {'cached' if s['cached'] else 'computed'}")
    w = r.get("wandb", {})
    lines.append(f"wandb: {w.get('mode')} run at {w.get('dir')}" if w.get("mode") else "wandb: off")
    lines.append(f"results: {path}")
    return "\n".join(lines)

"""Run lm-eval on a model and flatten its results per task and per subtask.

The model is the trained target model (``eval.model: null``: the train stage's LoRA adapter on its
base, loaded without merging, or its full fine-tune), the untrained configured model
(``eval.model: base``), or any path / hub id (``eval.model=...``, optional ``eval.adapter=<dir>``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from less.errors import ConfigError
from less.evaluation import target_loss
from less.evaluation.tasks import build_tasks, registered

log = logging.getLogger(__name__)
PACKAGE_TASKS = Path(__file__).resolve().parents[1] / "tasks"


def resolve_model(cfg: DictConfig, base: str | None, train_dir: Path | None) -> tuple[str, str | None]:
    """(base model path or hub id, adapter dir or None) to evaluate; ``base`` is where the
    configured ``model`` loads from."""
    e = cfg.eval
    if e.model and e.model != "base":
        return str(e.model), (str(Path(e.adapter).expanduser().resolve()) if e.adapter else None)
    if e.model == "base":
        return base, None
    if train_dir is None:
        raise ConfigError("eval.model is null (evaluate the trained model) but no train artifact was given")
    if (train_dir / "adapter").is_dir():
        return base, str(train_dir / "adapter")
    return str(train_dir / "model"), None


def _wrap_package_tasks(e: DictConfig, target_dir: Path | None, out: Path) -> None:
    """Tasks shipped by the package whose data a target writes (the synthetic one)."""
    if target_dir is None:
        return
    for data in sorted((target_dir / "eval_data").glob("*.jsonl")):
        base = PACKAGE_TASKS / f"{data.stem}.yaml"
        if data.stem in e.tasks and base.is_file():
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{data.stem}.yaml").write_text(
                f"include: {base}\ndataset_kwargs:\n  data_files:\n    test: {data.resolve()}\n")


def make_lm(cfg: DictConfig, base: str, adapter: str | None, tokenizer, device: torch.device):
    e = cfg.eval
    dtype = e.dtype if e.dtype != "auto" else ("float32" if device.type == "cpu" else cfg.model.dtype)
    trust = bool(cfg.model.trust_remote_code)
    if e.backend == "vllm":
        try:
            from lm_eval.models.vllm_causallms import VLLM
        except ImportError as err:
            raise ConfigError(f"eval.backend=vllm but vllm is not importable ({err})") from None
        return VLLM(pretrained=base, lora_local_path=adapter, dtype=dtype, batch_size="auto",
                    trust_remote_code=trust)
    if e.backend != "hf":
        raise ConfigError(f"eval.backend must be hf or vllm, got {e.backend!r}")
    from lm_eval.models.huggingface import HFLM

    from less import distributed

    if distributed.world() > 1:
        # rank 0 of a torchrun job evaluates alone: given a path, lm-eval would see the job's
        # processes and split the requests across them (waiting for ranks that are not evaluating);
        # given a model it stays in one process. The model is loaded as lm-eval loads a path.
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, dtype), trust_remote_code=trust)
        if adapter:
            model = PeftModel.from_pretrained(model, adapter)
        return HFLM(pretrained=model.to(device).eval(), tokenizer=tokenizer, batch_size=e.batch_size)
    return HFLM(pretrained=base, peft=adapter, tokenizer=tokenizer, dtype=dtype, device=str(device),
                batch_size=e.batch_size, trust_remote_code=trust)


def flatten(res: dict[str, Any], built, plain: list[str]) -> dict[str, Any]:
    """{task: {metric: v, "subtasks": {name: {metric: v}}}} from lm-eval's results."""
    def metrics(d: dict[str, Any]) -> dict[str, float]:
        out = {}
        for k, v in d.items():
            if "," in k and isinstance(v, (int, float)) and not isinstance(v, bool):
                m, filt = k.split(",", 1)
                out[m if filt == "none" else f"{m}_{filt}"] = float(v)
        return out

    results, groups = res["results"], res.get("group_subtasks", {})
    flat: dict[str, Any] = {}
    for b in built:
        flat[b.name] = {**metrics(results.get(b.group, {})),
                        "subtasks": {label: metrics(results[t]) for t, label in b.subtasks.items() if t in results}}
    for t in plain:
        entry = metrics(results.get(t, {}))
        subs = groups.get(t, [])
        if subs:
            entry["subtasks"] = {results.get(s, {}).get("alias", s).strip(" -"): metrics(results.get(s, {}))
                                 for s in subs if s in results}
        flat[t] = entry
    return flat


def task_manager(paths: list[str], names: list[str]):
    """lm-eval's task index over ``paths``, without its ~13,000 built-in tasks when every task in
    ``names`` is found there (indexing the built-ins takes ~30 s); with them otherwise."""
    from lm_eval.tasks import TaskManager

    if paths:
        local = TaskManager(include_path=paths, include_defaults=False)
        if all(n in local.all_tasks for n in names):
            return local
    log.info("indexing lm-eval's built-in tasks for %s", [n for n in names])
    return TaskManager(include_path=paths or None)


def target_losses(lm, manager, built, plain: list[str], e: DictConfig, seed: int) -> list[dict[str, Any]]:
    """Per-example target losses (less.evaluation.target_loss) of every task evaluated, each row
    naming its user-facing task and subtask as ``flatten`` names them."""
    where: dict[str, tuple[str, str]] = {}
    tasks: dict[str, Any] = {}
    for b in built:
        loaded = manager.load([b.group])["tasks"]
        for name, task in loaded.items():
            where[name] = (b.name, b.subtasks.get(name, name))
            tasks[name] = task
    for t in plain:  # lm-eval's own tasks: a subtask is labelled by its alias, as lm-eval's results (flatten)
        for name, task in manager.load([t])["tasks"].items():
            where[name] = (t, str(task.config.task_alias or name).strip(" -") if name != t else t)
            tasks[name] = task
    return target_loss.evaluate(lm, tasks, where, e.limit, e.num_fewshot, seed)


def write_examples(path: Path, examples: list[dict[str, Any]], samples: dict[str, list[dict[str, Any]]]) -> None:
    """One line per evaluated example: its id (task, subtask, doc_id), the digest of its prompt and
    answer, its target loss and lm-eval's per-example metrics (``metrics``; {} without accuracy)."""
    per_doc: dict[tuple[str, int], dict[str, float]] = {}
    for lm_task, rows in samples.items():
        for s in rows:
            suffix = "" if s.get("filter", "none") == "none" else f"_{s['filter']}"
            per_doc.setdefault((lm_task, s["doc_id"]), {}).update(
                {f"{m}{suffix}": s[m] for m in s.get("metrics", []) if isinstance(s.get(m), (int, float))})
    with open(path, "w", encoding="utf-8") as fh:
        for r in examples:
            row = {k: v for k, v in r.items() if k != "lm_task"}
            fh.write(json.dumps({**row, "metrics": per_doc.get((r["lm_task"], r["doc_id"]), {})}) + "\n")


def evaluate(cfg: DictConfig, out: Path, device: torch.device, base: str | None, target_dir: Path | None,
             train_dir: Path | None) -> dict[str, Any]:
    import lm_eval
    from transformers import AutoTokenizer

    e = cfg.eval
    base, adapter = resolve_model(cfg, base, train_dir)
    tok_src = adapter if adapter and (Path(adapter) / "tokenizer_config.json").is_file() else base
    tokenizer = AutoTokenizer.from_pretrained(tok_src, trust_remote_code=bool(cfg.model.trust_remote_code))
    task_dir = out / "tasks"
    built = build_tasks(e, cfg.data, task_dir, tokenizer)
    _wrap_package_tasks(e, target_dir, task_dir)
    plain = [t for t in e.tasks if t not in registered(e)]
    names = [b.group for b in built] + plain
    manager = task_manager([str(task_dir)] * task_dir.is_dir() + [*map(str, e.include_paths)], names)
    lm = make_lm(cfg, base, adapter, tokenizer, device)
    metrics: dict[str, Any] = {}
    samples: dict[str, list[dict[str, Any]]] = {}
    if e.accuracy:
        res = lm_eval.simple_evaluate(
            model=lm, tasks=names, num_fewshot=e.num_fewshot, limit=e.limit, task_manager=manager, log_samples=True,
            gen_kwargs=f"max_gen_toks={e.max_gen_toks}" if e.max_gen_toks else None,
            random_seed=cfg.seed, numpy_random_seed=cfg.seed, torch_random_seed=cfg.seed, fewshot_random_seed=cfg.seed)
        metrics = flatten(res, built, plain)
        samples = res.get("samples", {})
        if e.log_samples:
            (out / "samples").mkdir()
            for task, rows in samples.items():
                with open(out / "samples" / f"{task}.jsonl", "w", encoding="utf-8") as fh:
                    for s in rows:
                        fh.write(json.dumps(s, ensure_ascii=False, default=str) + "\n")
    examples: list[dict[str, Any]] = []
    if e.target_loss:
        examples = target_losses(lm, manager, built, plain, e, cfg.seed)
        for task, tl in target_loss.summarize(examples).items():
            entry = metrics.setdefault(task, {})
            subs = tl.pop("subtasks")
            entry.update(tl)
            for label, m in subs.items() if list(subs) != [task] else ():  # a task without subtasks
                entry.setdefault("subtasks", {}).setdefault(label, {}).update(m)
    if examples:  # rows are the target-loss requests: with eval.target_loss=false there is no file (and no pairing)
        write_examples(out / "examples.jsonl", examples, samples)
    (out / "model.json").write_text(json.dumps({"model": base, "adapter": adapter, "backend": e.backend}, indent=2))
    # what results.json and W&B record beside the metrics, e.g. tydiqa_shot_source
    (out / "info.json").write_text(json.dumps({f"{b.name}_{k}": v for b in built for k, v in b.info.items()},
                                              indent=2, ensure_ascii=False))
    return metrics

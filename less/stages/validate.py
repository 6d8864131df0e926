"""The ``validate`` step: counterfactual validation of a selection method's scores (the linear
datamodeling score of TRAK; docs/measuring.md).

- ``validation_subsets``: M = ``validate.subsets`` seeded random subsets of the pool, each a share
  ``validate.alpha`` of it (selection method ``subset``, index k = 0..M-1), each trained by the
  ``train`` stage and evaluated by target loss (``eval.accuracy=false``). Every subset's training
  and evaluation is an ordinary artifact: cached, shared with any run that names the same subset
  (``selection=subset selection.index=k selection.fraction=<alpha>``: its selection and training;
  its evaluation too with ``eval.accuracy=false``) and with every method
  validated against them, so a killed validation resumes at the first missing subset. The
  artifact holds which pool examples each subset kept and the target loss measured after it.
- ``lds``: for this run's selection method, LDS = Spearman(sum of the method's scores over S_k,
  -target loss after training on S_k) across the M subsets, with a seeded bootstrap interval over
  subsets (less.stats.lds), per eval task; results.json ``validate``.
"""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

from less.cache import write_json_atomic
from less.data.formats import read_examples
from less.errors import ConfigError, DataError, require
from less.graph import STEPS, Context, Inputs, Stage
from less.paths import conf_dir
from less.selection import registry
from less.stats import lds


def subset_cfg(cfg: DictConfig, index: int) -> DictConfig:
    """The run config that trains and evaluates validation subset ``index``: this config with
    ``selection=subset`` (its preset, at ``validate.alpha``), target loss only, every step up to eval."""
    sel = OmegaConf.load(conf_dir() / "selection" / "subset.yaml")
    sel.fraction, sel.index = float(cfg.validate.alpha), index
    c: DictConfig = copy.deepcopy(cfg)
    with open_dict(c):
        c.selection = sel
        c.eval.accuracy, c.eval.target_loss, c.eval.base = False, True, False
        c.eval.model = None
        c.stages = [s for s in STEPS if s != "validate"]
    return c


def _subsets_config(ctx: Context) -> dict[str, Any]:
    v = ctx.cfg.validate
    return {"subsets": v.subsets, "alpha": float(v.alpha),
            "evals": [ctx.artifact_for(subset_cfg(ctx.cfg, k), "eval").key for k in range(v.subsets)]}


def build_subsets(ctx: Context, inputs: Inputs, out: Path) -> None:
    from tqdm.auto import tqdm

    v = ctx.cfg.validate
    ids = [str(r["id"]) for r in read_examples(inputs["pool"].dir / "pool.jsonl")]
    pos = {i: n for n, i in enumerate(ids)}
    members = np.zeros((v.subsets, len(ids)), dtype=bool)
    losses: dict[str, list[float]] = {}
    for k in tqdm(range(v.subsets), desc=f"validation subsets (alpha={v.alpha})", unit="subset"):
        c = subset_cfg(ctx.cfg, k)
        ev = ctx.get_for(c, "eval")
        sel = ctx.artifact_for(c, "select")
        for r in read_examples(sel.dir / "selected.jsonl"):
            members[k, pos[str(r["id"])]] = True
        for task, m in json.loads((ev.dir / "metrics.json").read_text()).items():
            losses.setdefault(task, []).append(m["target_loss"])
    np.save(out / "members.npy", members)
    (out / "ids.json").write_text(json.dumps(ids))
    write_json_atomic(out / "subsets.json", {"subsets": v.subsets, "alpha": float(v.alpha),
                                             "sizes": members.sum(axis=1).tolist(), "target_loss": losses})


def task_of(cfg: DictConfig) -> str:
    """The eval task whose LDS is the headline (``validate.task``, else the first of ``eval.tasks``)."""
    return str(cfg.validate.task or cfg.eval.tasks[0])


def scores_of(select_dir: Path, ids: list[str]) -> tuple[np.ndarray, list[str]]:
    """The method's score of every pool example, in pool order, and the ids it left unscored.
    Scores are the full-precision ``scores.npy``, matched to ids through ``ranking.csv`` (which
    lists them in ``ranking_order(scores)``; its scores are rounded to 8 digits, which could tie
    examples that are not tied). Examples the method left unranked (e.g. the over-long ones that
    gradient and representation methods drop) count as the mean score, so they move no subset's
    sum relative to the others; a ranked example that is not in the pool is an error."""
    from less.selection.scoring import ranking_order

    scores = np.load(select_dir / "scores.npy")
    with open(select_dir / "ranking.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    order = ranking_order(scores)
    if len(rows) != len(scores) or any(f"{scores[i]:.8g}" != r["score"] for i, r in zip(order, rows)):
        raise DataError(f"{select_dir}: ranking.csv and scores.npy disagree (a damaged selection artifact)")
    got = {r["id"]: float(scores[i]) for i, r in zip(order, rows)}
    extra = sorted(set(got) - set(ids))
    if extra:
        raise DataError(f"{select_dir / 'ranking.csv'}: {len(extra)} ranked examples are not in the pool "
                        f"(e.g. {extra[0]}): a selection of another pool")
    missing = [i for i in ids if i not in got]
    mean = float(np.mean(list(got.values())))
    return np.array([got.get(i, mean) for i in ids]), missing


def build_lds(ctx: Context, inputs: Inputs, out: Path) -> None:
    v, sub = ctx.cfg.validate, inputs["subsets"].dir
    ids = json.loads((sub / "ids.json").read_text())
    members = np.load(sub / "members.npy")
    losses = json.loads((sub / "subsets.json").read_text())["target_loss"]
    scores, unscored = scores_of(inputs["select"].dir, ids)
    summed = members.astype(np.float64) @ scores
    try:
        by_task = {task: lds(scores, members, ys, seed=ctx.cfg.seed, n_boot=v.bootstrap).as_dict()
                   for task, ys in losses.items()}
    except ValueError as e:  # a NaN score or target loss
        raise DataError(f"{inputs['select'].dir} / {sub}: {e}") from None
    task = task_of(ctx.cfg)
    if task not in by_task:
        raise DataError(f"{sub / 'subsets.json'}: no target loss of eval task {task} (validate.task)")
    write_json_atomic(out / "lds.json", {
        "method": ctx.cfg.selection.method, "task": task, **{k: by_task[task][k] for k in ("value", "stderr", "ci_low", "ci_high")},
        "subsets": int(len(members)), "alpha": float(v.alpha), "by_task": by_task,
        "unscored": {"n": len(unscored), "ids": unscored, "counted_as": "the mean score"},
        "per_subset": {"summed_score": summed.tolist(), "target_loss": losses}})


def report(ctx: Context, art) -> dict[str, Any]:
    d = json.loads((art.dir / "lds.json").read_text())
    return {"validate": {"method": d["method"], "task": d["task"], "lds": d["value"], "stderr": d["stderr"],
                         "ci_low": d["ci_low"], "ci_high": d["ci_high"], "subsets": d["subsets"], "alpha": d["alpha"],
                         "unscored": d.get("unscored", {}).get("n", 0),
                         "by_task": {t: {"lds": e["value"], "ci_low": e["ci_low"], "ci_high": e["ci_high"]}
                                     for t, e in d["by_task"].items()},
                         "file": str(art.dir / "lds.json")}}


def summary(r: dict[str, Any]) -> list[str]:
    v = r.get("validate")
    if not v:
        return []
    note = f" ({v['unscored']} examples the method left unranked count as its mean score)" if v.get("unscored") else ""
    return [f"LDS of {v['method']} on {v['task']} over {v['subsets']} random subsets (alpha={v['alpha']}): "
            f"{v['lds']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]{note}"]


def track(ctx: Context, art, reported: dict[str, Any], tracker) -> None:
    v = reported["validate"]
    tracker.summary({f"validate/{k}": v[k] for k in ("lds", "stderr", "ci_low", "ci_high", "subsets", "alpha")})
    d = json.loads((art.dir / "lds.json").read_text())
    ps = d["per_subset"]
    tracker.table("validate/subsets", ["subset", "summed_score", "target_loss"],
                  [[k, s, loss] for k, (s, loss) in enumerate(zip(ps["summed_score"], ps["target_loss"][d["task"]]))])


def check(cfg: DictConfig) -> None:
    """``validate.*``; with validate in ``stages``, a selection method whose scores rank the pool."""
    v = cfg.validate
    require(isinstance(v.subsets, int) and not isinstance(v.subsets, bool) and v.subsets >= 3,
            f"validate.subsets must be an integer >= 3 (random subsets to train), got {v.subsets!r}")
    require(isinstance(v.alpha, (int, float)) and not isinstance(v.alpha, bool) and 0 < v.alpha < 1,
            f"validate.alpha must be in (0, 1) (each subset's share of the pool), got {v.alpha!r}")
    require(isinstance(v.bootstrap, int) and v.bootstrap >= 100,
            f"validate.bootstrap must be an integer >= 100 (resamples of the interval), got {v.bootstrap!r}")
    if "validate" not in cfg.stages:
        return
    require(v.task is None or v.task in cfg.eval.tasks, f"validate.task={v.task!r} is not in eval.tasks {list(cfg.eval.tasks)}")
    require(bool(cfg.eval.target_loss), "stages has validate but eval.target_loss is false: the LDS is measured by target loss")
    if not registry.get(cfg.selection.method).scored:
        raise ConfigError(f"selection.method={cfg.selection.method} has no scores to validate (LDS): "
                          "choose a method that ranks the pool (less, random, bm25, dsir, rds, kcenter, length, ...)")


VALIDATION_SUBSETS = Stage(
    "validation_subsets", step="validate", build=build_subsets, inputs=lambda ctx: {"pool": "pool"},
    config=_subsets_config, wandb_type="validation", wandb_files=("subsets.json",))
LDS = Stage(
    "lds", step="validate", build=build_lds, inputs=lambda ctx: {"select": "select", "subsets": "validation_subsets"},
    config=lambda ctx: {"method": ctx.cfg.selection.method, "task": task_of(ctx.cfg), "bootstrap": ctx.cfg.validate.bootstrap,
                        "seed": ctx.cfg.seed},
    report=report, summary=summary, track=track, wandb_type="validation", wandb_files=("lds.json",), check=check)

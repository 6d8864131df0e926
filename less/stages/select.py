"""The ``select`` step: any registered selection method (less.selection.registry) scores the pool;
one global sort; the top ``selection.fraction`` of the whole pool (or ``selection.k``) is selected.
Every method writes the same ranking, selection and report. A ``selection.k`` beyond the ranked
pool selects all of it, with a warning (selection.json ``warnings``; the runner lists every
stage's warnings in results.json and the summary). The run directory links to the selection."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

from less.cache import to_plain, write_json_atomic
from less.data import planted, sources
from less.data.formats import read_examples, write_jsonl
from less.errors import require
from less.graph import Context, Inputs, Stage
from less.selection import registry
from less.selection.registry import Request, Scored


def k_warnings(k: int | None, n_ranked: int) -> list[str]:
    """The warning for a ``selection.k`` that asks for more examples than were ranked."""
    if k is not None and k > n_ranked:
        return [f"selection.k={k} exceeds the {n_ranked} ranked pool examples: the whole pool is selected"]
    return []


def build(ctx: Context, inputs: Inputs, out: Path) -> None:
    from less.selection.scoring import ranking_order

    s, m = ctx.cfg.selection, ctx.method
    pool_rows = read_examples(inputs["pool"].dir / "pool.jsonl")
    pool = {str(r["id"]): r for r in pool_rows}
    target = read_examples(inputs["target"].dir / "target.jsonl") if "target" in inputs else None
    req = Request(s, ctx.cfg.seed, pool_rows, target,
                  datastore=inputs["datastore"].dir if "datastore" in inputs else None,
                  representations=inputs["representations"].dir if "representations" in inputs else None,
                  influence=inputs["influence"].dir if "influence" in inputs else None)
    got = m.score(req)
    res = got if isinstance(got, Scored) else Scored(got)
    scores = np.asarray(res.scores, dtype=np.float64)
    ids = [str(i) for i in res.ids] if res.ids is not None else list(pool)
    if len(ids) != len(scores):
        raise RuntimeError(f"selection method {m.name} gave {len(scores)} scores for {len(ids)} examples")
    n_sel = res.n_selected if res.n_selected is not None else req.n_select(len(scores))
    order = ranking_order(scores)  # the ranking file lists every row, so one full sort serves both
    with open(out / "ranking.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["rank", "id", "source", "score"])
        for rank, i in enumerate(order, 1):
            w.writerow([rank, ids[i], pool[ids[i]].get("dataset"), f"{scores[i]:.8g}"])
    selected = [pool[ids[i]] for i in order[:n_sel]]
    write_jsonl(out / "selected.jsonl", selected)
    np.save(out / "scores.npy", scores)
    write_json_atomic(out / "selection.json", {
        "method": m.name, "n_selected": n_sel, "n_ranked": len(order),
        "by_source": sources.counts(selected, "dataset"),
        "subtasks": None if target is None else list(dict.fromkeys(r["subtask"] for r in target)), **res.extra,
        "warnings": k_warnings(s.k, len(order)) if res.n_selected is None else []})


def skill_shares(ctx: Context, select_dir: Path) -> dict[str, Any]:
    """The target skill's share of the selection and of the pool, when the pool carries ``skill``
    labels (the synthetic one does) and the target names one; computed for this run's target, so
    a target-free selection reports the shares of whichever target it serves."""
    skill, pool = ctx.cfg.target.get("skill"), ctx.artifact("pool")
    none = {"target_skill": None, "target_share": None, "base_share": None}
    if skill is None or not pool.cached:
        return none
    rows = read_examples(pool.dir / "pool.jsonl")
    if not all("skill" in r for r in rows):
        return none
    selected = read_examples(select_dir / "selected.jsonl")
    share = lambda xs: sum(r["skill"] == skill for r in xs) / len(xs)  # noqa: E731
    return {"target_skill": skill, "target_share": share(selected), "base_share": share(rows)}


def planted_recovery(ctx: Context, select_dir: Path, n_selected: int) -> dict[str, Any]:
    """Precision@k of the ranking for the held-out items planted in the pool (less.data.planted),
    when the pool has them."""
    from less.stages.warmup import needs_warmup, warmup_indices

    pool = ctx.artifact("pool")
    if planted.spec(ctx.cfg) is None or not pool.cached:
        return {}
    rows = read_examples(pool.dir / "pool.jsonl")
    ids = {str(r["id"]) for r in rows if r.get("planted")}
    with open(select_dir / "ranking.csv", newline="") as fh:
        ranked = [r["id"] for r in csv.DictReader(fh)]
    got = {"rendering": ctx.cfg.plant.rendering, **planted.recovery(ranked, ids, n_selected)}
    # the warmup slice is drawn from the whole pool (as the reference draws it), planted rows included
    w = ctx.cfg.warmup
    got["in_warmup"] = sum(str(rows[i]["id"]) in ids for i in warmup_indices(len(rows), w.fraction, w.sample_seed)) \
        if needs_warmup(ctx) else None
    return {"planted": got}


def jaccard_vs_less(ctx: Context, select_dir: Path) -> float | None:
    """Overlap of this selection with the default LESS selection of the same configuration (same
    fraction / k; Adam, normalised features where the method fixes its own, as ``selection=trak``
    does), if that one is in the cache."""
    from less.paths import conf_dir

    defaults = conf_dir() / "selection" / "less.yaml"
    if not defaults.is_file():
        return None
    less = OmegaConf.load(defaults)
    less.fraction, less.k = ctx.cfg.selection.get("fraction"), ctx.cfg.selection.get("k")
    cfg: DictConfig = copy.deepcopy(ctx.cfg)
    with open_dict(cfg):
        cfg.selection = less
        if ctx.method.features is not None:  # its preset set its own features (trak): LESS's are Adam, normalised
            cfg.datastore.gradient_type, cfg.datastore.normalize = "adam", True
    other = ctx.artifact_for(cfg, "select")
    if not other.cached:
        return None
    ids = lambda p: {json.loads(line)["id"] for line in open(p / "selected.jsonl")}  # noqa: E731
    a, b = ids(select_dir), ids(other.dir)
    return len(a & b) / len(a | b) if a | b else None


def report(ctx: Context, art) -> dict[str, Any]:
    d = art.dir
    stats = json.loads((d / "selection.json").read_text())
    if "warnings" not in stats:  # built before selection.json had them
        stats["warnings"] = k_warnings(ctx.cfg.selection.k, stats["n_ranked"]) if stats["n_selected"] == stats["n_ranked"] else []
    return {"selection": {**stats, **skill_shares(ctx, d), **planted_recovery(ctx, d, stats["n_selected"]),
                          "ranking": str(d / "ranking.csv"),
                          "selected": str(d / "selected.jsonl"), "jaccard_vs_less": jaccard_vs_less(ctx, d)}}


def summary(r: dict[str, Any]) -> list[str]:
    sel = r.get("selection")
    if not sel:
        return []
    detail = f", dim {sel['proj_dim']}" if sel.get("proj_dim") else ""
    lines = [f"selected: {sel['n_selected']} of {sel['n_ranked']} ({sel['method']}{detail})"]
    if sel.get("jaccard_vs_less") is not None and sel["method"] != "less":
        lines.append(f"overlap with the LESS selection (Jaccard): {sel['jaccard_vs_less']:.3f}")
    if sel.get("target_share") is not None:
        ratio = sel["target_share"] / sel["base_share"] if sel["base_share"] else float("nan")
        lines.append(f"target skill '{sel['target_skill']}': {sel['target_share']:.1%} of the selection"
                     f" vs {sel['base_share']:.1%} of the pool ({ratio:.1f}x)")
    p = sel.get("planted")
    if p:
        lines.append(f"planted ({p['rendering']}): {p['hits']} of the top {p['k']} are planted test items, precision "
                     f"{p['precision']:.2f} [{p['ci_low']:.2f}, {p['ci_high']:.2f}] vs base rate {p['base_rate']:.3f} "
                     f"({p['lift']:.1f}x); {p['in_selection']} in the selection of {p['n_selected']}")
    return lines


def track(ctx: Context, art, reported: dict[str, Any], tracker) -> None:
    d = art.dir
    stats = reported["selection"]
    tracker.summary({f"selection/{k}": v for k, v in stats.items() if isinstance(v, (int, float, str)) or v is None})
    if stats.get("planted"):
        p = stats["planted"]
        tracker.summary({f"selection/planted/{k}": v for k, v in p.items()})  # load_wandb reads them back nested
    tracker.table("selection/by_source", ["source", "n"], [[k, v] for k, v in stats["by_source"].items()])
    tracker.histogram("selection/scores", np.load(d / "scores.npy"))
    with open(d / "ranking.csv") as fh:
        rows = [line.rstrip("\n").split(",") for line in fh][1:101]
    tracker.table("selection/top", ["rank", "id", "source", "score"], [[int(a), b, c, float(s)] for a, b, c, s in rows])
    n = int(ctx.cfg.logger.get("inspect_top") or 0)
    if n and stats["method"] == "less":  # the paper's qualitative view: each subtask's top examples
        from less.selection.inspect import COLUMNS, top_by_subtask

        tracker.table("selection/top_by_subtask", list(COLUMNS),
                      [[r[c] for c in COLUMNS] for r in top_by_subtask(d, n=n)])


def inputs(ctx: Context) -> dict[str, str]:
    m = ctx.method
    out = {"pool": "pool"} if m.target_free else {"pool": "pool", "target": "target"}
    if m.needs == "gradients":
        out["datastore"] = "datastore"
    if m.needs in ("representations", "influence"):
        out[m.needs] = m.needs
    return out


def check(cfg: DictConfig) -> None:
    """``selection.*``: a registered method (and its own ``check``), the share or count, and the
    datastore dims and checkpoints it scores with."""
    s, ds = cfg.selection, cfg.datastore
    method = registry.get(s.method)  # names the registered methods if unknown
    if method.check is not None:
        method.check(cfg)
    if method.features is not None:
        from less.selection.gradient import require_features

        require_features(cfg, method.name, method.features)
    if "subtask_reduce" in s:
        require(s.subtask_reduce in ("max", "mean"), f"selection.subtask_reduce must be max or mean, got {s.subtask_reduce!r}")
    if s.k is None:
        require(s.fraction is not None and 0 < s.fraction <= 1,
                f"selection.fraction must be in (0, 1] (or set selection.k), got {s.fraction}")
    else:
        require(isinstance(s.k, int) and s.k >= 1, f"selection.k must be a positive integer, got {s.k}")
    if s.get("proj_dim") is not None and not isinstance(ds.projection, str):
        dims = list(ds.projection.dims)
        require(s.proj_dim in dims, f"selection.proj_dim={s.proj_dim} is not in datastore.projection.dims {dims}")
    if s.get("checkpoints") is not None and ds.use_warmup and not ds.warmup_dir:
        avail = list(ds.checkpoints) if ds.checkpoints is not None else list(range(1, cfg.warmup.epochs + 1))
        require(bool(s.checkpoints) and set(s.checkpoints) <= set(avail),
                f"selection.checkpoints {list(s.checkpoints)} must be a subset of {avail}")


SELECT = Stage(
    "select", step="select", build=build, inputs=inputs, report=report, track=track, summary=summary,
    links=("selected.jsonl", "ranking.csv"),
    wandb_type="selection", wandb_files=("selection.json", "selected.jsonl", "ranking.csv"),
    config=lambda ctx: {"selection": to_plain(ctx.cfg.selection), "seed": ctx.cfg.seed}, check=check)

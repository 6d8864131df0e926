"""The run's outcome, read from the walk (less.runner) and the stages' declarations (less.graph):

- ``record``: as each stage is got, results.json ``artifacts.<stage>`` (where, cached, seconds) and
  ``stages.<step>`` (the step's time, whether all of it was cached, what it made);
- ``report``: each got stage's ``report`` merged, its ``track`` records, every ``warnings`` found;
- ``account``: ``accounting`` from the stages' ``accounting``, ``params`` and ``cost``;
- ``link_outputs``: the stages' ``links`` in the run directory;
- ``finish``: the config and W&B lines, results.json and the printed summary (the stages' lines).

No stage is named here: what a stage adds is its declaration.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from less.cache import Artifact, write_json_atomic
from less.results import accounting, flatten_metrics, merge, summary

if TYPE_CHECKING:
    from less.runner import Runner

log = logging.getLogger(__name__)


def record(r: Runner, name: str, art: Artifact | None, seconds: float) -> None:
    s, ref = r.graph[name], r.lookup(name)
    r.results["artifacts"][name] = {
        "kind": ref.kind, "key": ref.key, "dir": str(ref.dir), "cached": bool(art and art.cached),
        "seconds": round(seconds, 3), **({"complete": False} if art is None else {}),
        **r.rows_computed.get(name, {})}
    if s.step is None:  # a step-less input gets its own line when this run built it (a model), if it says so
        if art is not None and not art.cached and s.own_line is not None:
            r.results["stages"][name] = {"seconds": round(seconds, 3), "cached": False, **s.own_line(r.ctx)}
        return
    if s.step not in r.cfg.stages:  # an input taken from the cache: listed under artifacts only
        return
    rec = r.results["stages"].setdefault(s.step, {"seconds": 0.0, "cached": True})
    rec["seconds"] = round(rec["seconds"] + seconds, 3)
    rec["cached"] = rec["cached"] and art is not None and art.cached
    if art is None:  # nothing to point at until the other shards are done
        rec.pop("dir", None), rec.pop("key", None)
        rec.update(complete=False, **{k: v for k, v in r.incomplete[name].items() if k not in ("reason", "stage")})
    elif rec.get("complete") is not False and (name == s.step or s.step not in r.got):
        # the step's own stage names it (select, not the correlates that follow it), else its last one
        rec.update(dir=str(art.dir), key=art.key)


def _warnings_in(part: Any) -> list[str]:
    """The strings under every ``warnings`` key of a stage's report."""
    if not isinstance(part, dict):
        return []
    found = [str(w) for w in part.get("warnings") or []]
    return found + [w for k, v in part.items() if k != "warnings" for w in _warnings_in(v)]


def report(r: Runner) -> None:
    warnings: list[str] = []  # every stage's report's "warnings", wherever they sit in it
    for name, s in r.graph.items():
        art = r.got.get(name)
        if art is None or s.report is None:
            continue
        part = r.reports[name] = s.report(r.ctx, art)
        warnings += _warnings_in(part)
        merge(r.results, part)
        if s.track is not None:
            s.track(r.ctx, art, part, r.tracker)
    r.results["warnings"] = warnings
    for w in warnings:
        log.warning(w)
    if warnings:
        r.tracker.summary({"warnings": warnings})


def account(r: Runner) -> None:
    """Tokens, epochs, parameters, estimated FLOPs and wall time of this run."""
    got = {n: r.got.get(n) for n in r.graph}
    parts = [s.accounting(r.ctx, got[n]) for n, s in r.graph.items() if s.accounting is not None]  # may get more
    acc = accounting({n: s["seconds"] for n, s in r.results["stages"].items()}, parts,
                     {n: s.params(r.ctx) for n, s in r.graph.items() if s.params is not None},
                     {n: s.cost(r.ctx, got[n]) if got[n] is not None else None
                      for n, s in r.graph.items() if s.cost is not None})
    r.results["accounting"] = acc
    r.tracker.summary({k: v for k, v in flatten_metrics(acc, "accounting").items() if v is not None})


def link_outputs(r: Runner) -> None:
    """The run directory links to its stages' ``links`` (e.g. the selection it trained on)."""
    for name, s in r.graph.items():
        art = r.got.get(name)
        for f in s.links if art is not None else ():
            if not (art.dir / f).is_file():
                continue
            link = r.out_dir / f
            tmp = link.with_name(f".{f}.link")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(art.dir / f)
            os.replace(tmp, link)


def finish(r: Runner) -> None:
    res, c, t = r.results, r.cfg, r.tracker
    res["config"] = {"name": c.name, "model": c.model.name, "selector": r.ctx.selector.name,
                     "pool": c.pool.name, "target": c.target.name, "stages": list(c.stages)}
    res["wandb"] = {"mode": t.mode, "dir": t.dir}
    if c.logger.name == "wandb":  # where analysis --wandb-log and wandb-workspace find the runs
        res["wandb"].update(project=c.logger.get("project"), entity=c.logger.get("entity"))
    if t.id is not None:
        res["wandb"]["id"] = t.id
    if t.skipped is not None:  # this configuration's run finished earlier: not logged again
        res["wandb"]["skipped"] = {k: t.skipped.get(k) for k in ("dir", "url") if t.skipped.get(k)}
    if t.fallback is not None:  # asked for online, logged offline: why
        res["wandb"].update(requested_mode=t.requested_mode, fallback=t.fallback)
    write_json_atomic(r.out_dir / "results.json", res)
    lines = [line for s in r.graph.values() if s.summary is not None for line in s.summary(res)]
    print(summary(res, r.out_dir / "results.json", lines))

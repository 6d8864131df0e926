"""What a selection correlates with, in every run that selects: Spearman's rank correlation of the
method's score with each pool example's response length (characters of its assistant turns, or
its completion), its number of labelled tokens (as the datastore encodes it for the selector:
what the gradient's mean runs over) and its loss at the last warmup checkpoint (less.stages.losses;
only where the run has warmup checkpoints, and ``correlates.loss`` is on), each with a 95% interval (Fisher's z with the
Fieller-Hartley-Pearson variance 1.06 / (n - 3)); and each source's share of the selection beside
its share of the pool. One plot per run (``correlates.png``, linked into the run directory).

results.json ``selection.correlates``; W&B the same under ``selection/correlates/...``, the
``selection/sources`` table and the plot;
``python -m analysis`` gathers them across a sweep (``correlates.csv``).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from less.cache import write_json_atomic
from less.data import sources
from less.data.formats import IGNORE_INDEX, read_examples
from less.graph import Context, Inputs, Stage
from less.models import load_tokenizer, model_spec
from less.stages.features import encode_split, encoding_spec
from less.stages.model import source

VARIABLES = {"response_chars": "response length (characters)", "labelled_tokens": "labelled tokens",
             "loss": "loss at the last warmup checkpoint"}
Z95 = 1.959963984540054


def response_chars(row: dict[str, Any]) -> int:
    if "messages" in row:
        return sum(len(m["content"].strip()) for m in row["messages"] if m["role"] == "assistant")
    return len(row["completion"].strip())


def spearman_interval(x, y) -> dict[str, Any]:
    """Spearman's rho of paired samples with its 95% interval (Fisher z, variance 1.06 / (n - 3));
    rho None when fewer than 4 pairs or either side is constant."""
    from less.stats import spearman

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(x)
    if n < 4 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"rho": None, "ci_low": None, "ci_high": None, "n": n}
    rho = spearman(x, y)
    if abs(rho) >= 1 - 1e-12:  # a monotone relation (selection=length): Fisher's z is infinite
        return {"rho": rho, "ci_low": rho, "ci_high": rho, "n": n}
    z, half = math.atanh(rho), Z95 * math.sqrt(1.06 / (n - 3))
    return {"rho": rho, "ci_low": math.tanh(z - half), "ci_high": math.tanh(z + half), "n": n}


def scores_by_id(select_dir: Path) -> dict[str, float]:
    """{pool id: score} of a select artifact: scores.npy is in the method's row order, ranking.csv
    lists the ids by rank; the rank order of the scores maps one onto the other."""
    from less.selection.scoring import ranking_order

    scores = np.load(select_dir / "scores.npy")
    with open(select_dir / "ranking.csv", newline="") as fh:
        ranked = [r["id"] for r in csv.DictReader(fh)]
    return {ranked[r]: float(scores[i]) for r, i in enumerate(ranking_order(scores))}


def build(ctx: Context, inputs: Inputs, out: Path) -> None:
    from less.stages import losses as pool_losses

    select = inputs["select"]
    pool = read_examples(inputs["pool"].dir / "pool.jsonl")
    scores = scores_by_id(select.dir)
    tok = load_tokenizer(ctx.selector, source(ctx, inputs, "selector"))
    enc = encode_split(pool, tok, ctx.cfg, "pool", inputs["pool"].dir / "pool.jsonl")
    values: dict[str, dict[str, float]] = {
        "response_chars": {str(r["id"]): response_chars(r) for r in pool},
        "labelled_tokens": {i: sum(t != IGNORE_INDEX for t in lab[1:]) for i, lab in zip(enc.ids, enc.labels)}}
    if "losses" in inputs:
        values["loss"] = pool_losses.read(inputs["losses"].dir)
    ids = [i for i in scores if np.isfinite(scores[i])]
    spear = {}
    for name, v in values.items():
        both = [i for i in ids if i in v and np.isfinite(v[i])]
        spear[name] = spearman_interval([scores[i] for i in both], [v[i] for i in both])
    if "losses" not in inputs:
        from less.stages.losses import loss_on

        reason = ("correlates.loss=false" if not loss_on(ctx.cfg)
                  else f"selection={ctx.method.name} uses no warmup checkpoint in this run")
        spear["loss"] = {"rho": None, "ci_low": None, "ci_high": None, "n": 0, "reason": reason}
    selected = [json.loads(line)["id"] for line in open(select.dir / "selected.jsonl")]
    by_id = {str(r["id"]): r for r in pool}
    in_pool, in_sel = sources.counts(pool, "dataset"), sources.counts([by_id[str(i)] for i in selected], "dataset")
    shares = {s: {"pool": n / len(pool), "selection": in_sel.get(s, 0) / max(1, len(selected))}
              for s, n in in_pool.items()}
    write_json_atomic(out / "correlates.json", {"spearman": spear, "sources": shares})
    _plot(out / "correlates.png", scores, values, set(map(str, selected)), spear, shares, ctx.method.name)


def _plot(path: Path, scores, values, selected: set[str], spear, shares, method: str) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(values) + 1, figsize=(4.2 * (len(values) + 1), 3.6))
    for ax, (name, v) in zip(axes, values.items()):
        both = [i for i in scores if i in v and np.isfinite(scores[i])]
        sel = [i for i in both if i in selected]
        rest = [i for i in both if i not in selected]
        ax.scatter([v[i] for i in rest], [scores[i] for i in rest], s=6, alpha=0.4, color="0.55", label="pool")
        ax.scatter([v[i] for i in sel], [scores[i] for i in sel], s=9, color="C3", label="selected")
        if name != "loss" and len(both) and min(v[i] for i in both) > 0:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        rho = spear[name]
        ax.set_title(f"rho = {rho['rho']:+.2f} [{rho['ci_low']:+.2f}, {rho['ci_high']:+.2f}]" if rho["rho"] is not None
                     else "rho: n/a", fontsize=9)
        ax.set_xlabel(VARIABLES[name], fontsize=9)
        ax.set_ylabel(f"{method} score", fontsize=9)
    axes[0].legend(fontsize=8)
    ax = axes[-1]
    names = list(shares)
    x = np.arange(len(names))
    ax.bar(x - 0.2, [shares[s]["pool"] for s in names], 0.4, label="pool", color="0.6")
    ax.bar(x + 0.2, [shares[s]["selection"] for s in names], 0.4, label="selection", color="C3")
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("share", fontsize=9)
    ax.set_title("sources", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110, metadata={"Software": None})
    plt.close(fig)
    tmp.replace(path)


def inputs(ctx: Context) -> dict[str, str]:
    return {"pool": "pool", "select": "select", "selector": "selector", "losses": "pool_losses"}


def config(ctx: Context) -> dict[str, Any]:
    ds = ctx.cfg.datastore
    spec = {"selector": model_spec(ctx.selector), "chat_format": ctx.cfg.chat_format, "max_length": ds.max_length}
    encoding = encoding_spec(ds, "pool")
    return {**spec, "encoding": encoding} if encoding else spec


def report(ctx: Context, art) -> dict[str, Any]:
    got = json.loads((art.dir / "correlates.json").read_text())
    return {"selection": {"correlates": {**got, "plot": str(art.dir / "correlates.png")}}}


def _rho(r: dict[str, Any]) -> str:
    return "n/a" if r.get("rho") is None else f"{r['rho']:+.2f} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"


def summary(r: dict[str, Any]) -> list[str]:
    c = (r.get("selection") or {}).get("correlates")
    if not c:
        return []
    sp = c["spearman"]
    lines = ["score vs (Spearman, 95%): " + "; ".join(f"{k} {_rho(sp[k])}" for k in VARIABLES if k in sp)]
    top = sorted(c["sources"].items(), key=lambda kv: -kv[1]["selection"])
    lines.append("sources, selection vs pool: " + ", ".join(
        f"{s} {v['selection']:.0%} vs {v['pool']:.0%}" for s, v in top[:6]) + (" ..." if len(top) > 6 else ""))
    return lines


def track(ctx: Context, art, reported: dict[str, Any], tracker) -> None:
    c = reported["selection"]["correlates"]  # nested keys: analysis.load_wandb reads them back as results.json's
    tracker.summary({f"selection/correlates/spearman/{k}/{part}": v[part]
                     for k, v in c["spearman"].items() for part in ("rho", "ci_low", "ci_high", "n")})
    tracker.summary({f"selection/correlates/sources/{s}/{part}": v[part]
                     for s, v in c["sources"].items() for part in ("pool", "selection")})
    tracker.table("selection/sources", ["source", "pool", "selection"],
                  [[s, v["pool"], v["selection"]] for s, v in c["sources"].items()])
    tracker.image("selection/correlates_plot", art.dir / "correlates.png")


CORRELATES = Stage("correlates", step="select", build=build, inputs=inputs, config=config, report=report,
                   summary=summary, track=track, links=("correlates.png",))

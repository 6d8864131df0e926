"""Why a LESS selection scored a pool example as it did: its score split by target subtask and
checkpoint (from the stored features), and by token (computed on demand, for the examples asked for
only, never for the whole pool).

The selection's score of pool example z for target subtask s is

    score_s(z) = sum_i <f_i(z) / ||f_i(z)||, T_is>,   T_is = w_i x mean over D_val items of s of their unit features

(``less.selection.inspect``), with f_i(z) the projection (first k dims) of the mapped gradient
a_i(g_i(z)) at checkpoint i, and g(z) = (1/n) sum_t grad l_t(z) the mean over z's n labelled tokens
of each token's cross-entropy gradient. The mapping is linear in g for ``sgd`` (a(g) = g) and
``precond`` (g / sqrt(v + eps)); for ``adam`` it is

    a(g) = (b1 m + (1 - b1) g) / D(g),   D(g) = sqrt(b2 v + (1 - b2) g^2 + eps)

and with the denominator held at the example's own gradient it splits exactly into Adam's momentum
term b1 m / D (no token's) and one term per token, (1 - b1) grad l_t / (n D). The projection and the
inner product with T_is are linear, and ||f_i|| is the example's own, so

    score_s(z) = sum_i [ momentum_i + sum_t c_it ],   c_it = <P_k (1 - b1) grad l_t / (n D_i), T_is> / ||f_i||

exactly (the momentum term is 0 for sgd and precond). A token's contribution is its gradient's
share of the example's gradient, projected onto the target direction; it is credited to the token
it predicts. Each token's gradient is one backward pass of that token's loss (one forward per
example and checkpoint), so the cost is the number of labelled tokens of the K examples.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from less.errors import DataError

TOKEN_CHUNK = 32  # token gradients mapped and projected together


@dataclass
class Explanation:
    """One pool example's score, split by subtask, checkpoint and token."""

    id: str
    rank: int | None            # in the ranking (1 = best); None if not ranked
    source: str | None
    score: float                # the selection's stored score (scores.npy)
    subtask: str                # the subtask whose score the tokens explain (the max, as LESS reduces)
    by_subtask: dict[str, float]
    by_checkpoint: dict[int, float]   # the explained subtask's term per checkpoint (from the stored features)
    tokens: list[str] = field(default_factory=list)
    labelled: list[bool] = field(default_factory=list)
    contribution: list[float] = field(default_factory=list)  # per token, summed over checkpoints (0 if unlabelled)
    momentum: float = 0.0       # Adam's b1 m term, summed over checkpoints (no token's)
    recomputed: float = 0.0     # momentum + sum of contributions: the score recomputed in float32

    def top_tokens(self, n: int = 5, sign: int = 1) -> list[tuple[str, float]]:
        """The ``n`` labelled tokens adding most (``sign`` 1) or taking away most (-1)."""
        pairs = [(t, c) for t, c, lab in zip(self.tokens, self.contribution, self.labelled) if lab and sign * c > 0]
        return sorted(pairs, key=lambda p: -sign * p[1])[:n]


def token_terms(ex, enc, row: int, target: np.ndarray, k: int, normalize: bool = True
                ) -> tuple[np.ndarray, float, float]:
    """One checkpoint's term <f_k / ||f_k||, target> of row ``row`` of ``enc``, split: (per position
    contributions (0 where unlabelled; credited to the predicted token), the momentum term, the
    whole term). ``ex`` is the checkpoint's :class:`less.gradients.features.FeatureExtractor`
    (model, moments, projection), ``target`` a (k,) vector. Without ``normalize`` the features are
    scaled by 1/sqrt(k) as the scoring takes them."""
    import torch
    import torch.nn.functional as F

    from less.data.formats import IGNORE_INDEX
    from less.gradients.adam import mapping_terms
    from less.gradients.features import pad_batch

    model, device = ex.model, ex.device
    params = [m.weight for m in ex.grads.modules]
    ids, mask, labels = pad_batch(enc, [row], ex.pad_id, device)
    with torch.enable_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits[0, :-1].float()
        gold = labels[0, 1:]
        where = (gold != IGNORE_INDEX).nonzero().flatten().tolist()
        if not where:
            raise DataError(f"example {enc.ids[row]} has no labelled token")
        losses = F.cross_entropy(logits[where], gold[where], reduction="none") / len(where)
        grads = []
        for j in range(len(where)):  # one backward per labelled token, on one graph
            gs = torch.autograd.grad(losses[j], params, retain_graph=j + 1 < len(where))
            grads.append(torch.cat([g.flatten() for g in gs]).detach())
    model.zero_grad(set_to_none=True)
    G = torch.stack(grads)  # (tokens, P): sums to the example's gradient
    g = G.sum(0)
    m = torch.cat([x[0] for x in ex.mv]) if ex.mv is not None else None
    v = torch.cat([x[1] for x in ex.mv]) if ex.mv is not None else None
    scale, bias = mapping_terms(g, m, v, ex.mapping, ex.betas, ex.eps)
    G = G * scale
    proj = []
    for s in range(0, len(G), TOKEN_CHUNK):
        proj.append(ex.project(G[s: s + TOKEN_CHUNK])[:, :k])
    Ft = torch.cat(proj).double()
    fb = ex.project(bias[None])[0, :k].double() if bias is not None else torch.zeros(k, dtype=torch.float64,
                                                                                       device=Ft.device)
    f = Ft.sum(0) + fb
    norm = f.norm() if normalize else torch.tensor(float(np.sqrt(k)), dtype=torch.float64)
    t = torch.as_tensor(np.asarray(target, np.float64), device=Ft.device)
    per = (Ft @ t / norm).cpu().numpy()
    mom = float(fb @ t / norm)
    out = np.zeros(ids.shape[1], dtype=np.float64)
    out[[p + 1 for p in where]] = per
    return out, mom, float(mom + per.sum())


def _run_config(run: Path, select: Path):
    """The run's composed config (``.hydra/config.yaml``, as ``run.py`` saved it) with its cache
    root where the selection's artifacts are."""
    from omegaconf import OmegaConf

    from less.resolvers import register

    f = run / ".hydra" / "config.yaml"
    if not f.is_file():
        raise DataError(f"{run}: no .hydra/config.yaml (the run's composed config, which run.py saves): "
                        "explain needs it to rebuild the selector and its checkpoints")
    register()
    cfg = OmegaConf.load(f)
    cfg.cache_dir = str(select.parent.parent)
    return cfg


def explain(run: str | Path, top: int = 5, ids: list[str] | None = None, device: str = "cpu") -> list[Explanation]:
    """Explanations of the ``top`` best-ranked pool examples of a LESS run and of ``ids``."""
    import tempfile

    import torch

    from less.runner import Runner
    from less.selection.inspect import _pool, select_dir, subtask_scores
    from less.stages.features import SplitFeatures, checkpoints_dir
    from less.stages.model import source

    if top < 0:
        raise DataError(f"--top must be >= 0, got {top}")
    run = Path(run)
    select = select_dir(run)
    info = json.loads((select / "selection.json").read_text())
    if info["method"] != "less":
        raise DataError(f"{select}: per-token explanations need a LESS selection (this one is {info['method']!r})")
    ranking = select / "ranking.csv"
    if not ranking.is_file():
        raise DataError(f"{select}: the selection has no ranking.csv")
    import csv

    with open(ranking, newline="") as fh:
        rank_of = {r["id"]: int(r["rank"]) for r in csv.DictReader(fh)}
    by_rank = sorted(rank_of, key=rank_of.get)
    wanted = list(dict.fromkeys(by_rank[:top] + list(ids or [])))
    unknown = [i for i in wanted if i not in rank_of]
    if unknown:
        raise DataError(f"{select}: pool id(s) {unknown[:3]} not in the ranking (ranking.csv)")
    if not wanted:
        raise DataError("nothing to explain: give --top >= 1 or --ids")

    cfg = _run_config(run, select)
    r = Runner(cfg, Path(tempfile.mkdtemp()), check=False)
    inputs = {role: r.lookup(dep) for role, dep in r.inputs("pool_features").items()}
    missing = [f"{role} ({a.dir})" for role, a in inputs.items() if not a.cached]
    if missing:
        raise DataError(f"{run}: the run's inputs are no longer in the cache: {', '.join(missing)}")
    ctx = r.ctx
    ctx._device = torch.device(device)
    with tempfile.TemporaryDirectory() as work:
        sf = SplitFeatures(cfg, ctx.selector, source(ctx, inputs, "selector"), ctx._device,
                           checkpoints_dir(ctx, inputs), inputs["examples"].dir / "pool.jsonl", "pool", Path(work))
    row_of = {i: n for n, i in enumerate(sf.enc.ids)}
    sub = subtask_scores(select, all_rows=False)  # only the K rows asked for are scored, below
    sub_row = {i: n for n, i in enumerate(sub.ids)}
    pool = _pool(select)
    k = int(info["proj_dim"])
    normalize = bool(cfg.datastore.normalize)
    scores = np.load(select / "scores.npy") if (select / "scores.npy").is_file() else None
    out: list[Explanation] = []
    for i in wanted:
        j = sub_row[i]
        if sub.reduce != "max":
            raise DataError("selection.subtask_reduce=mean: per-token explanations explain one subtask's score; "
                            "rerun with the default (max)")
        terms = sub.by_checkpoint(j)  # (checkpoints, subtasks)
        per_sub = terms.sum(0)
        col = int(np.argmax(per_sub))
        byc = terms[:, col]
        out.append(Explanation(
            id=i, rank=rank_of.get(i), source=pool[i].get("dataset"),
            score=float(scores[j]) if scores is not None else float(per_sub[col]), subtask=sub.subtasks[col],
            by_subtask={s: float(v) for s, v in zip(sub.subtasks, per_sub)},
            by_checkpoint={c: float(v) for c, v in zip(sub.checkpoints, byc)}))
    tok = sf.tok
    for e in out:
        row = row_of[e.id]
        ids_ = sf.enc.input_ids[row]
        e.tokens = [tok.decode([t]) for t in ids_]
        e.labelled = [False] + [x != -100 for x in sf.enc.labels[row][1:]]
        e.contribution = [0.0] * len(ids_)
    col_of = {e.id: sub.subtasks.index(e.subtask) for e in out}
    for c, term in zip(sub.checkpoints, sub.terms):
        ck = next(x for x in sf.ckpts if x["epoch"] == c)
        model, ex = sf.extractor(sf.warmup_dir / ck["dir"])
        try:
            for e in out:
                per, mom, _ = token_terms(ex, sf.enc, row_of[e.id], term[:, col_of[e.id]], k, normalize)
                e.contribution = [a + float(b) for a, b in zip(e.contribution, per)]
                e.momentum += mom
        finally:
            ex.close()
            del model
    for e in out:
        e.recomputed = e.momentum + float(sum(e.contribution))
    return out


def _shade(c: float, scale: float) -> str:
    a = min(1.0, abs(c) / scale) if scale > 0 else 0.0
    return f"rgba(220,40,40,{a:.3f})" if c >= 0 else f"rgba(40,90,220,{a:.3f})"


def render_html(exps: list[Explanation], title: str) -> str:
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:70em;margin:auto}"
             ".t{white-space:pre-wrap;font-family:monospace;line-height:1.6}.u{color:#999}"
             "table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #ddd}</style>",
             f"<h1>{html.escape(title)}</h1>",
             "<p>Each labelled token is shaded by its contribution to the example's score for the subtask "
             "that decides it (red adds, blue takes away; hover for the value); grey tokens carry no label. "
             "Contributions plus Adam's momentum term sum to the score.</p>"]
    for e in exps:
        scale = max([abs(c) for c, lab in zip(e.contribution, e.labelled) if lab] or [0.0])
        parts.append(f"<h2>#{e.rank} {html.escape(e.id)} ({html.escape(str(e.source))})</h2>")
        parts.append(f"<p>score {e.score:.4f} (recomputed {e.recomputed:.4f}: tokens {sum(e.contribution):.4f} + "
                     f"momentum {e.momentum:.4f}); subtask <b>{html.escape(e.subtask)}</b>; by checkpoint: "
                     + ", ".join(f"{c}: {v:.4f}" for c, v in e.by_checkpoint.items()) + "</p>")
        spans = []
        for t, c, lab in zip(e.tokens, e.contribution, e.labelled):
            text = html.escape(t)
            spans.append(f"<span style='background:{_shade(c, scale)}' title='{c:+.5f}'>{text}</span>" if lab
                         else f"<span class='u'>{text}</span>")
        parts.append("<div class='t'>" + "".join(spans) + "</div>")
        top_sub = sorted(e.by_subtask.items(), key=lambda p: -p[1])[:5]
        parts.append("<p>best subtasks: " + ", ".join(f"{html.escape(s)} {v:.4f}" for s, v in top_sub) + "</p>")
    return "\n".join(parts)


def render_markdown(exps: list[Explanation]) -> str:
    fmt = lambda ps: ", ".join(f"`{t.strip() or repr(t)}` {c:+.4f}" for t, c in ps)  # noqa: E731
    lines = ["| rank | id | source | score | subtask | momentum | tokens adding most | tokens taking away most |",
             "|---|---|---|---|---|---|---|---|"]
    for e in exps:
        lines.append(f"| {e.rank} | {e.id} | {e.source} | {e.score:.4f} | {e.subtask} | {e.momentum:+.4f} | "
                     f"{fmt(e.top_tokens(5, 1))} | {fmt(e.top_tokens(5, -1))} |")
    return "\n".join(lines) + "\n"


def token_rows(exps: list[Explanation]) -> list[dict[str, Any]]:
    return [{"id": e.id, "rank": e.rank, "position": p, "token": t, "labelled": lab, "contribution": c}
            for e in exps for p, (t, c, lab) in enumerate(zip(e.tokens, e.contribution, e.labelled))]

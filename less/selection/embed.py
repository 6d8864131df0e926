"""Selection methods over the selector model's hidden states (``less.stages.representations``):

- rds: cosine of each pool example's representation to each target example's, mean within a
  target subtask, max over subtasks (aggregated like LESS);
- kcenter: KMeans + KCenterGreedy over the pool's representations (diversity, no target;
  ``centered_on_target`` restricts it to the pool examples that share a KMeans cluster with a
  target example).

A representation is the last layer's hidden state at the example's last non-padding token
(``pooling: last``, as the reference code's ``collect_reps``) or averaged over its tokens
(``mean``), computed by the selector with the last warmup checkpoint's LoRA adapter
(``model: warmup``, LESS's selection model M_S) or by the selector alone (``base``).

Pool representations (270k x 4096 float32 = 4.4 GB at the paper's scale) are never loaded whole:
RDS streams row chunks against the target; KCenter streams them through a seeded Gaussian random
projection to ``selection.kcenter.dim`` dimensions and runs the greedy there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from omegaconf import DictConfig

from less.errors import ConfigError
from less.selection.registry import Request, Scored, method
from less.selection.scoring import less_scores

if TYPE_CHECKING:
    import torch

    from less.data.formats import Encoded

POOLINGS = ("last", "mean")
MODELS = ("warmup", "base")
DEFAULTS = {"pooling": "last", "model": "warmup"}  # also what a method without these settings gets
CHUNK = 8192  # rows per read of a representation file (8192 x 4096 float32 = 128 MiB)


# -------------------------------------------------------------------------- computing representations
def pool_hidden(hidden: "torch.Tensor", mask: "torch.Tensor", pooling: str) -> "torch.Tensor":
    """(B, H) from (B, T, H) hidden states and a (B, T) attention mask. ``last``: the hidden state at
    each row's last position with mask 1, whatever the padding side (the reference's
    ``attention_mask.sum(1) - 1`` is that position only under right padding); ``mean``: the mean
    over positions with mask 1."""
    import torch

    if pooling == "last":
        pos = (mask.long() * torch.arange(mask.shape[1], device=mask.device)).argmax(1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), pos]
    if pooling == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


def iter_representations(model, enc: "Encoded", pad_id: int, device: "torch.device", pooling: str = "last",
                         token_budget: int = 4096, max_batch: int = 64,
                         desc: str = "representations") -> Iterator[tuple[list[int], np.ndarray]]:
    """(row indices, (len, hidden) float32) per length-sorted micro-batch, in eval mode (dropout off)."""
    import torch
    from tqdm.auto import tqdm

    from less.gradients.features import pad_batch, token_budget_batches

    model.eval()
    with torch.no_grad():
        for idx in tqdm(token_budget_batches([len(x) for x in enc.input_ids], token_budget, max_batch),
                        desc=desc, leave=False):
            ids, mask, _ = pad_batch(enc, idx, pad_id, device)
            hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
            yield idx, pool_hidden(hidden.float(), mask, pooling).cpu().numpy()


def representations(model, enc: "Encoded", pad_id: int, device: "torch.device", pooling: str = "last",
                    **kw) -> np.ndarray:
    """(N, hidden) float32 in ``enc`` order (in memory: for small sets; the stage writes to disk)."""
    out: np.ndarray | None = None
    for idx, x in iter_representations(model, enc, pad_id, device, pooling, **kw):
        if out is None:
            out = np.zeros((len(enc), x.shape[1]), dtype=np.float32)
        out[idx] = x
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


# ------------------------------------------------------------------------------------ reading them
def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(1e-12)


class UnitRows:
    """Row slices of an array or of a stored ``.npy`` (read with plain file reads), L2-normalised."""

    def __init__(self, rows):
        self.rows = rows
        self.shape = rows.shape

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        return unit(self.rows[rows])


def open_rows(path: Path):
    from less.gradients.store import NpyRows

    return NpyRows(path)


def cosine_scores(pool, target: np.ndarray, subtasks: Sequence[str], reduce: str = "max",
                  chunk: int = CHUNK) -> np.ndarray:
    """RDS: mean cosine to each subtask's target rows, then max (or mean) over subtasks. ``pool``:
    an array or row-sliceable rows (``NpyRows``), read ``chunk`` rows at a time."""
    return less_scores([UnitRows(pool)], [unit(np.asarray(target))], np.array([1.0]), subtasks, chunk=chunk,
                       reduce=reduce).astype(np.float64)


def project(rows, dim: int, seed: int, chunk: int = CHUNK) -> np.ndarray:
    """(N, min(width, dim)) float32: L2-normalised rows, times a seeded Gaussian matrix scaled by
    1/sqrt(dim) when they are wider than ``dim`` (squared distances are preserved in expectation,
    within Johnson-Lindenstrauss error: relative spread about sqrt(2/dim), ~9% at 256), chunk by chunk.
    The product is taken in float64 and rounded to float32, so the rows do not depend on the chunk
    size (a float32 matrix product's rounding follows the BLAS kernel's blocking of the rows)."""
    n, width = rows.shape
    r = None
    if width > dim:
        r = (np.random.default_rng(seed).standard_normal((width, dim), dtype=np.float32) / np.float32(np.sqrt(dim))
             ).astype(np.float64)
    out = np.empty((n, dim if r is not None else width), dtype=np.float32)
    for s in range(0, n, chunk):
        x = unit(rows[s: s + chunk])
        out[s: s + len(x)] = x if r is None else x.astype(np.float64) @ r
    return out


def kcenter_greedy(x: np.ndarray, start: Sequence[int], n_pick: int) -> tuple[list[int], np.ndarray]:
    """KCenterGreedy: from the ``start`` points, repeatedly add the point farthest from every chosen
    one. Returns the picks in order and each point's squared distance to its nearest pick. One
    matrix-vector product per pick (||a||^2 - 2 a.b + ||b||^2), never an N x k x d array."""
    sq = np.einsum("ij,ij->i", x, x)
    dist = np.full(len(x), np.inf, dtype=np.float32)
    buf = np.empty(len(x), dtype=np.float32)

    def add(c: int) -> None:
        np.dot(x, x[c], out=buf)
        np.multiply(buf, -2, out=buf)
        np.add(buf, sq, out=buf)
        np.add(buf, sq[c], out=buf)
        np.maximum(buf, 0, out=buf)
        buf[c] = 0
        np.minimum(dist, buf, out=dist)

    order = []
    for c in start:
        order.append(int(c))
        add(int(c))
    while len(order) < min(n_pick, len(x)):
        nxt = int(np.argmax(dist))
        order.append(nxt)
        add(nxt)
    return order, dist


def kcenter_scores(pool, n_select: int, seed: int, n_clusters: int, target: np.ndarray | None = None,
                   dim: int = 256) -> np.ndarray:
    """Scores that rank the KCenterGreedy picks first, in pick order; the rest by distance to them.

    Rows are L2-normalised and projected to ``dim`` dimensions (``project``). Centres start at the
    pool points nearest the KMeans centroids; each step adds the point farthest from every chosen
    point. With ``target``, KMeans runs over pool and target and only pool points in clusters that
    hold a target example are candidates.
    """
    from sklearn.cluster import KMeans

    x = project(pool, dim, seed)
    candidates = np.arange(len(x))
    if target is not None:
        t = project(np.asarray(target, dtype=np.float32), dim, seed)  # the same matrix (same seed, width)
        k = min(n_clusters, len(x) + len(t))
        labels = KMeans(n_clusters=k, random_state=seed, n_init=3).fit(np.concatenate([x, t])).labels_
        near = np.isin(labels[: len(x)], np.unique(labels[len(x):]))
        if near.sum() >= n_select:
            candidates = np.flatnonzero(near)
    xc = x[candidates] if len(candidates) < len(x) else x
    k = min(n_clusters, len(xc), n_select)
    km = KMeans(n_clusters=k, random_state=seed, n_init=3).fit(xc)
    start = np.unique(np.argmin(km.transform(xc), axis=0))  # the point nearest each centroid
    order, dist = kcenter_greedy(xc, start.tolist(), n_select)
    scores = np.full(len(x), -np.inf)
    rest = np.setdiff1d(np.arange(len(xc)), order)
    # picks first (in pick order), then the remaining candidates by distance to the picks, then others
    scores[candidates[order]] = 1e6 - np.arange(len(order))
    scores[candidates[rest]] = dist[rest] - 10.0
    others = np.setdiff1d(np.arange(len(x)), candidates)
    scores[others] = -100.0
    return scores


# -------------------------------------------------------------------------------------- the methods
def options(selection: DictConfig) -> dict[str, str]:
    """``pooling`` and ``model`` from the method's own settings (``selection.<method>``), else the defaults."""
    node = selection.get(selection.method) or {}
    return {k: node.get(k, v) for k, v in DEFAULTS.items()}


def check_options(cfg: DictConfig) -> None:
    s = cfg.selection
    got = options(s)
    for key, allowed in (("pooling", POOLINGS), ("model", MODELS)):
        if got[key] not in allowed:
            raise ConfigError(f"selection.{s.method}.{key} must be one of {list(allowed)}, got {got[key]!r}")


def check_kcenter(cfg: DictConfig) -> None:
    check_options(cfg)
    kc = cfg.selection.kcenter
    for key in ("dim", "n_clusters"):
        if not isinstance(kc[key], int) or isinstance(kc[key], bool) or kc[key] < 1:
            raise ConfigError(f"selection.kcenter.{key} must be a positive integer, got {kc[key]!r}")


def _ids(reps: Path, split: str) -> list[str]:
    return [json.loads(line)["id"] for line in open(reps / f"{split}_ids.jsonl")]


@method("rds", needs="representations", check=check_options)
def rds_method(req: Request) -> Scored:
    reps = req.representations
    target, t_ids = np.load(reps / "target.npy"), _ids(reps, "target")
    subtask = {str(r["id"]): r["subtask"] for r in req.target}
    scores = cosine_scores(open_rows(reps / "pool.npy"), target, [subtask[t] for t in t_ids],
                           req.selection.subtask_reduce)
    return Scored(scores, _ids(reps, "pool"), {"representations": options(req.selection)})


@method("kcenter", needs="representations", check=check_kcenter)
def kcenter_method(req: Request) -> Scored:
    s, reps = req.selection.kcenter, req.representations
    ids = _ids(reps, "pool")
    target = np.load(reps / "target.npy") if s.centered_on_target else None
    scores = kcenter_scores(open_rows(reps / "pool.npy"), req.n_select(len(ids)), req.seed, s.n_clusters, target,
                            dim=s.dim)
    return Scored(scores, ids, {"representations": options(req.selection)})

"""What a selection picked and why, per target subtask: the LESS paper's qualitative view.

For a LESS selection, the score of pool example z for target subtask s is

    score_s(z) = sum over checkpoints i of  w_i * mean over the target examples z' of s of cos(f_i(z), f_i(z'))

(``less.selection.scoring.subtask_score_chunks``: the same products the selection made, with the
same weights, dimension and checkpoints as ``selection.json`` records), and the selection's score
(``scores.npy``) is the max over subtasks (or the mean, with ``selection.subtask_reduce=mean``).
:func:`top_by_subtask` lists, per subtask, the pool examples with the highest ``score_s``, the
checkpoint whose term ``w_i * mean cos`` is largest for each, and the start of its prompt.

Other methods have no per-subtask score here: their rows are the overall top of ``ranking.csv``
(subtask ``""``, no checkpoint).

Where the inputs are: ``key.json`` of the select artifact names its inputs' keys; each lies at
``<cache root>/<kind>/<key>`` (the select artifact's grandparent is the cache root), so a run
whose inputs were all cached (and so not listed in its results.json) is inspected the same way.
Plain numpy, no torch.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from less.errors import DataError

COLUMNS = ("subtask", "rank", "id", "source", "score", "top_checkpoint", "text")
# role of a select artifact's input -> its cache kind (less/stages/select.py ``inputs``)
INPUT_KINDS = {"pool": "pool", "target": "target", "datastore": "datastore", "representations": "representations",
               "influence": "influence"}


def select_dir(path: str | Path) -> Path:
    """The select artifact of ``path``: a select artifact itself (has ``selection.json``) or a run
    directory (its results.json's select artifact, else the one its ``ranking.csv`` links to)."""
    path = Path(path)
    if (path / "selection.json").is_file():
        return path
    res = path / "results.json"
    if not res.is_file():
        raise DataError(f"{path}: neither a run directory (results.json) nor a select artifact (selection.json)")
    results = json.loads(res.read_text())
    for rec in ((results.get("artifacts") or {}).get("select"), (results.get("stages") or {}).get("select")):
        if rec and rec.get("dir") and (Path(rec["dir"]) / "selection.json").is_file():
            return Path(rec["dir"])
    link = path / "ranking.csv"
    if link.is_symlink() and (link.resolve().parent / "selection.json").is_file():
        return link.resolve().parent
    raise DataError(f"{path}: this run has no select artifact in the cache (results.json artifacts.select)")


def input_dir(select: Path, role: str) -> Path:
    """``<cache root>/<kind>/<key>`` of the select artifact's input ``role``, from its key.json."""
    spec = json.loads((select / "key.json").read_text())["spec"]
    key = spec["inputs"].get(role)
    if key is None:
        raise DataError(f"{select}: the selection has no {role} input (key.json {sorted(spec['inputs'])})")
    d = select.parent.parent / INPUT_KINDS[role] / key
    if not d.is_dir():
        raise DataError(f"{d}: the selection's {role} artifact is not in the cache")
    return d


def prompt_text(example: dict[str, Any], width: int = 200) -> str:
    """The example's first user turn (or its prompt), on one line, cut at ``width`` characters."""
    if "messages" in example:
        turns = [m["content"] for m in example["messages"] if m.get("role") == "user"] or \
                [m["content"] for m in example["messages"]]
        text = turns[0] if turns else ""
    else:
        text = example.get("prompt", "")
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _pool(select: Path) -> dict[str, dict[str, Any]]:
    with open(input_dir(select, "pool") / "pool.jsonl") as fh:
        return {str(r["id"]): r for r in map(json.loads, fh)}


@dataclass
class SubtaskScores:
    """A LESS selection's score of every pool row for every target subtask."""

    ids: list[str]            # pool ids, datastore row order (that of scores.npy)
    subtasks: list[str]       # target order
    checkpoints: list[int]
    scores: np.ndarray        # (rows, subtasks) float32
    reduce: str               # how the selection combined subtasks: max (LESS) or mean
    pool: list[Any] = field(repr=False)       # one FeatureArray per checkpoint
    terms: list[np.ndarray] = field(repr=False)  # per checkpoint: w_i x mean target row, (dim, subtasks)

    def overall(self) -> np.ndarray:
        """The selection's score per row, as scores.npy holds it."""
        return self.scores.max(1) if self.reduce == "max" else self.scores.mean(1)

    def by_checkpoint(self, row: int) -> np.ndarray:
        """(checkpoints, subtasks): each checkpoint's term w_i * mean cos of pool row ``row``; the
        columns sum to ``scores[row]``."""
        return np.stack([np.asarray(x[row: row + 1], np.float32)[0] @ t for x, t in zip(self.pool, self.terms)])


def subtask_scores(select: Path, all_rows: bool = True) -> SubtaskScores:
    """Recompute a LESS selection's per-subtask scores from its datastore, with the dimension,
    checkpoints and weights its ``selection.json`` records. ``all_rows=False`` leaves ``scores``
    empty (no pass over the pool): a few rows' come from :meth:`SubtaskScores.by_checkpoint`."""
    from less.gradients.store import FeatureArray, read_manifest
    from less.selection.scoring import subtask_groups, subtask_score_chunks

    info = json.loads((select / "selection.json").read_text())
    config = json.loads((select / "key.json").read_text())["spec"]["config"]["selection"]
    man = read_manifest(input_dir(select, "datastore"))
    dim, use = int(info["proj_dim"]), list(info["checkpoints"])
    weights = np.asarray(info["checkpoint_weights"], dtype=np.float64)

    def arrays(split):
        fs = sorted((f for f in man["files"] if f["split"] == split and f["dim"] == dim and f["checkpoint"] in use),
                    key=lambda f: f["checkpoint"])
        if [f["checkpoint"] for f in fs] != sorted(use):
            raise DataError(f"{select}: the datastore lacks {split} features of dim {dim} for checkpoints {use}")
        with open(fs[0]["idspath"]) as fh:
            ids = [str(json.loads(line)["id"]) for line in fh]
        return [FeatureArray(f["abspath"], f["dtype"], f["dim"]) for f in fs], ids

    pool_x, pool_ids = arrays("pool")
    target_x, target_ids = arrays("target")
    with open(input_dir(select, "target") / "target.jsonl") as fh:
        subtask_of = {str(r["id"]): r["subtask"] for r in map(json.loads, fh)}
    subtasks = [subtask_of[t] for t in target_ids]
    groups = subtask_groups(subtasks)
    target = [np.asarray(t) for t in target_x]
    scores = np.empty((len(pool_ids) if all_rows else 0, len(groups)), dtype=np.float32)
    for start, stop, per_sub in (subtask_score_chunks(pool_x, target, weights, subtasks) if all_rows else ()):
        scores[start:stop] = per_sub
    terms = [np.float32(w) * np.stack([np.asarray(t, np.float32)[ix].mean(0) for ix in groups.values()], 1)
             for w, t in zip(weights, target)]
    return SubtaskScores(pool_ids, list(groups), sorted(use), scores, config.get("subtask_reduce") or "max",
                         pool_x, terms)


def top_by_subtask(path: str | Path, n: int = 10, width: int = 200) -> list[dict[str, Any]]:
    """Rows ``{subtask, rank, id, source, score, top_checkpoint, text}`` (:data:`COLUMNS`): per
    target subtask (in the target's order), the ``n`` pool examples with the highest score for it,
    best first; ``path`` is a run directory or a select artifact. For methods other than LESS: the
    overall top ``n`` of the ranking, with ``subtask`` ``""`` and ``top_checkpoint`` None."""
    select = select_dir(path)
    info = json.loads((select / "selection.json").read_text())
    pool = _pool(select)
    if info["method"] != "less":
        with open(select / "ranking.csv", newline="") as fh:
            top = [r for _, r in zip(range(n), csv.DictReader(fh))]
        return [{"subtask": "", "rank": int(r["rank"]), "id": r["id"], "source": r["source"],
                 "score": float(r["score"]), "top_checkpoint": None, "text": prompt_text(pool[r["id"]], width)}
                for r in top]
    from less.selection.scoring import top_k

    sub = subtask_scores(select)
    rows = []
    for j, name in enumerate(sub.subtasks):
        for rank, i in enumerate(top_k(sub.scores[:, j], n), 1):
            best = int(np.argmax(sub.by_checkpoint(i)[:, j]))
            rows.append({"subtask": name, "rank": rank, "id": sub.ids[i], "source": pool[sub.ids[i]].get("dataset"),
                         "score": float(sub.scores[i, j]), "top_checkpoint": sub.checkpoints[best],
                         "text": prompt_text(pool[sub.ids[i]], width)})
    return rows

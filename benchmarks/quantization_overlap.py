"""Effect of compact storage on the selection: overlap of the top fraction selected from float32,
int8 (per-row scale) and 1-bit (sign, as QLESS) features with the float16 selection.

    python benchmarks/quantization_overlap.py <run dir>/results.json [--fraction 0.05] [--dim D]

Reads the datastore a finished run selected from (its manifest.json), re-encodes every pool and target
array with each storage format exactly as the store would (less.gradients.store.quantize), scores
with the LESS formula and prints the overlap of each format's top fraction with float16's, and
the bytes per row.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from less.gradients.store import FeatureArray, quantize
from less.selection.scoring import checkpoint_weights, less_scores, top_k


def encode_decode(x: np.ndarray, dtype: str, tmp: Path, name: str) -> FeatureArray:
    arrs = quantize(x, dtype)
    path = tmp / f"{name}.{dtype}.npy"
    np.save(path, arrs[""])
    if ".scale" in arrs:
        np.save(path.with_suffix(".scale.npy"), arrs[".scale"])
    return FeatureArray(path, dtype, x.shape[1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", help="results.json of a run that ran the select stage")
    p.add_argument("--fraction", type=float, default=0.05)
    p.add_argument("--dim", type=int, default=None)
    a = p.parse_args()
    res = json.loads(Path(a.results).read_text())
    d = Path(res["selection"]["datastore"])
    select_dir = Path(res["selection"]["ranking"]).parent  # <cache>/select/<key>; key.json names its inputs
    target_key = json.loads((select_dir / "key.json").read_text())["spec"]["inputs"]["target"]
    target_file = select_dir.parents[1] / "target" / target_key / "target.jsonl"
    subtask_of = {str(r["id"]): r["subtask"] for r in map(json.loads, open(target_file))}
    man = json.loads((d / "manifest.json").read_text())
    dim = a.dim or max(f["dim"] for f in man["files"])
    tmp = d / ".quant-bench"
    tmp.mkdir(exist_ok=True)

    def load(split):
        fs = sorted((f for f in man["files"] if f["split"] == split and f["dim"] == dim), key=lambda f: f["checkpoint"])
        return [np.asarray(FeatureArray(d / f["path"], f["dtype"], dim)) for f in fs], fs

    pool, fs = load("pool")
    target, _ = load("target")
    tgt_meta = json.loads((d / man["target"] / "features.json").read_text())
    ids = [json.loads(line)["id"] for line in open(d / man["target"] / tgt_meta["ids"])]
    subtasks = [subtask_of[i] for i in ids]
    w = checkpoint_weights([f["avg_lr"] for f in fs])
    k = max(1, int(round(a.fraction * len(pool[0]))))
    sel = {}
    for dtype in ("float16", "float32", "int8", "bit"):
        px = [encode_decode(x, dtype, tmp, f"p{i}") for i, x in enumerate(pool)]
        tx = [np.asarray(encode_decode(x, dtype, tmp, f"t{i}")) for i, x in enumerate(target)]
        sel[dtype] = set(top_k(less_scores(px, tx, w, subtasks), k).tolist())
        per_row = sum(v.nbytes for v in quantize(pool[0][:1], dtype).values())
        print(f"{dtype:>8}: {per_row:6d} bytes/row/checkpoint, top {a.fraction:.0%} ({k} of {len(pool[0])}) "
              f"overlap with float16: {len(sel[dtype] & sel['float16']) / k:.3f}")
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()


if __name__ == "__main__":
    main()

"""Selection-methods benchmark at the paper's pool size: every registered selection method on a
synthetic 270,000-example pool, each in its own process, through the pipeline's code path (the
method's config from ``conf/selection/<name>.yaml`` composed as ``run.py`` would, its ``check``,
``registry.get(name).score(Request(...))`` and the select stage's ranking sort).

    python benchmarks/select_methods.py [--rows 270000] [--dim 4096] [--dir /tmp/less-select-bench]
                                        [--methods rds,kcenter] [--grad-dim 8192] [--json out.json]

The data is written once under ``--dir`` (by a child process) and reused:

- ``pool.jsonl``: chat examples mixed as the paper's pool (37% FLAN v2, 37% CoT, 5.5% Dolly, 20.5%
  OASST1 with 2-6 turns), a few hundred words each (lengths log-normal per source), words drawn
  from a Zipfian 50,000-word vocabulary with punctuation;
- ``target.jsonl``: 285 MMLU-like examples in 57 subtasks (5 each);
- ``representations/``: ``pool.npy`` (rows x dim float32, clustered), ``target.npy`` and the id
  files, the layout the representations stage writes;
- ``features/`` and ``datastore/manifest.json``: one checkpoint of ``--grad-dim`` float16 unit rows,
  the layout the features and datastore stages write (``less`` scores from it); ``datastore_sgd_false``
  and ``datastore_precond_true`` list the same rows as the datastores ``trak``/``tracin`` and
  ``trackstar`` ask for (what they cost does not depend on the values).

Per method it prints the seconds to load the pool, the seconds to score and rank it, and the child
process's peak RSS (``wait4`` rusage); each must stay under 4 GB at 270k rows. At 270k x 4096 the
representation file is 4.4 GB and the datastore 4.4 GB: about 10 GB of disk in all.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SOURCES = (  # name, share of the pool, (user words, assistant words) log-normal medians, turns
    ("flan_v2", 0.37, (160, 40), (1, 1)),
    ("cot", 0.37, (90, 70), (1, 1)),
    ("dolly", 0.055, (90, 110), (1, 1)),
    ("oasst1", 0.205, (50, 170), (1, 3)),
)
VOCAB = 50_000
CHUNK = 8192


def words(rng: np.random.Generator, n: int) -> list[str]:
    """Pseudo-words: 2-9 random letters, the same list for a seed."""
    lengths = rng.integers(2, 10, size=n)
    letters = rng.integers(0, 26, size=int(lengths.sum())).astype(np.uint8) + ord("a")
    blob = letters.tobytes().decode()
    ends = np.cumsum(lengths)
    return [blob[e - k: e] for e, k in zip(ends, lengths)]


class TextMaker:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        punct = [",", ".", "?", "!", ":", "(", ")", "'s", "1", "42"]
        self.vocab = np.array(words(self.rng, VOCAB) + punct, dtype=object)
        rank = np.arange(1, VOCAB + 1)
        p = 1.0 / rank ** 1.05
        self.cdf = np.cumsum(np.concatenate([p / p.sum() * 0.9, np.full(10, 0.01)]))

    def text(self, median: float) -> str:
        n = max(3, int(self.rng.lognormal(np.log(median), 0.6)))
        idx = np.searchsorted(self.cdf, self.rng.random(n) * self.cdf[-1])
        return " ".join(self.vocab[idx])


def write_pool(path: Path, rows: int, seed: int = 0) -> None:
    tm = TextMaker(seed)
    counts = [int(round(share * rows)) for _, share, _, _ in SOURCES]
    counts[0] += rows - sum(counts)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        for (name, _, (u, a), (lo, hi)), n in zip(SOURCES, counts):
            for i in range(n):
                msgs = []
                for _ in range(int(tm.rng.integers(lo, hi + 1))):
                    msgs += [{"role": "user", "content": tm.text(u)}, {"role": "assistant", "content": tm.text(a)}]
                fh.write(json.dumps({"dataset": name, "id": f"{name}_{i}", "messages": msgs}) + "\n")
    tmp.rename(path)


def write_target(path: Path, n_subtasks: int, per_subtask: int, seed: int = 1) -> None:
    tm = TextMaker(0)  # the pool's vocabulary
    tm.rng = np.random.default_rng(seed)
    with open(path, "w") as fh:
        for s in range(n_subtasks):
            for j in range(per_subtask):
                q = (f"The following are multiple choice questions (with answers) about subject {s}.\n\n"
                     + tm.text(60) + "".join(f"\n{c}. " + tm.text(6) for c in "ABCD") + "\nAnswer:")
                fh.write(json.dumps({"id": f"s{s}_{j}", "subtask": f"s{s}", "messages": [
                    {"role": "user", "content": q}, {"role": "assistant", "content": "The answer is: A"}]}) + "\n")


def write_rows(path: Path, n: int, dim: int, seed: int, dtype=np.float32, unit: bool = False,
               centers: int = 64) -> None:
    """Clustered rows (a mixture of Gaussians), chunk by chunk through plain file writes."""
    from less.gradients.store import NpyRowWriter

    rng = np.random.default_rng(seed)
    mu = rng.standard_normal((centers, dim), dtype=np.float32)
    w = NpyRowWriter(path.with_suffix(".tmp.npy"), n, dim, dtype)
    for s in range(0, n, CHUNK):
        k = min(CHUNK, n - s)
        x = mu[rng.integers(0, centers, size=k)] + 1.5 * rng.standard_normal((k, dim), dtype=np.float32)
        if unit:
            x /= np.linalg.norm(x, axis=1, keepdims=True)
        w.write(range(s, s + k), x)
    w.close()
    path.with_suffix(".tmp.npy").rename(path)


def write_ids(path: Path, ids: list[str]) -> None:
    with open(path, "w") as fh:
        fh.writelines(json.dumps({"id": i}) + "\n" for i in ids)


def make_data(d: Path, rows: int, dim: int, grad_dim: int) -> None:
    d.mkdir(parents=True, exist_ok=True)
    if not (d / "pool.jsonl").is_file():
        write_pool(d / "pool.jsonl", rows)
    if not (d / "target.jsonl").is_file():
        write_target(d / "target.jsonl", 57, 5)
    pool_ids = [json.loads(line)["id"] for line in open(d / "pool.jsonl")]
    target_ids = [json.loads(line)["id"] for line in open(d / "target.jsonl")]
    reps = d / "representations"
    reps.mkdir(exist_ok=True)
    if not (reps / "pool.npy").is_file():
        write_rows(reps / "pool.npy", rows, dim, seed=2)
        write_ids(reps / "pool_ids.jsonl", pool_ids)
    if not (reps / "target.npy").is_file():
        write_rows(reps / "target.npy", len(target_ids), dim, seed=3)
        write_ids(reps / "target_ids.jsonl", target_ids)
    if grad_dim and not (d / "datastore" / "manifest.json").is_file():
        files = []
        for split, ids, seed in (("pool", pool_ids, 4), ("target", target_ids, 5)):
            f = d / "features" / split
            f.mkdir(parents=True, exist_ok=True)
            name = f"ckpt1_d{grad_dim}.npy"
            write_rows(f / name, len(ids), grad_dim, seed, dtype=np.float16, unit=True)
            write_ids(f / "ids.jsonl", ids)
            (f / "features.json").write_text(json.dumps({
                "split": split, "gradient_type": "adam" if split == "pool" else "sgd", "normalized": True,
                "projection": "rademacher", "dims": [grad_dim], "dtype": "float16", "n": len(ids),
                "dropped": {}, "dropped_ids": [], "ids": "ids.jsonl",
                "checkpoints": [{"epoch": 1, "avg_lr": 1e-5, "files": {str(grad_dim): name}}]}))
            files.append({"path": f"../features/{split}/{name}", "checkpoint": 1, "split": split,
                          "gradient_type": "adam" if split == "pool" else "sgd", "dim": grad_dim,
                          "projection": "rademacher", "normalized": True, "dtype": "float16", "rows": len(ids),
                          "avg_lr": 1e-5, "lr_weight": 1.0, "ids": f"../features/{split}/ids.jsonl"})
        (d / "datastore").mkdir(exist_ok=True)
        (d / "datastore" / "manifest.json").write_text(json.dumps(
            {"pool": "../features/pool", "target": "../features/target", "files": files}))
    if grad_dim:  # the datastores trak/tracin and trackstar ask for, over the same rows (timing and memory only)
        man = json.loads((d / "datastore" / "manifest.json").read_text())
        for gtype, norm in VARIANTS:
            v = d / store_name(gtype, norm)
            v.mkdir(exist_ok=True)
            files = [{**f, "gradient_type": gtype if f["split"] == "pool" or gtype == "precond" else "sgd",
                      "normalized": norm} for f in man["files"]]
            (v / "manifest.json").write_text(json.dumps({**man, "files": files}))


VARIANTS = (("sgd", False), ("precond", True))


def store_name(gtype: str, normalize: bool) -> str:
    """The datastore folder of a composed ``datastore.gradient_type`` / ``normalize``."""
    return "datastore" if (gtype, normalize) == ("adam", True) else f"datastore_{gtype}_{str(normalize).lower()}"


def run_one(d: Path, name: str) -> None:
    """In the child: compose the method's config as run.py would, score and rank; print JSON."""
    import resource

    from hydra import compose, initialize_config_dir

    from less.data.formats import read_examples
    from less.paths import conf_dir
    from less.selection import registry
    from less.selection.registry import Request
    from less.selection.scoring import ranking_order

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"selection={name}"])
    m = registry.get(name)
    if m.check is not None:
        m.check(cfg)
    t = time.perf_counter()
    pool = read_examples(d / "pool.jsonl")
    target = None if m.target_free else read_examples(d / "target.jsonl")
    load_s = time.perf_counter() - t
    rss_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    t = time.perf_counter()
    store = d / store_name(cfg.datastore.gradient_type, bool(cfg.datastore.normalize))
    req = Request(cfg.selection, int(cfg.seed), pool, target, datastore=store,
                  representations=d / "representations")
    got = m.score(req)
    scores = np.asarray(getattr(got, "scores", got), dtype=np.float64)
    order = ranking_order(scores)
    score_s = time.perf_counter() - t
    print(json.dumps({"method": name, "load_s": load_s, "score_s": score_s, "rss_after_load_gib": rss_load,
                      "n_scored": len(scores), "n_selected": req.n_select(len(order))}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=270_000)
    p.add_argument("--dim", type=int, default=4096, help="width of the hidden-state representations")
    p.add_argument("--grad-dim", type=int, default=8192, help="LESS datastore dim (0: skip less)")
    p.add_argument("--dir", default=None, help="data folder (default /tmp/less-select-bench-<rows>x<dim>)")
    p.add_argument("--methods", default=None, help="comma-separated (default: every registered method)")
    p.add_argument("--json", default=None, help="also write one record per method to this JSON file")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--make", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    d = Path(a.dir or f"/tmp/less-select-bench-{a.rows}x{a.dim}")
    if a.make:
        make_data(d, a.rows, a.dim, a.grad_dim)
        return
    if a.child:
        run_one(d, a.child)
        return
    from less.gradients.store import NpyRows
    from less.selection import registry

    t = time.perf_counter()  # written by a child process, so no memory map of it lingers here
    me = [sys.executable, str(Path(__file__).resolve()), "--dir", str(d)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if subprocess.run([*me, "--make", "--rows", str(a.rows), "--dim", str(a.dim), "--grad-dim", str(a.grad_dim)],
                      cwd=ROOT, env=env).returncode:
        raise SystemExit("writing the benchmark data failed")
    shape = NpyRows(d / "representations" / "pool.npy").shape
    if shape != (a.rows, a.dim):
        raise SystemExit(f"{d} holds {shape[0]} x {shape[1]} representations, not {a.rows} x {a.dim}: "
                         "use another --dir")
    size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) / 2**30
    print(f"data: {d} ({size:.1f} GiB), ready in {time.perf_counter() - t:.0f} s; {a.rows:,} pool rows, "
          f"representations {a.dim}-dim float32" + (f", datastore {a.grad_dim}-dim float16" if a.grad_dim else ""))
    methods = a.methods.split(",") if a.methods else registry.names()
    if not a.grad_dim and "less" in methods:
        methods.remove("less")
    print(f"{'method':<10} {'load s':>7} {'score s':>8} {'RSS after load':>15} {'peak RSS':>9}   (GiB)")
    records = []
    for name in methods:
        proc = subprocess.Popen([*me, "--child", name], cwd=ROOT, stdout=subprocess.PIPE, env=env)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        peak = usage.ru_maxrss / 2**20  # KiB -> GiB
        if proc.returncode:
            print(f"{name:<10} failed (exit {proc.returncode}), peak RSS {peak:.2f} GiB")
            records.append({"method": name, "failed": proc.returncode, "peak_rss_gib": peak})
            continue
        r = json.loads(out.decode().strip().splitlines()[-1])
        records.append({**r, "peak_rss_gib": peak})
        print(f"{name:<10} {r['load_s']:>7.1f} {r['score_s']:>8.2f} {r['rss_after_load_gib']:>15.2f} "
              f"{peak:>9.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()

"""The attribution methods beside LESS (TRAK, TracIn, TrackStar) against their formulas written out
on brute-force per-example gradients: a run of each on the embedded default with unprojected
fp32 features (``datastore.projection=none``) and a small pool, then every pool example's and D_val
example's gradient recomputed one at a time with autograd at every warmup checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import compose, run_expecting_error, run_pipeline

SMALL = ["pool.n_per_skill=6", "warmup.lora.r=2", "warmup.epochs=2", "datastore.projection=none",
         "datastore.dtype=float32", "stages=[prepare,warmup,datastore,select]"]
_GRADS: dict = {}  # brute-force gradients by (warmup dir, precond): TRAK and TracIn share them


@pytest.fixture(scope="module")
def runs(shared_cache, tmp_path_factory):
    """{method: results.json} with ``artifacts`` naming every artifact the run used, cached or not."""
    from less.runner import Runner

    out = tmp_path_factory.mktemp("attribution")
    got = {}
    for m in ("trak", "tracin", "trackstar"):
        over = [f"cache_dir={shared_cache}", "logger=none", f"selection={m}", *SMALL]
        res = run_pipeline(over[2:], shared_cache, out / m)
        runner = Runner(compose(over, hydra=False), out / "lookup")
        res["artifacts"] = {n: {"dir": str(runner.lookup(n).dir)}
                            for n in ("selector", "warmup", "pool", "target", "datastore", "select")}
        got[m] = res
    return got


def brute_gradients(res: dict, precond: bool) -> dict[int, dict[str, tuple[list[str], np.ndarray]]]:
    """{epoch: {split: (ids, G)}}: each example's loss gradient w.r.t. the LoRA weights (float64,
    flattened in parameter order), computed alone; ``precond``: divided by sqrt(v + eps) of the
    checkpoint's Adam second moment."""
    from peft import PeftModel

    from less.checkpoints import CHECKPOINT_META
    from less.data.formats import encode_example, read_examples
    from less.gradients.adam import load_moments
    from less.gradients.per_example import per_example_loss
    from less.models import load_model, load_tokenizer

    cfg = compose(SMALL, hydra=False)
    art = res["artifacts"]
    memo = (art["warmup"]["dir"], precond)
    if memo in _GRADS:
        return _GRADS[memo]
    model_dir, warm = art["selector"]["dir"], Path(art["warmup"]["dir"])
    tok = load_tokenizer(cfg.model, model_dir)
    examples = {"pool": read_examples(Path(art["pool"]["dir"]) / "pool.jsonl"),
                "target": read_examples(Path(art["target"]["dir"]) / "target.jsonl")}
    out = {}
    for c in json.loads((warm / "warmup.json").read_text())["checkpoints"]:
        ckpt = warm / c["dir"]
        model = PeftModel.from_pretrained(load_model(cfg.model, model_dir, torch.device("cpu")), str(ckpt),
                                          is_trainable=True).double()
        model.eval()
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if precond:
            names = json.loads((ckpt / CHECKPOINT_META).read_text())["optimizer_param_names"]
            mom = load_moments(ckpt, names, {n: tuple(p.shape) for n, p in named})
            eps = mom.eps if mom.eps is not None else 1e-8
        out[c["epoch"]] = {}
        for split, rows in examples.items():
            ids, grads = [], []
            for ex in rows:
                input_ids, labels = encode_example(ex, tok, cfg.datastore.max_length, completion_eos=split == "pool",
                                                   truncation="right" if split == "pool" else "left")
                loss = per_example_loss(model(input_ids=torch.tensor([input_ids])).logits,
                                        torch.tensor([labels])).sum()
                gs = torch.autograd.grad(loss, [p for _, p in named])
                if precond:
                    gs = [g / torch.sqrt(mom.by_name[n][1].double() + eps) for (n, _), g in zip(named, gs)]
                ids.append(str(ex["id"]))
                grads.append(torch.cat([g.flatten() for g in gs]).numpy())
            out[c["epoch"]][split] = (ids, np.stack(grads))
    _GRADS[memo] = out
    return out


def pool_scores(res: dict) -> dict[str, float]:
    """The run's score of every pool example, read from its selection artifact."""
    from less.stages.validate import scores_of

    d = Path(res["artifacts"]["select"]["dir"])
    ids = [line.split(",")[1] for line in (d / "ranking.csv").read_text().splitlines()[1:]]
    return dict(zip(ids, scores_of(d, ids)[0].tolist()))


def aggregate(per_target: np.ndarray, target_ids: list[str], res: dict) -> np.ndarray:
    """max over subtasks of the mean over the subtask's target examples (pool x target -> pool)."""
    from less.data.formats import read_examples

    sub = {str(r["id"]): r["subtask"] for r in read_examples(Path(res["artifacts"]["target"]["dir"]) / "target.jsonl")}
    labels = np.array([sub[t] for t in target_ids])
    return np.stack([per_target[:, labels == s].mean(1) for s in dict.fromkeys(labels)], 1).max(1)


def learning_rates(res: dict) -> dict[int, float]:
    man = json.loads((Path(res["artifacts"]["datastore"]["dir"]) / "manifest.json").read_text())
    return {f["checkpoint"]: f["avg_lr"] for f in man["files"] if f["split"] == "pool"}


def paired_scores(res: dict, want: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """(the run's scores, the formula's) over the same pool ids, in one order; empty when the ids differ."""
    got = pool_scores(res)
    if set(got) != set(want):
        return np.array([]), np.array([0.0])
    ids = sorted(want)
    return np.array([got[i] for i in ids]), np.array([want[i] for i in ids])


def agree(got: np.ndarray, want: np.ndarray) -> bool:
    """Equal within float32 features' rounding: rtol 1e-3, atol 1e-3 of the largest score."""
    return got.shape == want.shape and bool(np.allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max()))


def test_tracin_is_the_lr_weighted_sum_of_gradient_dot_products(runs):
    """sum_c lr_c <g_c(z), g_c(z')>, unprojected features being g / sqrt(D) (inner products / D)."""
    res = runs["tracin"]
    grads, lrs = brute_gradients(res, precond=False), learning_rates(res)
    total = None
    for epoch, g in grads.items():
        (pool_ids, p), (target_ids, t) = g["pool"], g["target"]
        term = lrs[epoch] * (p @ t.T) / p.shape[1]
        total = term if total is None else total + term
    got, want = paired_scores(res, dict(zip(pool_ids, aggregate(total, target_ids, res))))
    assert agree(got, want), np.abs(got - want).max() if got.shape == want.shape else 'pool ids differ'


def test_trak_is_the_damped_kernel_solve_on_full_gradients(runs):
    """(1/C) sum_c phi_c(z')^T (G_c^T G_c + lambda_c I)^-1 phi_c(z) with an explicit D x D solve,
    lambda_c = damping x tr(G_c^T G_c) / D (the 1/sqrt(D) feature scale cancels)."""
    res = runs["trak"]
    grads, damping = brute_gradients(res, precond=False), 0.01
    total, n = None, 0
    for g in grads.values():
        (pool_ids, p), (target_ids, t) = g["pool"], g["target"]
        k = p.T @ p
        k[np.diag_indices_from(k)] += damping * np.trace(k) / k.shape[0]
        term = p @ np.linalg.solve(k, t.T)
        total, n = (term if total is None else total + term), n + 1
    got, want = paired_scores(res, dict(zip(pool_ids, aggregate(total / n, target_ids, res))))
    assert agree(got, want), np.abs(got - want).max() if got.shape == want.shape else 'pool ids differ'


def test_trackstar_preconditions_and_normalises_both_sides(runs):
    res = runs["trackstar"]
    grads, lrs = brute_gradients(res, precond=True), learning_rates(res)
    w = {e: lr / sum(lrs.values()) for e, lr in lrs.items()}
    total = None
    for epoch, g in grads.items():
        (pool_ids, p), (target_ids, t) = g["pool"], g["target"]
        p = p / np.linalg.norm(p, axis=1, keepdims=True)
        t = t / np.linalg.norm(t, axis=1, keepdims=True)
        term = w[epoch] * (p @ t.T)
        total = term if total is None else total + term
    got, want = paired_scores(res, dict(zip(pool_ids, aggregate(total, target_ids, res))))
    assert agree(got, want), np.abs(got - want).max() if got.shape == want.shape else 'pool ids differ'


def test_each_method_sets_its_datastore_and_reports_a_target_share(runs):
    want = {"trak": ("sgd", False), "tracin": ("sgd", False), "trackstar": ("precond", True)}
    for m, res in runs.items():
        store = Path(res["artifacts"]["datastore"]["dir"])
        files = json.loads((store / "manifest.json").read_text())["files"]
        assert {(f["split"], f["gradient_type"], f["normalized"]) for f in files} == \
            {("pool", *want[m]), ("target", "precond" if m == "trackstar" else "sgd", want[m][1])}
        assert res["selection"]["method"] == m and 0 <= res["selection"]["target_share"] <= 1
    # TRAK and TracIn read one datastore
    assert runs["trak"]["artifacts"]["datastore"]["dir"] == runs["tracin"]["artifacts"]["datastore"]["dir"]


def test_overlap_with_less_is_with_less_on_its_own_features(runs, shared_cache, tmp_path):
    """jaccard_vs_less compares with LESS on Adam, normalised features, not LESS on TRAK's datastore."""
    less = run_pipeline(["selection=less", *SMALL], shared_cache, tmp_path / "less")
    again = run_pipeline(["selection=trak", *SMALL], shared_cache, tmp_path / "trak")  # every stage cached
    ids = lambda p: {json.loads(line)["id"] for line in open(p)}  # noqa: E731
    a, b = ids(again["selection"]["selected"]), ids(less["selection"]["selected"])
    assert again["selection"]["jaccard_vs_less"] == pytest.approx(len(a & b) / len(a | b))


@pytest.mark.parametrize("overrides, message", [
    (["selection=trak", "selection.damping=0"], "selection.damping must be a number > 0"),
    (["selection=trak", "datastore.gradient_type=adam"],
     "selection=trak needs the pool's plain gradients, not normalised: set datastore.gradient_type=sgd "
     "datastore.normalize=false (the config asks for gradient_type=adam, normalize=false)"),
    (["selection=tracin", "datastore.normalize=true"], "selection=tracin needs the pool's plain gradients"),
    (["selection=trackstar", "datastore.gradient_type=adam"],
     "selection=trackstar needs second-moment-preconditioned, unit-normalised gradients on both sides: "
     "set datastore.gradient_type=precond datastore.normalize=true"),
    (["datastore.gradient_type=precond", "datastore.use_warmup=false"], "datastore.use_warmup=false has no optimizer state"),
])
def test_bad_settings_are_one_line(overrides, message, tmp_path, capsys):
    err = run_expecting_error(overrides, tmp_path / "cache", tmp_path / "out", capsys)
    assert message in err

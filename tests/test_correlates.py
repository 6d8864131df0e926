"""What a selection correlates with (less.stages.correlates, less.stages.losses): Spearman's rho
and its interval against scipy and by coverage, the stored per-example losses against one
example at a time through the model's own loss, the labelled-token counts against the encoding,
the scores mapped back to their ids, and the report of a run with and without warmup checkpoints."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from less.stages.correlates import response_chars, scores_by_id, spearman_interval
from tests.conftest import compose, run_pipeline


def test_spearman_matches_scipy_with_ties():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    x = rng.integers(0, 6, 200).astype(float)  # many ties
    y = x + rng.normal(0, 2, 200)
    got = spearman_interval(x, y)
    assert got["rho"] == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    assert got["ci_low"] < got["rho"] < got["ci_high"] and got["n"] == 200
    assert spearman_interval([1, 2, 3], [3, 2, 1])["rho"] is None  # too few pairs
    assert spearman_interval([1, 1, 1, 1, 1], [1, 2, 3, 4, 5])["rho"] is None  # a constant side


def test_spearman_interval_covers_the_population_value():
    """Bivariate normal with correlation r: Spearman's population value is (6/pi) asin(r/2); the
    95% interval (Fisher z, variance 1.06/(n-3)) covers it in about 95% of 400 samples of 60."""
    r = 0.5
    truth = 6 / np.pi * np.arcsin(r / 2)
    rng = np.random.default_rng(1)
    cov = np.array([[1, r], [r, 1]])
    hits = 0
    for _ in range(400):
        x, y = rng.multivariate_normal([0, 0], cov, size=60).T
        got = spearman_interval(x, y)
        hits += got["ci_low"] <= truth <= got["ci_high"]
    assert 0.91 <= hits / 400 <= 0.99, hits / 400


def test_scores_map_back_to_their_ids_through_the_ranking(tmp_path):
    from less.selection.scoring import ranking_order

    scores = np.array([0.3, 0.9, 0.3, -0.2, 0.9])
    ids = ["a", "b", "c", "d", "e"]
    np.save(tmp_path / "scores.npy", scores)
    with open(tmp_path / "ranking.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["rank", "id", "source", "score"])
        for rank, i in enumerate(ranking_order(scores), 1):
            w.writerow([rank, ids[i], "s", scores[i]])
    assert scores_by_id(tmp_path) == dict(zip(ids, scores.tolist()))


def test_response_length_counts_assistant_turns_or_the_completion():
    conv = {"messages": [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": " abc "},
                         {"role": "user", "content": "more"}, {"role": "assistant", "content": "de"}]}
    assert response_chars(conv) == 5
    assert response_chars({"prompt": "q", "completion": " xyz "}) == 3  # stripped, as the turns are


def test_a_run_reports_its_correlates_and_the_losses_are_the_models_own(default_run, tiny_model_cfg):
    """The embedded default (LESS): every correlate with its interval; each stored loss equals the
    model's own loss on that example alone (the last warmup checkpoint's adapter); the labelled
    tokens are the encoding's; the plot is linked into the run directory."""
    from peft import PeftModel

    from less.checkpoints import last_checkpoint
    from less.data.formats import IGNORE_INDEX, read_examples
    from less.models import load_model, load_tokenizer
    from less.stages.features import encode_split
    from less.stages.losses import read
    from scipy.stats import spearmanr

    out, res = default_run
    c = res["selection"]["correlates"]
    assert set(c["spearman"]) == {"response_chars", "labelled_tokens", "loss"}
    for v in c["spearman"].values():
        assert v["n"] == 600 and -1 <= v["ci_low"] < v["rho"] < v["ci_high"] <= 1
    shares = c["sources"]
    assert shares["synth_color"]["pool"] == pytest.approx(0.125)
    assert sum(s["selection"] for s in shares.values()) == pytest.approx(1.0)
    assert shares["synth_color"]["selection"] == res["selection"]["target_share"]
    assert (out / "correlates.png").resolve() == Path(c["plot"]) and Path(c["plot"]).stat().st_size > 10_000

    losses = read(Path(res["artifacts"]["pool_losses"]["dir"]))
    model_dir = res["artifacts"]["model"]["dir"]
    pool = read_examples(Path(res["artifacts"]["pool"]["dir"]) / "pool.jsonl")
    cfg = compose(["logger=none"], hydra=False)
    tok = load_tokenizer(tiny_model_cfg, model_dir)
    enc = encode_split(pool, tok, cfg, "pool", Path("pool.jsonl"))
    ckpt = last_checkpoint(Path(res["artifacts"]["warmup"]["dir"]))
    model = PeftModel.from_pretrained(load_model(tiny_model_cfg, model_dir, torch.device("cpu")), str(ckpt)).eval()
    with torch.no_grad():
        for i in (0, 17, 301):
            ids, labels = torch.tensor([enc.input_ids[i]]), torch.tensor([enc.labels[i]])
            assert losses[enc.ids[i]] == pytest.approx(model(input_ids=ids, labels=labels).loss.item(), rel=1e-4)

    # the reported rhos, recomputed from the selection's scores and values derived here
    scores = scores_by_id(Path(res["artifacts"]["select"]["dir"]))
    with open(Path(res["artifacts"]["select"]["dir"]) / "ranking.csv", newline="") as fh:
        for r in csv.DictReader(fh):  # ranking.csv prints 8 significant digits
            assert scores[r["id"]] == pytest.approx(float(r["score"]), rel=1e-7)
    counts = {i: sum(t != IGNORE_INDEX for t in lab[1:]) for i, lab in zip(enc.ids, enc.labels)}
    chars = {str(r["id"]): len(r["messages"][-1]["content"].strip()) for r in pool}  # single-turn pool
    for name, v in (("labelled_tokens", counts), ("loss", losses), ("response_chars", chars)):
        ids = sorted(v)
        assert c["spearman"][name]["rho"] == pytest.approx(
            spearmanr([scores[i] for i in ids], [v[i] for i in ids]).statistic, abs=1e-9), name


def test_the_loss_correlate_can_be_turned_off(default_run, shared_cache, tmp_path):
    res = run_pipeline(["correlates.loss=false", "stages=[prepare,warmup,datastore,select]"], shared_cache,
                       tmp_path / "out")
    assert "pool_losses" not in res["artifacts"]
    assert res["selection"]["correlates"]["spearman"]["loss"]["reason"] == "correlates.loss=false"
    assert res["selection"]["correlates"]["spearman"]["labelled_tokens"] == \
        default_run[1]["selection"]["correlates"]["spearman"]["labelled_tokens"]


def test_a_method_without_warmup_reports_no_loss_correlate_and_says_why(shared_cache, tmp_path):
    res = run_pipeline(["selection=random", "stages=[prepare,select]"], shared_cache, tmp_path / "out")
    sp = res["selection"]["correlates"]["spearman"]
    assert sp["loss"]["rho"] is None and "random" in sp["loss"]["reason"]
    assert sp["labelled_tokens"]["n"] == 600 and sp["labelled_tokens"]["rho"] is not None
    assert "pool_losses" not in res["artifacts"] and "warmup" not in res["artifacts"]
    assert res["stages"]["select"]["dir"] == res["artifacts"]["select"]["dir"]  # the step names the selection
    again = run_pipeline(["selection=random", "stages=[prepare,select]"], shared_cache, tmp_path / "again")
    assert again["stages"]["select"]["cached"] and again["artifacts"]["correlates"]["cached"]
    assert again["selection"]["n_selected"] == res["selection"]["n_selected"]  # the selection's own report, cached
    assert again["selection"]["correlates"] == {**res["selection"]["correlates"]}

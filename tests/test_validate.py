"""The validate step (less.stages.validate): random subsets trained and evaluated as ordinary
artifacts, the LDS recomputed from them, resumption after a kill, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from less.stats import lds
from tests.conftest import compose, kill_run, ok, run_cli, run_expecting_error, run_pipeline

VALIDATE = ["experiment=validate", "validate.subsets=3", "validate.alpha=0.2"]


def subset_keys(cache: Path) -> list[str]:
    """The eval keys of the validation subsets, in subset order (validation_subsets' key.json)."""
    (spec,) = [json.loads(p.read_text()) for p in (cache / "validation_subsets").glob("*/key.json")]
    return spec["config"]["evals"] if "config" in spec else spec["spec"]["config"]["evals"]


@pytest.fixture(scope="module")
def validated(shared_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("validate")
    return out, run_pipeline(VALIDATE, shared_cache, out)


def test_lds_is_recomputed_from_the_subsets(validated, shared_cache):
    _, r = validated
    v = r["validate"]
    assert (v["method"], v["task"], v["subsets"], v["alpha"]) == ("less", "less_synthetic_color", 3, 0.2)
    sub = Path(r["artifacts"]["validation_subsets"]["dir"])
    ids, members = json.loads((sub / "ids.json").read_text()), np.load(sub / "members.npy")
    assert members.shape == (3, 600) and members.sum(axis=1).tolist() == [120] * 3
    assert len({m.tobytes() for m in members}) == 3  # three different subsets
    # each subset's loss is the eval artifact's of a run that selects that subset itself
    losses = []
    for k in range(3):
        cfg_k = ["selection=subset", f"selection.index={k}", "selection.fraction=0.2", "eval.accuracy=false",
                 "eval.base=false"]
        from less.runner import Runner

        runner = Runner(compose([f"cache_dir={shared_cache}", "logger=none", *cfg_k], hydra=False), Path("."))
        ev, sel = runner.lookup("eval"), runner.lookup("select")
        assert ev.cached and sel.cached, f"subset {k} is not the artifact a plain run names"
        chosen = {json.loads(line)["id"] for line in open(sel.dir / "selected.jsonl")}
        assert chosen == {i for i, m in zip(ids, members[k]) if m}
        losses.append(json.loads((ev.dir / "metrics.json").read_text())["less_synthetic_color"]["target_loss"])
    scores = {}
    for line in open(r["selection"]["ranking"]).readlines()[1:]:
        _, i, _, s = line.rstrip("\n").split(",")
        scores[i] = float(s)
    want = lds(np.array([scores[i] for i in ids]), members, losses, seed=0, n_boot=2000)
    assert v["lds"] == pytest.approx(want.value) and v["ci_low"] == pytest.approx(want.ci_low)
    assert v["ci_high"] == pytest.approx(want.ci_high)


def test_second_method_reuses_the_subsets(validated, shared_cache, tmp_path):
    r = run_pipeline([*VALIDATE, "selection=length"], shared_cache, tmp_path)
    assert r["stages"]["validate"]["cached"] is False  # its own lds ...
    assert r["artifacts"]["validation_subsets"]["cached"] is True  # ... on the same subsets
    assert r["validate"]["method"] == "length"


def test_killed_validation_resumes(shared_cache, tmp_path):
    from tests.conftest import linked_cache

    cache = linked_cache(shared_cache, tmp_path / "cache", kinds=("model", "pool", "target", "warmup", "datastore",
                                                                   "select", "train", "eval"))
    args = [*VALIDATE, "validate.subsets=4", "validate.alpha=0.1"]
    ok(run_cli([*args, "stages=[prepare,warmup,datastore,select,train,eval]", "logger=none"], cache, tmp_path / "o0"))
    trains = lambda: {p.name for p in (cache / "train").iterdir() if not p.name.startswith(".")}  # noqa: E731
    before = trains()
    # a subset of 60 examples trains for 8 epochs x 15 micro-batches of 4: the 130th is in the second
    proc = kill_run("train:130", args, cache, tmp_path / "killed")
    assert proc.returncode != 0
    done = trains() - before
    assert len(done) == 1 and not any((cache / "validation_subsets").glob("[0-9a-f]*"))
    resumed = ok(run_cli([*args, "logger=none"], cache, tmp_path / "o1"))
    assert len(trains() - before) == 4
    assert resumed.stdout.count("built: train/") + resumed.stderr.count("built: train/") == 3


@pytest.mark.parametrize("overrides, message", [
    (["validate.alpha=1.0"], "validate.alpha must be in (0, 1)"),
    (["validate.alpha=0"], "validate.alpha must be in (0, 1)"),
    (["validate.subsets=2"], "validate.subsets must be an integer >= 3"),
    (["selection=full"], "selection.method=full has no scores to validate (LDS)"),
    (["validate.task=mmlu"], "validate.task='mmlu' is not in eval.tasks"),
    (["eval.target_loss=false"], "eval.target_loss is false"),
    (["eval.target_loss=false", "eval.accuracy=false", "stages=[eval]"], "eval.accuracy and eval.target_loss are both false"),
])
def test_bad_validation_config_is_one_line(overrides, message, tmp_path, capsys):
    err = run_expecting_error(["experiment=validate", *overrides], tmp_path / "cache", tmp_path / "out", capsys)
    assert message in err


def test_a_subset_of_less_than_one_example_is_one_line(shared_cache, tmp_path, capsys):
    err = run_expecting_error(["selection=subset", "selection.fraction=0.001", "stages=[prepare,select]"],
                              shared_cache, tmp_path / "out", capsys)
    assert "selection.fraction (validate.alpha) = 0.001 of a pool of 600 is less than one example" in err


def test_scores_are_read_at_full_precision(tmp_path):
    """ranking.csv rounds scores to 8 digits; the LDS takes scores.npy, matched to ids through the
    ranking's order, so two scores that round alike stay apart."""
    import csv

    from less.errors import DataError
    from less.selection.scoring import ranking_order
    from less.stages.validate import scores_of

    ids = ["a", "b", "c", "d"]
    scores = np.array([1.0, 1.0 + 1e-12, 0.25, -3.0])
    np.save(tmp_path / "scores.npy", scores)
    with open(tmp_path / "ranking.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["rank", "id", "source", "score"])
        for rank, i in enumerate(ranking_order(scores), 1):
            w.writerow([rank, ids[i], "s", f"{scores[i]:.8g}"])
    got, unscored = scores_of(tmp_path, ["d", "c", "b", "a"])
    assert got.tolist() == [-3.0, 0.25, 1.0 + 1e-12, 1.0] and unscored == []
    # an example the method left unranked (LESS: over-long) counts as the mean score
    got, unscored = scores_of(tmp_path, ["a", "e", "b", "c", "d"])
    assert unscored == ["e"] and got[1] == pytest.approx(scores.mean()) and got[0] == 1.0
    # a ranking of another pool is an error
    with pytest.raises(DataError, match="1 ranked examples are not in the pool .e.g. a."):
        scores_of(tmp_path, ["e", "b", "c", "d"])
    np.save(tmp_path / "scores.npy", scores * 2)  # not the scores the ranking lists
    with pytest.raises(DataError, match="ranking.csv and scores.npy disagree"):
        scores_of(tmp_path, ids)

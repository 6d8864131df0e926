"""The pipeline end to end: results.json, artifacts, stage subsets, cache reuse and bad input
(in-process), and run.py itself in subprocesses: Hydra's errors, a sweep, W&B."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ok, run_cli, run_expecting_error, run_pipeline
from tests.wandb_records import read_records

REQUIRED = ["data.pool.n", "data.pool.by_source", "data.target.name", "data.target.n",
            "data.target.by_subtask", "selection.method", "selection.n_selected", "selection.ranking",
            "selection.selected", "selection.target_share", "selection.base_share", "wandb.mode",
            "wandb.dir", "train.train_loss", "warmup.train_loss", "accounting.tokens.pool"]


def get(d, dotted):
    for part in dotted.split("."):
        d = d[part]
    return d


def test_default_run_results(default_run):
    out, res = default_run
    for key in REQUIRED:
        get(res, key)
    assert res["data"]["pool"]["n"] == sum(res["data"]["pool"]["by_source"].values()) == 600
    assert res["data"]["target"]["by_subtask"] == {"five_words": 4, "four_words": 4, "three_words": 4}
    for name in ("prepare", "warmup", "datastore", "select", "train", "eval"):
        st = res["stages"][name]
        assert st["seconds"] >= 0 and isinstance(st["cached"], bool) and Path(st["dir"]).is_dir()
        assert st["key"] == res["artifacts"][{"prepare": "pool"}.get(name, name)]["key"]
    for name, a in res["artifacts"].items():  # every artifact of the run, with its key
        assert Path(a["dir"]).name == a["key"] and (Path(a["dir"]) / "key.json").is_file(), name
    sel = res["selection"]
    assert sel["n_selected"] == 30 and sel["base_share"] == pytest.approx(1 / 8)
    assert sel["target_share"] >= 3 * sel["base_share"], sel
    assert 0 <= res["eval"]["less_synthetic_color"]["acc"] <= 1
    assert 0 <= res["eval_base"]["less_synthetic_color"]["acc"] <= 1  # the untrained model, eval.base: true
    assert res["artifacts"]["eval_base"]["key"] != res["artifacts"]["eval"]["key"]
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(res))


def test_less_beats_random_downstream(default_run, shared_cache, tmp_path):
    """The embedded default's headline: trained on the LESS 5%, the tiny model does the target skill
    it could not do before; trained on a random 5% it does not. LESS's accuracy exceeds random's, and
    the base model's, by more than twice the combined standard error (lm-eval's, over the 90 test
    questions). A pipeline whose training ignores the selection fails here."""
    import math

    _, less = default_run
    rnd = run_pipeline(["selection=random"], shared_cache, tmp_path / "random")
    a, r = less["eval"]["less_synthetic_color"], rnd["eval"]["less_synthetic_color"]
    base = less["eval_base"]["less_synthetic_color"]
    assert rnd["eval_base"] == less["eval_base"]  # one base model, evaluated once (cached)
    assert rnd["artifacts"]["eval_base"]["cached"]
    for other in (r, base):
        assert a["acc"] - other["acc"] > 2 * math.hypot(a["acc_stderr"], other["acc_stderr"]), (a, other)
    assert less["selection"]["target_share"] > 2 * rnd["selection"]["target_share"]


def test_ranking_and_selection_artifacts(default_run):
    _, res = default_run
    rows = list(csv.DictReader(open(res["selection"]["ranking"])))
    assert list(rows[0]) == ["rank", "id", "source", "score"]
    assert len(rows) == 600 and len({r["id"] for r in rows}) == 600
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    selected = [json.loads(line) for line in open(res["selection"]["selected"])]
    assert [s["id"] for s in selected] == [r["id"] for r in rows[:30]]
    assert all({"dataset", "id", "messages"} <= set(s) for s in selected)


def test_datastore_manifest(default_run):
    _, res = default_run
    d = Path(res["stages"]["datastore"]["dir"])
    files = json.loads((d / "manifest.json").read_text())["files"]
    assert {(f["split"], f["dim"]) for f in files} == {(s, k) for s in ("pool", "target") for k in (256, 1024)}
    assert {f["checkpoint"] for f in files} == {1, 2, 3, 4}
    for f in files:
        arr = np.load(d / f["path"], mmap_mode="r")
        assert arr.shape == (f["rows"], f["dim"])
        assert f["gradient_type"] == ("adam" if f["split"] == "pool" else "sgd")
        np.testing.assert_allclose(np.linalg.norm(np.asarray(arr, np.float32), axis=1), 1, atol=2e-3)
        assert len([json.loads(x)["id"] for x in open(d / f["ids"])]) == f["rows"]
    weights = {f["checkpoint"]: f["lr_weight"] for f in files if f["split"] == "pool" and f["dim"] == 256}
    assert sum(weights.values()) == pytest.approx(1) and weights[1] > weights[4]  # linear decay


def test_warmup_checkpoints_record_epoch_average_lr(default_run):
    """Each checkpoint's avg_lr equals the mean over that epoch's steps of the linear schedule."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    _, res = default_run
    warm = json.loads((Path(res["stages"]["warmup"]["dir"]) / "warmup.json").read_text())
    n, batch, epochs, lr = warm["n_examples"], 8, 4, 2e-3  # conf/warmup/tiny.yaml
    steps_per_epoch = -(-n // batch)
    total = steps_per_epoch * epochs
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = get_linear_schedule_with_warmup(opt, -(-total * 3 // 100), total)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert [c["epoch"] for c in warm["checkpoints"]] == [1, 2, 3, 4]
    for c in warm["checkpoints"]:
        e = c["epoch"]
        expected = sum(lrs[(e - 1) * steps_per_epoch: e * steps_per_epoch]) / steps_per_epoch
        assert c["avg_lr"] == pytest.approx(expected, rel=1e-6)
        assert c["step"] == e * steps_per_epoch
        meta = json.loads((Path(res["stages"]["warmup"]["dir"]) / c["dir"] / "less_checkpoint.json").read_text())
        assert all("lora_" in name for name in meta["optimizer_param_names"])
        assert len(meta["optimizer_param_names"]) == 2 * 4 * 2  # layers x modules x (A, B)


def test_stage_subset_takes_inputs_from_cache(default_run, shared_cache, tmp_path):
    res = run_pipeline(["stages=[select,train]", "selection.fraction=0.1"], shared_cache, tmp_path)
    assert set(res["stages"]) == {"select", "train"}
    assert res["selection"]["n_selected"] == 60
    assert "warmup" not in res["artifacts"] and res["artifacts"]["datastore"]["cached"]


def test_missing_cached_input_is_a_one_line_error(tmp_path, capsys):
    err = run_expecting_error(["stages=[select]"], tmp_path / "empty-cache", tmp_path / "out", capsys)
    assert "not in the cache" in err and "add 'prepare' to stages" in err


def _no_leftovers(cache: Path):
    assert not list(cache.rglob(".tmp-*")), "a half-written artifact was left behind"
    assert not (cache / "pool").exists() or not [p for p in (cache / "pool").iterdir() if not p.name.endswith(".lock")]


@pytest.mark.parametrize("args,needle", [
    (["stages=[prepare,bogus]"], "stages: unknown stage(s) ['bogus']"),
    (["selection.fraction=2"], "selection.fraction"),
    (["selection.method=nope"], "selection.method must be one of ["),
])
def test_bad_config_values_are_one_line_errors(args, needle, tmp_path, capsys):
    assert needle in run_expecting_error(args, tmp_path / "cache", tmp_path / "out", capsys)
    _no_leftovers(tmp_path / "cache")


@pytest.mark.parametrize("args,needle", [(["foo=1"], "foo"), (["pool=nope"], "nope")])
def test_hydra_refuses_unknown_keys_and_options(args, needle, tmp_path):
    proc = run_cli([*args, "logger=none"], tmp_path / "cache", tmp_path / "out")
    assert proc.returncode != 0 and needle in proc.stderr
    assert not (tmp_path / "cache").exists()


def _bad_file_cases(tmp_path: Path):
    good = json.dumps({"id": "a", "messages": [{"role": "user", "content": "q"},
                                               {"role": "assistant", "content": "a"}]})
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "broken.jsonl").write_text(good + "\n{oops\n")
    lines = [json.dumps({"id": f"r{i}", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
             for i in range(9)]
    lines[6] = lines[6][:11] + "\udcff" + lines[6][11:]  # byte 0xff at column 12 of line 7 (surrogateescape)
    (tmp_path / "latin.jsonl").write_bytes("\n".join(lines).encode("utf-8", "surrogateescape") + b"\n")
    return [
        (["pool=jsonl", f"pool.files=[{tmp_path}/empty.jsonl]"], "has no examples"),
        (["pool=jsonl", f"pool.files=[{tmp_path}/broken.jsonl]"], f"{tmp_path}/broken.jsonl:2: malformed JSON"),
        (["pool=jsonl", f"pool.files=[{tmp_path}/missing.jsonl]"], "missing.jsonl: pool file not found (set by pool.files)"),
        (["target=jsonl", f"target.file={tmp_path}/empty.jsonl", "stages=[prepare]"], "has no examples"),
        (["pool=jsonl", f"pool.files=[{tmp_path}/latin.jsonl]"],
         f"error: {tmp_path}/latin.jsonl:7: not valid UTF-8 (byte 0xff at column 12)"),
        (["target=jsonl", f"target.file={tmp_path}/latin.jsonl", "stages=[prepare]"],
         f"error: {tmp_path}/latin.jsonl:7: not valid UTF-8 (byte 0xff at column 12)"),
    ]


@pytest.mark.parametrize("case", range(6))
def test_bad_input_files_give_one_line_errors(case, tmp_path, capsys):
    args, needle = _bad_file_cases(tmp_path)[case]
    assert needle in run_expecting_error(args, tmp_path / "cache", tmp_path / "out", capsys)
    _no_leftovers(tmp_path / "cache")
    assert not (tmp_path / "out" / "results.json").exists()


def test_logger_none_writes_no_wandb_files(shared_cache, tmp_path):
    res = run_pipeline(["stages=[prepare]"], shared_cache, tmp_path)
    assert res["wandb"] == {"mode": None, "dir": None}
    assert not list(tmp_path.rglob("*.wandb")) and not (tmp_path / "wandb").exists()


def test_eval_settings_are_not_needed_when_eval_does_not_run(shared_cache, tmp_path, capsys):
    run_pipeline(["stages=[prepare]", "eval=lm_eval"], shared_cache, tmp_path)  # eval.tasks: ??? is never read
    from omegaconf.errors import MissingMandatoryValue

    with pytest.raises(MissingMandatoryValue, match="eval.tasks"):
        run_pipeline(["stages=[eval]", "eval=lm_eval", "eval.model=base"], shared_cache, tmp_path / "b")


def test_cli_run_with_wandb_reads_back(default_run, shared_cache, tmp_path):
    """run.py on the default (every stage cached): the same results as the in-process run, the
    summary on stdout and an offline W&B run holding the config and the metrics."""
    proc = ok(run_cli([], shared_cache, tmp_path))
    assert "== LESS run summary ==" in proc.stdout and "results:" in proc.stdout
    res = json.loads((tmp_path / "results.json").read_text())
    assert all(s["cached"] for s in res["stages"].values())
    assert res["selection"] == default_run[1]["selection"] and res["eval"] == default_run[1]["eval"]
    assert res["wandb"]["mode"] == "offline"
    files = list(Path(res["wandb"]["dir"]).glob("run-*.wandb"))
    assert len(files) == 1 and str(tmp_path) in res["wandb"]["dir"]
    config, summary = {}, {}
    for rec in read_records(files[0]):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            config.update({u.key: json.loads(u.value_json) for u in rec.run.config.update})
        if kind == "summary":
            summary.update({u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in rec.summary.update})
    assert config["selection"]["fraction"] == 0.05 and config["name"] == "default"
    assert summary["eval/less_synthetic_color/acc"] == res["eval"]["less_synthetic_color"]["acc"]


def test_multirun_second_job_reuses_warmup_and_datastore(shared_cache, tmp_path):
    ok(run_cli(["selection.fraction=0.02,0.1", "pool.n_per_skill=30", "logger=none",
                "stages=[prepare,warmup,datastore,select]"], shared_cache, tmp_path / "sweep", multirun=True))
    first = json.loads((tmp_path / "sweep" / "0" / "results.json").read_text())
    second = json.loads((tmp_path / "sweep" / "1" / "results.json").read_text())
    assert not first["stages"]["warmup"]["cached"] and not first["stages"]["datastore"]["cached"]
    assert second["stages"]["warmup"]["cached"] and second["stages"]["datastore"]["cached"]
    assert not second["stages"]["select"]["cached"]
    assert (first["selection"]["n_selected"], second["selection"]["n_selected"]) == (int(0.02 * 240), int(0.1 * 240))


def test_the_python_api_composes_and_runs_outside_hydra(tmp_path, monkeypatch):
    """less.api: no explicit cache_dir needed (./cache, as on the command line); results as a dict."""
    from less.api import compose, run

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LESS_CACHE_DIR", raising=False)
    assert compose(["selection=random"]).cache_dir == str(tmp_path / "cache")
    monkeypatch.setenv("LESS_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert compose([]).cache_dir == str(tmp_path / "elsewhere")
    assert compose([f"cache_dir={tmp_path / 'given'}"]).cache_dir == str(tmp_path / "given")
    res = run(["stages=[prepare]", "logger=none", "pool.n_per_skill=10"])
    assert res["data"]["pool"]["n"] == 80 and (tmp_path / "elsewhere" / "pool").is_dir()
    assert len(list((tmp_path / "outputs" / "default").glob("*/results.json"))) == 1

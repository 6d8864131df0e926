"""What W&B gets from a sweep: one run per job configuration (a rerun adds none), training curves
on their own step axes, the same config keys for every method, one-off scalars in the summary only,
artifacts with metadata and lineage. Read back from the offline run files with wandb's own
protobuf records (tests/wandb_records.py: wandb 0.31 ships no Python reader of its run files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from less.graph import Stage
from tests.conftest import compose, linked_cache, ok, run_cli, run_pipeline
from tests.wandb_records import read_records

SWEEP = ["selection=less,random", "selection.fraction=0.05,0.1", "pool.n_per_skill=30",
         "warmup.logging_steps=2", "train.logging_steps=2"]
LOGGED_ONCE = ("target", "pool", "warmup", "datastore", "eval_base")  # made by the first job, taken from the cache after


def read_run(path: Path) -> dict[str, Any]:
    """The records of one offline run file, decoded."""
    run: dict[str, Any] = {"config": {}, "history": [], "summary": {}, "step_metrics": {}, "artifacts": {}}
    for rec in read_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            run.update(id=r.run_id, name=r.display_name, group=r.run_group, job_type=r.job_type)
            run["config"].update({u.key: json.loads(u.value_json) for u in r.config.update})
        elif kind == "history":
            run["history"].append({u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in rec.history.item})
        elif kind == "summary":
            run["summary"].update({u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in rec.summary.update})
        elif kind == "metric":
            m = rec.metric
            if m.step_metric:
                run["step_metrics"][m.glob_name or m.name] = m.step_metric
        elif kind == "artifact" and rec.artifact.type != "run_table":
            a = rec.artifact
            run["artifacts"][a.name] = {"type": a.type, "metadata": json.loads(a.metadata),
                                        "files": {c.path for c in a.manifest.contents}}
    return run


def flat_keys(d: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        out |= flat_keys(v, key) if isinstance(v, dict) and v else {key}
    return out


def curve(run: dict[str, Any], prefix: str) -> list[tuple[int, float]]:
    return [(h[f"{prefix}/step"], h[f"{prefix}/loss"]) for h in run["history"] if f"{prefix}/loss" in h]


@pytest.mark.slow
def test_a_sweeps_wandb_runs(tiny_model_dir, shared_cache, tmp_path):
    cache = linked_cache(shared_cache, tmp_path / "cache", kinds=("model",))
    ok(run_cli(SWEEP, cache, tmp_path / "sweep", multirun=True))
    jobs = [json.loads((tmp_path / "sweep" / str(i) / "results.json").read_text()) for i in range(4)]
    files = sorted(tmp_path.rglob("run-*.wandb"))
    assert len(files) == 4
    runs = {r["id"]: r for r in map(read_run, files)}
    assert sorted(runs) == sorted(j["wandb"]["id"] for j in jobs)  # one run per job, ids from the keys
    ordered = [runs[j["wandb"]["id"]] for j in jobs]  # less 0.05, less 0.1, random 0.05, random 0.1

    # names, groups, job types
    fixed = ",".join(SWEEP[2:])  # the sweep's overrides, without hydra.sweep.dir (nor cache_dir, logger.*, ...)
    assert [r["name"] for r in ordered] == [f"selection={m},selection.fraction={f},{fixed}"
                                            for m in ("less", "random") for f in ("0.05", "0.1")]
    assert {r["group"] for r in ordered} == {"default"}
    assert [r["job_type"] for r in ordered] == ["less", "less", "random", "random"]

    # every method has the same config keys (null where not applicable)
    keys = [flat_keys(r["config"]) for r in ordered]
    assert all(k == keys[0] for k in keys), [sorted(k ^ keys[0]) for k in keys]
    assert "selection.proj_dim" in keys[2] and ordered[2]["config"]["selection"]["proj_dim"] is None
    assert "selector.name" in keys[0]  # selector=null gets the model group's keys, as None
    assert ordered[0]["config"]["selection"]["method"] == "less" and ordered[2]["config"]["selection"]["method"] == "random"

    for job, run in zip(jobs, ordered):
        # curves against their own step axes, the same points whether built here or taken from the cache
        train = curve(run, "train")
        assert len(train) >= 2 and [s for s, _ in train] == sorted(s for s, _ in train)
        if job["selection"]["method"] == "less":  # random needs no warmup
            assert run["step_metrics"] == {"warmup/*": "warmup/step", "train/*": "train/step"}
            assert len(curve(run, "warmup")) >= 2 and curve(run, "warmup") == curve(ordered[0], "warmup")
        else:
            assert run["step_metrics"] == {"train/*": "train/step"} and "warmup" not in job["stages"]
        assert all({"train/lr", "train/grad_norm"} <= set(h) for h in run["history"] if "train/loss" in h)
        assert run["summary"]["train/loss"] == job["train"]["final_loss"] == train[-1][1]
        # one-off scalars: summary only; history holds curves and media (tables, histograms)
        for h in run["history"]:
            scalars = {k for k, v in h.items() if not k.startswith("_") and not isinstance(v, dict)
                       and "/" in k and k.split("/")[1] not in ("by_source", "scores", "top", "top_by_subtask", "metrics",
                                                                        "sources", "correlates_plot")}
            assert all(k.startswith(("warmup/", "train/")) for k in scalars), scalars
        task, metrics = next(iter(job["eval"].items()))
        assert run["summary"][f"eval/{task}/acc"] == metrics["acc"]
        assert run["summary"]["selection/target_share"] == job["selection"]["target_share"]
        assert "accounting/seconds/train" in run["summary"]
        # the paper's qualitative view, LESS only: each of the 3 target subtasks' top 10 pool examples
        media = {k: v for h in run["history"] for k, v in h.items()}
        n_sub = len(job["data"]["target"]["by_subtask"])
        assert media.get("selection/top_by_subtask/nrows") == (10 * n_sub if job["selection"]["method"] == "less" else None)
        # what the selection correlates with: its rhos, the source shares and the plot
        corr = job["selection"]["correlates"]
        assert run["summary"]["selection/correlates/spearman/labelled_tokens/rho"] == corr["spearman"]["labelled_tokens"]["rho"]
        assert media.get("selection/sources/nrows") == len(corr["sources"])
        assert media.get("selection/correlates_plot/_type") == "image-file"

    # jaccard with the LESS selection of the same fraction reaches W&B
    for job, run in zip(jobs[2:], ordered[2:]):
        assert job["selection"]["jaccard_vs_less"] is not None
        assert run["summary"]["selection/jaccard_vs_less"] == job["selection"]["jaccard_vs_less"]

    # artifacts: the first job made everything; later jobs only what they built (the rest was cached)
    first = ordered[0]["artifacts"]
    assert {a["metadata"]["stage"] for a in first.values()} == {*LOGGED_ONCE, "select", "train", "eval"}
    for job, run in zip(jobs, ordered):
        made = {a["metadata"]["stage"]: (name, a) for name, a in run["artifacts"].items()}
        if run is not ordered[0]:
            assert set(made) == {"select", "train", "eval"}
        for stage, (name, a) in made.items():
            assert a["metadata"]["key"] == job["artifacts"][stage]["key"] and name == f"{stage}-{a['metadata']['key']}"
            assert "key.json" in a["files"]
        assert made["select"][1]["type"] == "selection" and "selected.jsonl" in made["select"][1]["files"]
        assert made["select"][1]["metadata"]["report"]["selection"]["n_selected"] == job["selection"]["n_selected"]
        assert made["train"][1]["metadata"]["config"]["train"]["epochs"] == 8
        assert not any(f.startswith("adapter") for f in made["train"][1]["files"])  # logger.log_model=false
        # lineage: eval <- trained model <- selection <- datastore <- pool, every name an artifact of the sweep
        everything = {n: a for r in ordered for n, a in r["artifacts"].items()}
        assert made["eval"][1]["metadata"]["inputs"]["train"] == made["train"][0]
        assert made["train"][1]["metadata"]["inputs"]["selection"] == made["select"][0]
        sel_inputs = made["select"][1]["metadata"]["inputs"]
        if job["selection"]["method"] == "less":
            ds = everything[sel_inputs["datastore"]]["metadata"]
            assert ds["stage"] == "datastore" and ds["inputs"]["pool.examples"] == sel_inputs["pool"]
            assert everything[ds["inputs"]["pool.checkpoints"]]["metadata"]["stage"] == "warmup"
        assert everything[sel_inputs["pool"]]["metadata"]["stage"] == "pool"
        assert run["summary"]["artifacts/select"] == made["select"][0]

    # the same sweep again: every job is skipped with a note, no run is added
    again = ok(run_cli(SWEEP, cache, tmp_path / "again", multirun=True))
    assert sorted(tmp_path.rglob("run-*.wandb")) == files
    for i, job in enumerate(jobs):
        res = json.loads((tmp_path / "again" / str(i) / "results.json").read_text())
        assert res["wandb"]["id"] == job["wandb"]["id"] and res["wandb"]["skipped"]["dir"] == job["wandb"]["dir"]
    assert again.stderr.count("W&B: this job configuration was logged already") == 4


def test_a_killed_runs_wandb_run_is_resumed_not_skipped(tiny_model_dir, shared_cache, tmp_path):
    """The ledger says "running" for a job that never finished: the rerun logs into the same id."""
    from less.runner import Runner

    cache = linked_cache(shared_cache, tmp_path / "cache", kinds=("model",))
    cfg = compose([f"cache_dir={cache}", "stages=[prepare]", "logger=wandb", f"logger.group={tmp_path.name}"], hydra=False)
    a = run_pipeline(["stages=[prepare]", "logger=wandb", f"logger.group={tmp_path.name}"], cache, tmp_path / "a")
    ledger = cache / "_wandb" / f"{a['wandb']['id']}.json"
    rec = json.loads(ledger.read_text())
    assert rec["status"] == "finished" and rec["dir"] == a["wandb"]["dir"]
    ledger.write_text(json.dumps({**rec, "status": "running"}))  # as a killed job leaves it
    b = Runner(cfg, tmp_path / "b").run()
    assert b["wandb"]["id"] == a["wandb"]["id"] and "skipped" not in b["wandb"] and b["wandb"]["dir"] != a["wandb"]["dir"]
    c = run_pipeline(["stages=[prepare]", "logger=wandb", f"logger.group={tmp_path.name}"], cache, tmp_path / "c")
    assert c["wandb"]["skipped"]["dir"] == b["wandb"]["dir"]
    d = run_pipeline(["stages=[prepare]", "logger=wandb", f"logger.group={tmp_path.name}", "logger.rerun=resume"],
                     cache, tmp_path / "d")
    assert d["wandb"]["id"] == a["wandb"]["id"] and "skipped" not in d["wandb"]


def test_run_names_leave_out_where_and_how_a_job_runs():
    from less.tracking import run_name

    overrides = ["cache_dir=/x/cache", "plan=false", "logger=wandb", "logger.mode=online", "device=cpu",
                 "data.root=../shared/data", "experiment=main_table_tiny", "hydra.sweep.dir=/tmp/s",
                 "selection=random", "+seed=1", "selection.fraction=0.1", "loggers=x"]
    assert run_name(overrides, "default") == "selection=random,seed=1,selection.fraction=0.1,loggers=x"
    assert run_name(["cache_dir=/x"], "main_table") == "main_table"


def test_job_types_follow_the_method_or_the_stage_set():
    from less.lineage import job_type

    assert job_type(compose(["selection=bm25"], hydra=False)) == "bm25"
    assert job_type(compose(["stages=[prepare,warmup,datastore]"], hydra=False)) == "prepare+warmup+datastore"
    assert job_type(compose(["logger.job_type=probe"], hydra=False)) == "probe"


def test_every_selection_method_gets_every_selection_key():
    from omegaconf import OmegaConf

    from less.paths import conf_dir
    from less.tracking import uniform_config

    configs = {m: uniform_config(OmegaConf.to_container(compose([f"selection={m}", "cache_dir=/c"], hydra=False), resolve=True),
                                 conf_dir()) for m in ("less", "random", "bm25", "dsir", "rds", "kcenter", "trak")}
    keys = {m: flat_keys(c["selection"]) for m, c in configs.items()}
    assert all(k == keys["less"] for k in keys.values())
    # a preset that also sets the datastore (a global package) adds its selection keys only
    assert "damping" in keys["less"] and not any(k.startswith(("datastore", "selection")) for k in keys["less"])
    raw = {m: flat_keys(OmegaConf.to_container(compose([f"selection={m}"], hydra=False).selection)) for m in configs}
    assert len(set(map(frozenset, raw.values()))) > 1  # the presets do differ: the union is what fills the gaps
    for m, c in configs.items():  # the chosen preset's values are kept
        assert c["selection"]["method"] == m and configs["random"]["selection"]["proj_dim"] is None


class Recorder:
    """A tracker that records what the runner sends."""

    mode, dir, url, id, requested_mode, fallback, skipped = "offline", None, None, "x", None, None, None

    def __init__(self):
        self.calls: list[tuple] = []

    def curve(self, prefix, step, metrics):
        self.calls.append(("curve", prefix, step, metrics))

    def summary(self, metrics):
        self.calls.append(("summary", metrics))

    def table(self, *a):
        self.calls.append(("table", a[0]))

    def histogram(self, *a):
        self.calls.append(("histogram", a[0]))

    def artifact(self, name, kind, metadata, files=(), dirs=(), use=False):
        self.calls.append(("artifact", name, use))

    def finish(self, ok=True):
        self.calls.append(("finish", ok))


def test_artifacts_taken_from_the_cache_are_inputs_and_built_ones_outputs(tmp_path, monkeypatch):
    """On a graph of two stages: the first run logs both as its outputs; a second job that reuses
    the first stage declares it as an input; a step-less stage built for a step gets its own line."""
    from less import lineage, runner

    write = lambda name: lambda ctx, inputs, out: (out / f"{name}.txt").write_text(name)  # noqa: E731
    graph = (Stage("model", kind="model", build=write("model"), config=lambda ctx: {}),
             Stage("pool", step="prepare", build=write("pool"), config=lambda ctx: {}, inputs=lambda ctx: {"m": "model"},
                   wandb_type="dataset"),
             Stage("select", step="select", build=write("select"), inputs=lambda ctx: {"pool": "pool"},
                   config=lambda ctx: {"f": ctx.cfg.selection.fraction}, wandb_type="selection"))

    def go(fraction: float) -> tuple[Recorder, dict]:
        cfg = compose([f"cache_dir={tmp_path / 'cache'}", "logger=none", "stages=[prepare,select]",
                       f"selection.fraction={fraction}"], hydra=False)
        r = runner.Runner(cfg, tmp_path / str(fraction), graph=graph, check=False)
        rec = Recorder()
        monkeypatch.setattr(lineage, "make_tracker", lambda r: rec)
        return rec, r.run()

    rec, res = go(0.1)
    arts = [c[1:] for c in rec.calls if c[0] == "artifact"]
    assert arts == [(f"pool-{res['artifacts']['pool']['key']}", False), (f"select-{res['artifacts']['select']['key']}", False)]
    assert rec.calls[-1] == ("finish", True)
    assert set(res["stages"]) == {"model", "prepare", "select"} and not res["stages"]["model"]["cached"]
    assert (tmp_path / "0.1" / "selected.jsonl").is_symlink() is False  # no selection file in this toy stage
    rec, res = go(0.2)
    assert [c[1:] for c in rec.calls if c[0] == "artifact"] == [
        (f"pool-{res['artifacts']['pool']['key']}", True), (f"select-{res['artifacts']['select']['key']}", False)]
    assert "model" not in res["stages"]  # taken from the cache: no line of its own


def test_an_online_run_uses_its_cached_inputs(monkeypatch):
    """``use=True`` becomes ``use_artifact`` online; offline (where wandb refuses it) nothing."""
    from less.tracking import WandbTracker

    class Run:
        def __init__(self):
            self.used, self.logged = [], []

        def use_artifact(self, a):
            self.used.append(a.name)

        def log_artifact(self, a):
            self.logged.append(a.name)

    import wandb

    t = object.__new__(WandbTracker)
    t._wandb, t.run = wandb, Run()
    for mode in ("online", "offline"):
        t.mode = mode
        t.artifact(f"pool-{mode}", "dataset", {"key": "k"}, use=True)
        t.artifact(f"select-{mode}", "selection", {"key": "k"}, use=False)
    assert t.run.used == ["pool-online"] and t.run.logged == ["select-online", "select-offline"]


def test_training_reports_its_curve_and_final_loss(default_run):
    out, res = default_run
    train = json.loads((Path(res["artifacts"]["train"]["dir"]) / "train.json").read_text())
    assert len(train["history"]) >= 2 and train["history"][0]["step"] == 1
    assert res["train"]["final_loss"] == train["history"][-1]["loss"]
    assert {"loss", "lr", "grad_norm", "epoch"} <= set(train["history"][-1])
    assert res["warmup"]["final_loss"] is not None
    for f in ("selected.jsonl", "ranking.csv"):  # the run directory links to its selection
        link = out / f
        assert link.is_symlink() and link.resolve() == (Path(res["selection"]["selected"]).parent / f).resolve()


def test_the_trained_adapter_is_an_artifact_with_log_model(tiny_model_dir, shared_cache, tmp_path):
    args = ["selection.fraction=0.03", "stages=[prepare,warmup,datastore,select,train]", "logger=wandb",
            f"logger.group={tmp_path.name}", "logger.log_model=true"]
    res = run_pipeline(args, shared_cache, tmp_path / "a")
    assert not res["stages"]["train"]["cached"]
    run = read_run(next(Path(res["wandb"]["dir"]).glob("run-*.wandb")))
    model = run["artifacts"][f"train-{res['artifacts']['train']['key']}"]
    adapter = Path(res["artifacts"]["train"]["dir"]) / "adapter"
    assert model["type"] == "model" and {f"adapter/{p.name}" for p in adapter.iterdir()} <= model["files"]

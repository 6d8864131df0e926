"""Experiment presets, the plan dry run and accounting (the analysis package: test_analysis.py)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import CONF, compose, linked_cache, ok, run_cli, run_pipeline

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml") if not p.stem.startswith("_"))
DEFAULT_SCALE = {"validate", "planted"}  # experiments named for the embedded default (their issue's command), twins _small and _paper


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes(name):
    cfg = compose([f"experiment={name}"])
    assert cfg.name == name
    params = dict(cfg.hydra.sweeper.params)
    assert params, name
    if name.endswith("_tiny") or name in DEFAULT_SCALE:
        assert cfg.model.kind == "tiny" and cfg.target.kind == "synthetic"
        if name in DEFAULT_SCALE:  # its own CPU twin: the paper-scale form is <name>_paper
            assert f"{name}_paper" in EXPERIMENTS and f"{name}_small" in EXPERIMENTS
        else:
            assert name.removesuffix("_tiny") in EXPERIMENTS  # every full experiment has a CPU twin and back
    elif name.endswith("_small"):  # the real-data CPU twin: small model, the paper's pool and target
        assert cfg.model.kind == (cfg.get("selector") or cfg.model).kind == "small" and cfg.pool.name == "less_mix"
        assert cfg.target.kind == "mmlu" and cfg.eval.tasks == ["mmlu"] and cfg.eval.base
        base = name.removesuffix("_small")
        tiny = base if base in DEFAULT_SCALE else f"{base}_tiny"
        assert base in EXPERIMENTS and tiny in EXPERIMENTS
        assert set(params) == set(compose([f"experiment={tiny}"]).hydra.sweeper.params)  # the tiny twin's axes
    else:
        base = name.removesuffix("_paper") if name.removesuffix("_paper") in DEFAULT_SCALE else name
        assert cfg.model.kind == "hf" and (base != name or f"{name}_tiny" in EXPERIMENTS) and f"{base}_small" in EXPERIMENTS
        assert cfg.eval.tasks == [cfg.target.name] and cfg.warmup.lora.r == 128


@pytest.mark.slow
def test_tiny_twin_sweep_and_its_analysis(default_run, shared_cache, tmp_path):
    from analysis.__main__ import main

    ok(run_cli(["experiment=ablation_projection_tiny", "logger=none"], shared_cache, tmp_path / "sweep", multirun=True))
    out = main([str(tmp_path / "sweep")])
    table = [[c.strip() for c in line.strip("|").split("|")] for line in (out / "table.md").read_text().splitlines()[:5]]
    assert table[0] == ["proj_dim", "less_synthetic_color.acc (%)", "less_synthetic_color.target_loss",
                        "selection.target_share (%)", "n"]
    assert [row[0] for row in table[2:5]] == ["64", "256", "1024"] and [row[-1] for row in table[2:5]] == ["1"] * 3
    assert {"metric_vs_proj_dim.less_synthetic_color.acc.png", "metric_vs_proj_dim.less_synthetic_color.target_loss.png",
            "selection_overlap.png",
            "composition_by_source.png"} <= {p.name for p in out.glob("*.png")}
    res = json.loads((tmp_path / "sweep" / "0" / "results.json").read_text())
    acc = res["accounting"]
    assert acc["tokens"]["selected"] <= acc["tokens"]["pool"] and acc["params"]["model"] > 0
    epochs = res["train"]["steps"] // 4  # 30 examples in batches of 8: 4 steps an epoch
    assert epochs == 8 and acc["tokens"]["train_trained"] == epochs * acc["tokens"]["train_examples"]
    assert acc["tokens"]["train_repeated"] == (epochs - 1) * acc["tokens"]["train_examples"]
    assert acc["flops"]["train"] == pytest.approx(6 * acc["params"]["model"] * acc["tokens"]["train_trained"])
    assert set(acc["seconds"]) == set(res["stages"])


def test_plan_reports_cache_hits_of_a_half_finished_sweep(default_run, shared_cache, tmp_path):
    proc = ok(run_cli(["logger=none", "selection.fraction=0.05,0.12", "plan=true"], shared_cache, tmp_path / "plan",
                      multirun=True))
    plans = [json.loads((tmp_path / "plan" / str(j) / "plan.json").read_text()) for j in (0, 1)]
    assert plans[0]["stages"] == {"prepare": "cached", "warmup": "cached", "datastore": "cached", "select": "cached",
                                  "train": "cached", "eval": "cached"}
    assert plans[1]["stages"] == {"prepare": "cached", "warmup": "cached", "datastore": "cached", "select": "to run",
                                  "train": "to run", "eval": "to run"}
    assert plans[1]["flops"]["train"] > 0 and plans[1]["flops"]["warmup"] is None  # cached stages cost nothing
    assert "plan default:" in proc.stdout and not (tmp_path / "plan" / "0" / "results.json").exists()


def test_plan_applies_the_same_rules_as_a_run(default_run, shared_cache, tmp_path):
    """What a plan says is what the run then does: skipped steps, missing inputs, what is built."""
    def plan(*overrides):
        return run_pipeline(["plan=true", *overrides], shared_cache, tmp_path / "plan")

    bm25 = plan("selection=bm25", "selection.fraction=0.2")  # no gradients: warmup and datastore do not apply
    assert bm25["stages"] == {"prepare": "cached", "select": "to run", "train": "to run", "eval": "to run"}
    blocked = plan("stages=[select]", "pool.n_per_skill=11")  # its datastore is neither cached nor to be built
    assert blocked["stages"] == {"select": "missing"}
    ran = run_pipeline(["selection=bm25", "selection.fraction=0.2", "stages=[prepare,warmup,datastore,select]"],
                       shared_cache, tmp_path / "run")
    assert set(ran["stages"]) == {"prepare", "select"} and not ran["stages"]["select"]["cached"]
    after = plan("selection=bm25", "selection.fraction=0.2", "stages=[prepare,warmup,datastore,select]")
    assert after["stages"] == {"prepare": "cached", "select": "cached"}


def test_a_cached_step_does_not_rebuild_its_inputs(shared_cache, tmp_path):
    """rds (base-model representations, so no warmup): the representations are an input of select;
    once select is cached they are not needed."""
    import shutil

    cache = linked_cache(shared_cache, tmp_path / "cache", kinds=("model", "pool", "target"))
    first = run_pipeline(["selection=rds", "selection.rds.model=base", "stages=[prepare,select]"], cache, tmp_path / "a")
    assert not first["artifacts"]["representations"]["cached"]
    shutil.rmtree(first["artifacts"]["representations"]["dir"])
    again = run_pipeline(["selection=rds", "selection.rds.model=base", "stages=[prepare,select]"], cache, tmp_path / "b")
    assert again["stages"]["select"]["cached"] and "representations" not in again["artifacts"]
    plan = run_pipeline(["selection=rds", "selection.rds.model=base", "stages=[prepare,select]", "plan=true"], cache, tmp_path / "c")
    assert plan["stages"] == {"prepare": "cached", "select": "cached"}

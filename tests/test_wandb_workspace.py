"""W&B views of a sweep, without network: ``python -m analysis <sweep> --wandb-log`` (an offline
analysis run holding the tables and plots) and ``python -m analysis wandb-workspace`` (the
workspace spec, built offline; ``--save`` failing in one line)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_analysis_paired import SEEDS, write_run
from tests.test_analysis_validate import validate_section
from tests.wandb_records import read_records


def sweep_with_wandb(root: Path) -> Path:
    j = 0
    for method in ("less", "random"):
        for fraction in (0.05, 0.1):
            for seed in SEEDS:
                write_run(root / str(j), method, fraction, seed, root, name="validate", extra={
                    **validate_section(method), "wandb": {"mode": "offline", "project": "myproj", "dir": None}})
                j += 1
    return root


@pytest.fixture
def no_network(monkeypatch):
    real = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"network access to {address}")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


def test_wandb_log_writes_one_offline_analysis_run_with_the_tables_and_plots(tmp_path):
    sweep = sweep_with_wandb(tmp_path / "sweep")
    wdir = tmp_path / "wandb_dir"
    wdir.mkdir()
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(wdir), "WANDB_SILENT": "true"}
    env.pop("WANDB_API_KEY", None)
    proc = subprocess.run([sys.executable, "-m", "analysis", str(sweep), "--wandb-log"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "W&B: analysis run" in proc.stdout and "wandb sync" in proc.stdout
    runs = list((wdir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    media = runs[0] / "files" / "media"

    def table(name: str) -> dict:
        files = [f for f in (media / "table" / "analysis").glob(f"{name}_*.table.json")
                 if f.name.removeprefix(name + "_").split("_")[0].isdigit()]
        assert len(files) == 1, (name, sorted(p.name for p in (media / "table" / "analysis").iterdir()))
        return json.loads(files[0].read_text())

    main = table("table")
    assert "Δ arith.acc vs random (pp)" in main["columns"] and "Δ arith.target_loss vs random" in main["columns"]
    assert len(main["data"]) == 4 and main["data"][0][:2] == ["less", "0.05"]
    paired = table("paired")
    assert {"method", "reference", "metric", "delta", "ci_low", "ci_high", "n_examples"} <= set(paired["columns"])
    assert len(paired["data"]) == 4
    lds = table("lds")
    rows = [dict(zip(lds["columns"], r)) for r in lds["data"]]
    assert [(r["method"], r["lds"]) for r in rows] == [("less", 0.42), ("random", 0.01)]
    curve = table("selection_curve")
    assert len(curve["data"]) == 4 and "reference_target_loss" in curve["columns"]
    images = {p.name.rsplit("_", 2)[0] for p in (media / "images" / "analysis").glob("*.png")}
    assert {"lds", "selection_curve_arith", "metric_vs_fraction_arith_acc"} <= images
    run = next(r.run for r in read_records(next(runs[0].glob("run-*.wandb"))) if r.HasField("run"))
    assert (run.project, run.run_group, run.job_type) == ("myproj", "validate", "analysis")


def test_workspace_spec_is_built_offline_with_the_panels_and_the_group_filter(tmp_path, no_network, capsys):
    from analysis.__main__ import main
    from analysis.workspace import SECTIONS, panels

    sweep = sweep_with_wandb(tmp_path / "sweep")
    out = main(["wandb-workspace", "--entity", "me", "--project", "myproj", "--group", "validate",
                "--sweep", str(sweep), "--out", str(tmp_path / "ws.json")])
    assert out == tmp_path / "ws.json" and str(out) in capsys.readouterr().out
    view = json.loads(out.read_text())
    assert (view["entity"], view["project"], view["displayName"]) == ("me", "myproj", "LESS: validate")
    sections = view["spec"]["section"]["panelBankConfig"]["sections"]
    assert [s["name"] for s in sections] == list(SECTIONS)
    runset = view["spec"]["section"]["runSets"][0]
    assert runset["filters"]["filters"] == [
        {"key": {"section": "run", "name": "group"}, "op": "=", "value": "validate", "disabled": False}]
    assert runset["runFeed"]["columnOrder"][:4] == ["run:displayName", "config:selection.value.method",
                                                     "config:selection.value.fraction", "config:seed.value"]
    by = {}
    for p in panels(view):
        by.setdefault(p["section"], []).append(p)
    keys = {s: [k for p in ps for k in p["keys"]] for s, ps in by.items()}
    # the main table: the analysis run's tables, and the sweep's metrics by method
    assert keys["Main table"][:2] == ["analysis/table", "analysis/paired"]
    bars = [p for p in by["Main table"] if p["type"] == "Bar Chart"]
    assert [p["title"] for p in bars] == ["arith.acc by method (mean ± stderr over seeds)",
                                          "arith.target_loss by method (mean ± stderr over seeds)"]
    # metric vs selection fraction: scatter plots against the config's fraction, log x
    scatter = [p for p in by["Metric vs selection fraction"] if p["type"] == "Scatter Plot"]
    assert [p["keys"] for p in scatter] == [["config:selection.value.fraction", "summary:eval/arith/acc"],
                                            ["config:selection.value.fraction", "summary:eval/arith/target_loss"]]
    assert {"analysis/selection_curve", "analysis/selection_curve_arith",
            "analysis/metric_vs_fraction_arith_acc"} <= set(keys["Metric vs selection fraction"])
    assert {"analysis/lds", "analysis/lds_by_task", "summary_metrics.validate/lds"} <= set(
        keys["Counterfactual validation (LDS)"])
    assert {"selection/by_source", "summary_metrics.selection/target_share", "analysis/composition_by_source"} <= set(
        keys["Selection composition"])
    assert [p["keys"] for p in by["Training curves"]] == [["train/loss", "train/step"], ["train/lr", "train/step"],
                                                         ["train/grad_norm", "train/step"],
                                                         ["warmup/loss", "warmup/step"]]
    scatter_cfg = [p["config"] for s in sections for p in s["panels"] if p["viewType"] == "Scatter Plot"]
    assert all(c.get("xAxisLogScale") is True for c in scatter_cfg)


def test_workspace_metrics_from_the_command_line_and_defaults(tmp_path, no_network):
    from analysis.__main__ import main
    from analysis.workspace import DEFAULT_METRICS, panels, wandb_key

    assert [wandb_key(m) for m in ("mmlu.acc", "eval.mmlu.acc", "eval/mmlu/acc", "selection.target_share")] == [
        "eval/mmlu/acc"] * 3 + ["selection/target_share"]
    out = main(["wandb-workspace", "--entity", "e", "--project", "p", "--group", "g", "--metric", "tydiqa.f1,mmlu.acc",
                "--out", str(tmp_path / "a.json")])
    scatter = [p for p in panels(json.loads(out.read_text())) if p["type"] == "Scatter Plot"]
    assert [p["keys"][1] for p in scatter] == ["summary:eval/tydiqa/f1", "summary:eval/mmlu/acc"]
    out = main(["wandb-workspace", "--entity", "e", "--project", "p", "--group", "g", "--out", str(tmp_path / "b.json")])
    scatter = [p for p in panels(json.loads(out.read_text())) if p["type"] == "Scatter Plot"]
    assert [p["keys"][1] for p in scatter] == [f"summary:{m}" for m in DEFAULT_METRICS]


def test_workspace_save_failure_and_missing_package_are_one_line(tmp_path, monkeypatch, no_network, capsys):
    import wandb_workspaces.workspaces as ws

    from analysis.__main__ import main

    def refuse(self):
        raise RuntimeError("401 Unauthorized: user is not logged in\nmore detail")

    monkeypatch.setattr(ws.Workspace, "save", refuse)
    with pytest.raises(SystemExit) as exc:
        main(["wandb-workspace", "--entity", "e", "--project", "p", "--group", "g", "--save"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1
    assert "401 Unauthorized" in err[0] and "API key" in err[0] and "network" in err[0]

    monkeypatch.setitem(sys.modules, "wandb_workspaces", None)  # as if not installed
    with pytest.raises(SystemExit) as exc:
        main(["wandb-workspace", "--entity", "e", "--project", "p", "--group", "g", "--out", str(tmp_path / "x.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "pip install wandb-workspaces" in err[0]

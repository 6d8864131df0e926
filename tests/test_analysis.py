"""The analysis package on hand-made sweeps (known values), and ``inspect`` on the tiny default run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import ROOT, run_pipeline

METHODS, FRACTIONS, SEEDS = ("less", "random"), (0.05, 0.1), (0, 1, 2)
BASE = {"less": 0.60, "random": 0.40}
STEP = {0.05: 0.0, 0.1: 0.05}
NOISE = {0: 0.00, 1: 0.02, 2: 0.07}


def acc(method, fraction, seed):
    return BASE[method] + STEP[fraction] + NOISE[seed]


def share(method, fraction, seed):
    return (1.0 if method == "less" else 0.2) - fraction + seed / 100


def fake_sweep(root: Path) -> Path:
    """Twelve finished jobs: selection {less, random} x selection.fraction {0.05, 0.1} x seed {0, 1, 2}."""
    j = 0
    for method in METHODS:
        for fraction in FRACTIONS:
            for seed in SEEDS:
                d = root / str(j)
                j += 1
                (d / ".hydra").mkdir(parents=True)
                (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(
                    [f"selection={method}", f"selection.fraction={fraction}", f"seed={seed}", "logger=none",
                     f"cache_dir={root}/cache"]))
                ids = [f"{method}{i + seed}" for i in range(4)]
                (d / "selected.jsonl").write_text("".join(json.dumps({"id": i}) + "\n" for i in ids))
                a = acc(method, fraction, seed)
                (d / "results.json").write_text(json.dumps({
                    "stages": {"select": {"seconds": 1.0, "cached": False}},
                    "artifacts": {"select": {"dir": "/nowhere"}},
                    "eval": {"arith": {"acc": a, "acc_stderr": 0.01, "acc_norm": a / 2, "acc_norm_stderr": 0.02,
                                       "subtasks": {"add": {"acc": a + 0.1}}}},
                    "selection": {"method": method, "n_selected": 4, "target_share": share(method, fraction, seed),
                                  "jaccard_vs_less": 1.0 if method == "less" else 0.1,
                                  "by_source": {"a": 3, "b": 1} if method == "less" else {"a": 1, "b": 3},
                                  "checkpoints": [1, 2], "selected": str(d / "selected.jsonl"),
                                  **({"proj_dim": 1024} if method == "less" else {})},
                    "train": {"train_loss": 1.0 + seed}, "warnings": [],
                    "config": {"name": "fake", "model": "m", "selector": "m", "pool": "p", "target": "t",
                               "stages": ["select"]}}))
    return root


@pytest.fixture
def sweep(tmp_path):
    return fake_sweep(tmp_path / "sweep")


def test_load_one_row_per_run_with_config_overrides_and_flat_results(sweep):
    from analysis import config_columns, load

    df = load(sweep)
    assert len(df) == 12 and df["path"].tolist() == [str(sweep / str(j)) for j in range(12)]
    assert config_columns(df) == ["method", "model", "selector", "pool", "target", "fraction", "proj_dim", "seed",
                                  "cache_dir", "logger", "selection", "selection.fraction"]
    assert {"eval.arith.acc", "eval.arith.acc_stderr", "eval.arith.acc_norm_stderr", "eval.arith.subtasks.add.acc",
            "selection.target_share", "selection.jaccard_vs_less", "selection.by_source.a", "train.train_loss",
            "selection.n_selected"} <= set(df.columns)
    # bookkeeping sections and lists are left out
    assert not [c for c in df.columns if c.startswith(("stages", "artifacts", "config", "warnings"))]
    assert "selection.checkpoints" not in df
    row = df.iloc[7]  # random, fraction 0.05, seed 1
    assert (row["method"], row["fraction"], row["seed"], row["selection"], row["model"]) == ("random", 0.05, 1, "random", "m")
    assert row["eval.arith.acc"] == pytest.approx(acc("random", 0.05, 1)) and np.isnan(row["proj_dim"])
    assert df.loc[df["method"] == "less", "proj_dim"].eq(1024).all()
    assert df["fraction"].dtype == float and df["seed"].tolist() == list(SEEDS) * 4


def test_load_reads_the_composed_config_when_nothing_was_overridden(tmp_path):
    from analysis import load

    d = tmp_path / "run"
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": 7, "selection": {"fraction": 0.2}}))
    (d / "results.json").write_text(json.dumps({"selection": {"method": "less", "proj_dim": 64}}))
    row = load(d).iloc[0]
    assert (row["seed"], row["fraction"], row["proj_dim"], row["method"]) == (7, 0.2, 64, "less")


def test_table_mean_std_n_against_numpy(sweep):
    from analysis import aggregate, load, markdown
    from analysis.tables import default_by, headline_metrics

    df = load(sweep)
    assert default_by(df) == ["method", "fraction"]  # seed, bookkeeping and determined columns left out
    assert headline_metrics(df) == ["eval.arith.acc", "selection.target_share"]
    agg = aggregate(df)
    for method in METHODS:
        for fraction in FRACTIONS:
            accs = 100 * np.array([acc(method, fraction, s) for s in SEEDS])
            shares = 100 * np.array([share(method, fraction, s) for s in SEEDS])
            r = agg.loc[(method, fraction)]
            assert r[("eval.arith.acc", "mean")] == pytest.approx(accs.mean())
            assert r[("eval.arith.acc", "std")] == pytest.approx(accs.std(ddof=1))
            assert r[("selection.target_share", "mean")] == pytest.approx(shares.mean())
            assert r[("selection.target_share", "std")] == pytest.approx(shares.std(ddof=1))
            assert r[("eval.arith.acc", "n")] == 3
    md = markdown(df).splitlines()
    assert [c.strip() for c in md[0].strip("|").split("|")] == [
        "method", "fraction", "arith.acc (%)", "selection.target_share (%)", "n"]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in md[2:6]]
    less05 = 100 * np.array([acc("less", 0.05, s) for s in SEEDS])
    assert cells[0] == ["less", "0.05", f"{less05.mean():.1f} ± {less05.std(ddof=1):.1f}", "96.0 ± 1.0", "3"]
    assert [c[:2] for c in cells] == [["less", "0.05"], ["less", "0.1"], ["random", "0.05"], ["random", "0.1"]]
    assert "Mean ± std (sample std, ddof=1) over the n runs" in md[-1] and "in %" in md[-1]


def test_metric_and_by_flags(sweep, capsys):
    from analysis.__main__ import main

    out = main([str(sweep), "--metric", "arith.acc_norm,selection.jaccard_vs_less", "--metric", "train.train_loss",
                "--by", "method", "--out", str(sweep / "report")])
    md = (out / "table.md").read_text().splitlines()
    assert [c.strip() for c in md[0].strip("|").split("|")] == [
        "method", "arith.acc_norm (%)", "selection.jaccard_vs_less (%)", "train.train_loss", "n"]
    less = [c.strip() for c in md[2].strip("|").split("|")]
    norms = 100 * np.array([acc("less", f, s) / 2 for f in FRACTIONS for s in SEEDS])
    assert less == ["less", f"{norms.mean():.1f} ± {norms.std(ddof=1):.1f}", "100.0 ± 0.0", "2.0 ± 0.9", "6"]
    tex = (out / "table.tex").read_text()
    assert r"\begin{tabular}{lrrrr}" in tex and r"arith.acc\_norm (\%)" in tex and r"$\pm$" in tex
    assert "method" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([str(sweep), "--metric", "no_such_metric"])


def test_plot_draws_one_line_per_method_with_std_error_bars(sweep):
    from analysis import load
    from analysis.plots import curve_data, metric_vs_figure

    df = load(sweep)
    fig = metric_vs_figure(df, "eval.arith.acc", "fraction")
    ax = fig.axes[0]
    bars = {c.get_label(): c for c in ax.containers}
    assert set(bars) == set(METHODS)
    for method, c in bars.items():
        line, _, (ranges,) = c.lines
        means = [100 * np.mean([acc(method, f, s) for s in SEEDS]) for f in FRACTIONS]
        stds = [100 * np.std([acc(method, f, s) for s in SEEDS], ddof=1) for f in FRACTIONS]
        np.testing.assert_allclose(line.get_xdata(), FRACTIONS)
        np.testing.assert_allclose(line.get_ydata(), means)
        segs = ranges.get_segments()  # one vertical bar per point: mean - std .. mean + std
        np.testing.assert_allclose([s[:, 1] for s in segs], [[m - s, m + s] for m, s in zip(means, stds)])
    assert "arith.acc" in ax.get_title() and ax.get_ylabel() == "arith.acc (%)"
    assert "std over seeds (n = 3)" in ax.get_legend().get_title().get_text()
    data = curve_data(df, "selection.target_share", "fraction")
    assert data["line"].tolist() == ["less", "less", "random", "random"] and data["n"].tolist() == [3] * 4
    assert data["mean"].tolist() == pytest.approx([100 * np.mean([share(m, f, s) for s in SEEDS])
                                                   for m in METHODS for f in FRACTIONS])
    assert metric_vs_figure(df, "eval.arith.acc", "proj_dim") is None  # one dimension only
    # --by method,fraction,seed: seeds are never lines; without method one line for all
    assert curve_data(df, "eval.arith.acc", "fraction", ["method", "fraction", "seed"])["line"].nunique() == 2
    assert curve_data(df, "eval.arith.acc", "fraction", ["fraction"])["n"].tolist() == [6, 6]


def test_report_writes_tables_and_plots_without_torch(sweep):
    code = ("import sys; from analysis.__main__ import main; out = main([sys.argv[1]]); "
            "import less.selection.inspect, less.results; "
            "bad = {'torch', 'transformers', 'omegaconf'} & set(sys.modules); assert not bad, bad; "
            "print(sorted(p.name for p in out.iterdir()))")
    proc = subprocess.run([sys.executable, "-c", code, str(sweep)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == str(sorted([
        "table.md", "table.tex", "metric_vs_fraction.arith.acc.png", "metric_vs_fraction.selection.target_share.png",
        "selection_overlap.png", "composition_by_source.png"]))


def test_inspect_lists_each_subtasks_top_examples_and_recombines_to_the_scores(default_run, shared_cache, tmp_path,
                                                                                capsys):
    from analysis.__main__ import main
    from less.selection.inspect import COLUMNS, select_dir, subtask_scores, top_by_subtask

    run_dir, results = default_run
    select = select_dir(run_dir)
    sub = subtask_scores(select)
    assert sub.subtasks == results["selection"]["subtasks"] and sub.checkpoints == results["selection"]["checkpoints"]
    np.testing.assert_allclose(sub.overall(), np.load(select / "scores.npy"), rtol=1e-6, atol=1e-7)
    for i in (0, len(sub.ids) // 2, len(sub.ids) - 1):  # the checkpoints' terms add up to the score
        np.testing.assert_allclose(sub.by_checkpoint(i).sum(0), sub.scores[i], rtol=1e-5, atol=1e-6)

    # a run whose results.json lists only the select artifact: the inputs are found through key.json
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "results.json").write_text(json.dumps({"artifacts": {"select": results["artifacts"]["select"]}}))
    rows = top_by_subtask(bare, n=3)
    assert rows == top_by_subtask(run_dir, n=3)
    assert [tuple(r) for r in rows] == [COLUMNS] * len(rows) and len(rows) == 3 * len(sub.subtasks)
    pool = {json.loads(line)["id"]: json.loads(line) for line in open(Path(results["artifacts"]["pool"]["dir"]) / "pool.jsonl")}
    for j, name in enumerate(sub.subtasks):
        mine = [r for r in rows if r["subtask"] == name]
        assert [r["rank"] for r in mine] == [1, 2, 3]
        best = np.argsort(-sub.scores[:, j], kind="stable")[:3]
        assert [r["id"] for r in mine] == [sub.ids[i] for i in best]
        assert [r["score"] for r in mine] == pytest.approx(sub.scores[best, j].tolist())
        for r in mine:
            assert r["source"] == pool[r["id"]]["dataset"] and r["top_checkpoint"] in sub.checkpoints
            assert pool[r["id"]]["messages"][0]["content"].startswith(r["text"].rstrip("…"))
    main(["inspect", str(run_dir), "--top", "2"])
    printed = capsys.readouterr().out
    assert f"== subtask {sub.subtasks[0]}" in printed and rows[0]["id"] in printed

    # another method: the overall top of its ranking
    other = run_pipeline(["selection=random", "stages=[prepare,select]"], shared_cache, tmp_path / "random")
    top = top_by_subtask(tmp_path / "random", n=4)
    ranking = [line.split(",")[1] for line in open(other["selection"]["ranking"])][1:5]
    assert [r["id"] for r in top] == ranking and {r["subtask"] for r in top} == {""}
    assert all(r["top_checkpoint"] is None for r in top)


def test_transfer_matrix_is_the_mean_over_less_runs_per_selector_and_model(sweep):
    from analysis import load
    from analysis.plots import transfer_matrix_figure

    df = load(sweep)
    df["selector"] = np.where(df["seed"] == 0, "s0", "s1")
    df["model"] = np.where(df["fraction"] == 0.05, "m0", "m1")
    ax = transfer_matrix_figure(df, "eval.arith.acc").axes[0]
    less = df[df["method"] == "less"]
    want = [[100 * less.loc[(less["selector"] == s) & (less["model"] == m), "eval.arith.acc"].mean()
             for m in ("m0", "m1")] for s in ("s0", "s1")]
    np.testing.assert_allclose(ax.images[0].get_array(), want)
    assert "arith.acc" in ax.get_title() and ax.get_xlabel().startswith("trained model")


def test_load_wandb_has_the_columns_of_load(monkeypatch):
    import types

    import wandb

    from analysis import load_wandb

    def fake(i, method, fraction):
        summary = {"eval/arith/acc": 0.5 + i / 10, "eval/arith/acc_stderr": 0.01, "selection/method": method,
                   "selection/target_share": 0.9, "selection/top": {"_type": "table-file"}, "_step": 3}
        config = {"seed": i % 2, "selection": {"method": method, "fraction": fraction, "proj_dim": None},
                  "model": {"name": "m"}, "selector": {"name": None}, "pool": {"name": "p"},
                  "target": {"name": "t"}, "logger": {"group": f"g{i}"}, "datastore": {"dims": [8]}}
        return types.SimpleNamespace(url=f"https://wandb/run{i}", config=config,
                                     summary=types.SimpleNamespace(_json_dict=summary))

    runs = [fake(0, "less", 0.05), fake(1, "less", 0.05), fake(2, "random", 0.1)]
    monkeypatch.setattr(wandb, "Api", lambda: types.SimpleNamespace(runs=lambda path, filters=None: runs))
    df = load_wandb("entity/project", group="g")
    assert df["path"].tolist() == [r.url for r in runs] and df["method"].tolist() == ["less", "less", "random"]
    assert df["fraction"].tolist() == [0.05, 0.05, 0.1] and df["seed"].tolist() == [0, 1, 0]
    assert df["model"].tolist() == ["m"] * 3 and df["selector"].tolist() == ["m"] * 3
    assert df["eval.arith.acc"].tolist() == pytest.approx([0.5, 0.6, 0.7])
    assert "selection.top" not in df and "_step" not in df
    # the varying config keys stand for the overrides; logger.* is bookkeeping
    assert {"selection.method", "selection.fraction"} <= set(df.attrs["config_columns"]) and "logger.group" not in df


def test_groups_of_a_column_mixing_numbers_and_text(sweep):
    from analysis import load, table

    df = load(sweep)
    df["selection.k"] = [10 if s == 0 else "none" for s in df["seed"]]
    t = table(df, ["eval.arith.acc"], ["selection.k"])
    assert t["selection.k"].tolist() == ["10", "none"] and t["n"].tolist() == [4, 8]
    with pytest.raises(KeyError):
        table(df, ["selection.method"], ["method"])  # not numeric

"""The analysis side of ``experiment=validate``: lds.csv (one row per method, deduplicated over
fractions), selection_curve.csv (target loss per method and fraction, random's beside it, the paired
Δ) and their plots, on hand-made sweeps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.test_analysis_paired import SEEDS, expected, fake_sweep, per_example, write_run

METHODS = ("less", "random", "bm25")
FRACTIONS = (0.01, 0.05, 0.25)
LDS = {"less": (0.42, 0.05, 0.30, 0.55), "random": (0.01, 0.06, -0.12, 0.13), "bm25": (0.20, 0.07, 0.05, 0.33)}


def validate_section(method: str, lds: float | None = None) -> dict:
    v, se, lo, hi = LDS[method]
    v = v if lds is None else lds
    return {"validate": {"method": method, "task": "arith", "lds": v, "stderr": se, "ci_low": lo, "ci_high": hi,
                         "subsets": 16, "alpha": 0.5,
                         "by_task": {"arith": {"lds": v, "ci_low": lo, "ci_high": hi},
                                     "other": {"lds": v / 2, "ci_low": lo / 2, "ci_high": hi / 2}}}}


def validate_sweep(root, seeds=(0,), examples=True):
    j = 0
    for method in METHODS:
        for fraction in FRACTIONS:
            for seed in seeds:
                write_run(root / str(j), method, fraction, seed, root, extra=validate_section(method),
                          examples=examples, name="validate")
                j += 1
    return root


def test_lds_csv_has_one_row_per_method_and_its_plot(tmp_path):
    from analysis.__main__ import main

    sweep = validate_sweep(tmp_path / "s")
    out = main([str(sweep)])
    lds = pd.read_csv(out / "lds.csv")
    assert lds["method"].tolist() == sorted(METHODS)  # 3 fractions each, deduplicated
    assert {"method", "lds", "ci_low", "ci_high", "subsets", "task", "alpha", "stderr"} <= set(lds.columns)
    for _, r in lds.iterrows():
        assert (r["lds"], r["stderr"], r["ci_low"], r["ci_high"]) == pytest.approx(LDS[r["method"]])
        assert (r["subsets"], r["alpha"], r["task"], r["n_runs"], str(r["seeds"])) == (16, 0.5, "arith", 3, "0")
    by_task = pd.read_csv(out / "lds_by_task.csv")
    assert len(by_task) == 6 and by_task.query("method == 'less' and task == 'other'")["lds"].item() == pytest.approx(0.21)
    assert (out / "lds.png").is_file()

    from analysis import load
    from analysis.plots import lds_figure
    from analysis.validation import lds_table

    ax = lds_figure(lds_table(load(sweep))).axes[0]
    _, _, (bars,) = ax.containers[0].lines
    segs = bars.get_segments()  # one vertical bar per method: ci_low .. ci_high
    np.testing.assert_allclose([s[:, 1] for s in segs], [LDS[m][2:] for m in sorted(METHODS)])
    assert [t.get_text() for t in ax.get_xticklabels()] == sorted(METHODS)
    assert "M = 16 subsets" in ax.get_title() and "alpha = 0.5" in ax.get_title()


def test_lds_that_disagree_within_a_method_stop_with_both_runs(tmp_path, capsys):
    from analysis.__main__ import main

    sweep = validate_sweep(tmp_path / "s")
    # the same method, seed and fraction as run 0 (a method whose LDS depends on the fraction gets a
    # row per fraction: the next test)
    write_run(sweep / "99", "less", FRACTIONS[0], 0, sweep, extra=validate_section("less", lds=0.9), name="validate")
    with pytest.raises(SystemExit) as exc:
        main([str(sweep)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "LDS of method less" in err[0]
    assert str(sweep / "0") in err[0] and str(sweep / "99") in err[0]


def test_lds_that_differ_by_fraction_are_rows_of_their_own(tmp_path):
    """A method whose LDS depends on how many it selects (kcenter: its scores follow its greedy picks)."""
    from analysis import load
    from analysis.validation import lds_table

    sweep = tmp_path / "s"
    write_run(sweep / "0", "bm25", 0.05, 0, sweep, extra=validate_section("bm25", lds=0.1))
    write_run(sweep / "1", "bm25", 0.25, 0, sweep, extra=validate_section("bm25", lds=-0.2))
    write_run(sweep / "2", "less", 0.05, 0, sweep, extra=validate_section("less"))
    write_run(sweep / "3", "less", 0.25, 0, sweep, extra=validate_section("less"))
    lds = lds_table(load(sweep))
    assert lds["method"].tolist() == ["bm25", "bm25", "less"]
    assert lds["lds"].tolist() == pytest.approx([0.1, -0.2, 0.42])
    assert lds["fraction"].tolist()[:2] == [0.05, 0.25] and pd.isna(lds["fraction"].iloc[2])


def test_lds_that_differ_by_seed_are_rows_of_their_own(tmp_path):
    from analysis import load
    from analysis.validation import lds_table

    sweep = tmp_path / "s"
    write_run(sweep / "0", "random", 0.05, 0, sweep, extra=validate_section("random", lds=0.01))
    write_run(sweep / "1", "random", 0.05, 1, sweep, extra=validate_section("random", lds=-0.03))
    write_run(sweep / "2", "less", 0.05, 0, sweep, extra=validate_section("less"))
    write_run(sweep / "3", "less", 0.05, 1, sweep, extra=validate_section("less"))
    lds = lds_table(load(sweep))
    assert lds["method"].tolist() == ["less", "random", "random"]
    assert lds["seeds"].tolist() == ["0,1", "0", "1"] and lds["lds"].tolist() == pytest.approx([0.42, 0.01, -0.03])


def test_selection_curve_csv_and_plot(tmp_path):
    from analysis import load
    from analysis.__main__ import main
    from analysis.paired import compare
    from analysis.plots import selection_curve_figure
    from analysis.validation import selection_curve

    sweep = validate_sweep(tmp_path / "s", seeds=SEEDS)
    out = main([str(sweep)])
    curve = pd.read_csv(out / "selection_curve.csv")
    assert {"method", "fraction", "target_loss", "reference_target_loss", "delta", "ci_low", "ci_high"} <= set(curve.columns)
    assert len(curve) == len(METHODS) * len(FRACTIONS)
    df = load(sweep)
    for _, r in curve.iterrows():
        runs = df[(df["method"] == r["method"]) & (df["fraction"] == r["fraction"])]
        ref = df[(df["method"] == "random") & (df["fraction"] == r["fraction"])]
        assert r["target_loss"] == pytest.approx(runs["eval.arith.target_loss"].mean())
        assert r["target_loss_std"] == pytest.approx(runs["eval.arith.target_loss"].std(ddof=1))
        assert r["reference_target_loss"] == pytest.approx(ref["eval.arith.target_loss"].mean())
        if r["method"] == "random":
            assert np.isnan(r["delta"])
            continue
        _, loss_est, _, loss_mean = expected(r["method"], r["fraction"])
        assert r["delta"] == pytest.approx(loss_mean)
        assert (r["ci_low"], r["ci_high"], r["n_seeds"]) == pytest.approx((loss_est.ci_low, loss_est.ci_high, 3))
    assert (out / "selection_curve.arith.png").is_file()
    lds = pd.read_csv(out / "lds.csv")  # the same LDS at every fraction and seed: one row per method
    assert lds["method"].tolist() == sorted(METHODS) and lds["seeds"].tolist() == ["0,1,2"] * 3

    fig = selection_curve_figure(selection_curve(df, compare(df)), "arith")
    left, right = fig.axes
    assert left.get_xscale() == "log" and right.get_xscale() == "log"
    lines = {c.get_label(): c.lines[0] for c in left.containers}
    assert set(lines) == set(METHODS) and lines["random"].get_linestyle() == "--" and lines["less"].get_linestyle() == "-"
    means = [np.mean([per_example("less", f, s)[1].mean() for s in SEEDS]) for f in FRACTIONS]
    np.testing.assert_allclose(lines["less"].get_xdata(), FRACTIONS)
    # the run-level target loss is the macro mean over subtasks, not the mean over examples
    assert not np.allclose(lines["less"].get_ydata(), means)
    assert {c.get_label() for c in right.containers} == {"less", "bm25"}


def test_selection_curve_without_examples_has_no_delta(tmp_path):
    from analysis.__main__ import main

    sweep = validate_sweep(tmp_path / "s", examples=False)
    out = main([str(sweep)])
    curve = pd.read_csv(out / "selection_curve.csv")
    assert len(curve) == 9 and curve["delta"].isna().all() and curve["target_loss"].notna().all()
    assert not (out / "paired.csv").exists()


def test_no_selection_curve_for_one_fraction_without_validate(tmp_path):
    from analysis.__main__ import main

    out = main([str(fake_sweep(tmp_path / "s", fractions=(0.05,)))])
    assert not (out / "selection_curve.csv").exists() and not (out / "lds.csv").exists()
    assert (out / "paired.csv").exists()

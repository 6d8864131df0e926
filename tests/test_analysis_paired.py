"""Paired Δ vs a reference method (analysis.paired) on hand-made sweeps whose runs list per-example
results (examples.jsonl), checked against per-example arithmetic and less.stats.paired."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from less.stats import paired

METHODS, FRACTIONS, SEEDS = ("less", "random"), (0.05, 0.1), (0, 1, 2)
SUBTASKS = {"add": 24, "sub": 16}  # 40 examples of task "arith" in two subtasks of unequal size
N = sum(SUBTASKS.values())


def example_keys(task: str = "arith") -> list[tuple[str, str, int]]:
    return [(task, sub, i) for sub, n in SUBTASKS.items() for i in range(n)]


def per_example(method: str, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(acc 0/1, target loss) per example, deterministic: LESS is right more often and has lower loss."""
    i = np.arange(N)
    rng = np.random.default_rng(1000 * seed + int(fraction * 100) + (7 if method == "less" else 0))
    p_right = (0.8 if method == "less" else 0.4) + (0.1 if fraction == 0.1 else 0.0)
    acc = (rng.random(N) < p_right).astype(float)
    loss = 2.0 + 0.1 * (i % 5) - (0.5 if method == "less" else 0.0) - fraction + rng.normal(0, 0.05, N)
    return acc, loss


def digest(key, salt: str = "") -> str:
    return hashlib.blake2b(f"{key}{salt}".encode(), digest_size=8).hexdigest()


def write_run(d: Path, method: str, fraction: float, seed: int, root: Path, extra: dict | None = None,
              examples: bool = True, salt: str = "", name: str = "fake") -> Path:
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(
        [f"selection={method}", f"selection.fraction={fraction}", f"seed={seed}", "logger=none",
         f"cache_dir={root}/cache"]))
    acc, loss = per_example(method, fraction, seed)
    keys = example_keys()
    ex_file = d / "eval_artifact" / "examples.jsonl"
    ex_file.parent.mkdir()
    ex_file.write_text("".join(json.dumps({
        "task": t, "subtask": s, "doc_id": i, "digest": digest((t, s, i), salt), "target_loss": float(l),
        "tokens": 2, "metrics": {"acc": float(a), "acc_norm": float(a)}}) + "\n"
        for (t, s, i), a, l in zip(keys, acc, loss)))
    subs = [s for _, s, _ in keys]
    macro = float(np.mean([loss[[x == s for x in subs]].mean() for s in SUBTASKS]))
    results = {
        "eval": {"arith": {"acc": float(acc.mean()), "acc_stderr": 0.05, "acc_norm": float(acc.mean()),
                           "target_loss": macro, "target_loss_stderr": 0.01,
                           "subtasks": {s: {"target_loss": float(loss[[x == s for x in subs]].mean())}
                                        for s in SUBTASKS}}},
        "selection": {"method": method, "n_selected": 4, "target_share": 0.5},
        "config": {"name": name, "model": "m", "selector": "m", "pool": "p", "target": "t"},
        **({"examples": {"eval": str(ex_file)}} if examples else {}),
        **(extra or {})}
    (d / "results.json").write_text(json.dumps(results))
    return d


def fake_sweep(root: Path, methods=METHODS, fractions=FRACTIONS, seeds=SEEDS, skip=(), **kw) -> Path:
    j = 0
    for method in methods:
        for fraction in fractions:
            for seed in seeds:
                if (method, fraction, seed) in skip:
                    continue
                write_run(root / str(j), method, fraction, seed, root, **kw)
                j += 1
    return root


def expected(method: str, fraction: float, seeds=SEEDS, reference: str = "random", seed: int = 0):
    """(acc Δ in pp, loss Δ) as less.stats.paired computes them from the seed-averaged examples."""
    a = np.mean([per_example(method, fraction, s)[0] for s in seeds], axis=0)
    b = np.mean([per_example(reference, fraction, s)[0] for s in seeds], axis=0)
    la = np.mean([per_example(method, fraction, s)[1] for s in seeds], axis=0)
    lb = np.mean([per_example(reference, fraction, s)[1] for s in seeds], axis=0)
    return paired(100 * a, 100 * b, seed=seed), paired(la, lb, seed=seed), (a - b).mean() * 100, (la - lb).mean()


def cells(md: str) -> list[list[str]]:
    lines = [line for line in md.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[:1] + lines[2:]]


@pytest.fixture
def sweep(tmp_path):
    return fake_sweep(tmp_path / "sweep")


def test_delta_is_the_seed_averaged_per_example_difference_with_its_bootstrap_interval(sweep):
    from analysis import load
    from analysis.paired import compare

    df = load(sweep)
    comp = compare(df)
    rows = comp.csv()
    assert len(rows) == 4 and set(rows["metric"]) == {"acc", "target_loss"} and set(rows["method"]) == {"less"}
    for fraction in FRACTIONS:
        acc_est, loss_est, acc_mean, loss_mean = expected("less", fraction)
        r = rows[(rows["fraction"] == fraction) & (rows["metric"] == "acc")].iloc[0]
        assert r["delta"] == pytest.approx(acc_mean) and r["units"] == "pp"
        assert (r["delta"], r["stderr"], r["ci_low"], r["ci_high"]) == pytest.approx(
            (acc_est.value, acc_est.stderr, acc_est.ci_low, acc_est.ci_high))
        assert (r["n_examples"], r["n_seeds"], r["seeds"], r["reference"], r["task"]) == (N, 3, "0,1,2", "random", "arith")
        r = rows[(rows["fraction"] == fraction) & (rows["metric"] == "target_loss")].iloc[0]
        assert r["delta"] == pytest.approx(loss_mean) and r["delta"] < 0 and r["units"] == "nats"
        assert (r["ci_low"], r["ci_high"], r["excludes_zero"]) == pytest.approx(
            (loss_est.ci_low, loss_est.ci_high, True))
        # the runs paired, seed by seed
        assert r["runs"].split(";") == [str(p) for p in df.loc[(df["method"] == "less") & (df["fraction"] == fraction), "path"]]


def test_table_gains_delta_columns_and_paired_csv(sweep):
    from analysis.__main__ import main

    out = main([str(sweep)])
    md = (out / "table.md").read_text()
    t = cells(md)
    assert t[0] == ["method", "fraction", "arith.acc (%)", "arith.target_loss", "selection.target_share (%)",
                    "Δ arith.acc vs random (pp)", "Δ arith.target_loss vs random", "n"]
    acc_est, loss_est, _, _ = expected("less", 0.05)
    star = "*" if acc_est.excludes_zero else ""
    assert t[1][:2] == ["less", "0.05"]
    assert t[1][5] == f"{acc_est.value:+.1f} [{acc_est.ci_low:.1f}, {acc_est.ci_high:.1f}]{star}"
    assert t[1][6] == f"{loss_est.value:+.3f} [{loss_est.ci_low:.3f}, {loss_est.ci_high:.3f}]*"
    assert t[3][:2] == ["random", "0.05"] and t[3][5:7] == ["ref", "ref"]
    assert "* = the interval excludes 0" in md and "not a new training seed" in md
    paired_csv = pd.read_csv(out / "paired.csv")
    assert {"fraction", "method", "reference", "metric", "delta", "stderr", "ci_low", "ci_high", "n_examples",
            "n_seeds"} <= set(paired_csv.columns) and len(paired_csv) == 4
    tex = (out / "table.tex").read_text()
    assert r"$\Delta$ arith.acc vs random (pp)" in tex
    head = tex[:tex.index(r"\begin{tabular}")].splitlines()
    assert head and all(line.startswith("% ") for line in head)  # the notes are LaTeX comments


def test_a_missing_seed_is_left_out_of_the_pairing(tmp_path):
    from analysis import load
    from analysis.paired import compare

    sweep = fake_sweep(tmp_path / "s", fractions=(0.05,), skip={("less", 0.05, 2)})
    rows = compare(load(sweep)).csv()
    acc_est, _, _, _ = expected("less", 0.05, seeds=(0, 1))
    r = rows[rows["metric"] == "acc"].iloc[0]
    assert (r["n_seeds"], r["seeds"]) == (2, "0,1") and r["delta"] == pytest.approx(acc_est.value)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((acc_est.ci_low, acc_est.ci_high))


def test_bootstrap_seed_sets_the_interval_reproducibly(sweep):
    from analysis import load
    from analysis.paired import compare

    df = load(sweep)
    a, b, c = compare(df, seed=0).csv(), compare(df, seed=0).csv(), compare(df, seed=5).csv()
    assert a[["ci_low", "ci_high"]].equals(b[["ci_low", "ci_high"]])
    assert not np.allclose(a["ci_low"], c["ci_low"]) and np.allclose(a["delta"], c["delta"])
    acc_est, _, _, _ = expected("less", 0.05, seed=5)
    r = c[(c["fraction"] == 0.05) & (c["metric"] == "acc")].iloc[0]
    assert (r["ci_low"], r["ci_high"], r["bootstrap_seed"]) == pytest.approx((acc_est.ci_low, acc_est.ci_high, 5))


def test_runs_paired_on_different_examples_stop_with_one_line_naming_both(tmp_path, capsys):
    from analysis.__main__ import main

    sweep = fake_sweep(tmp_path / "s", methods=("random",), fractions=(0.05,))
    write_run(sweep / "9", "less", 0.05, 1, sweep, salt="other prompt")  # paired with random seed 1 (job 1)
    with pytest.raises(SystemExit) as exc:
        main([str(sweep)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and err[0].startswith("error: ")
    assert str(sweep / "9") in err[0] and str(sweep / "1") in err[0] and "different examples" in err[0]
    assert "40 of 40 examples differ" in err[0]


def test_seeds_of_one_comparison_on_different_examples_are_an_error(tmp_path):
    from analysis import load
    from analysis.paired import PairingError, compare

    sweep = fake_sweep(tmp_path / "s", fractions=(0.05,), seeds=(0,))
    write_run(sweep / "8", "less", 0.05, 1, sweep, salt="x")
    write_run(sweep / "9", "random", 0.05, 1, sweep, salt="x")
    with pytest.raises(PairingError, match="seeds of one comparison"):
        compare(load(sweep))


def test_reference_method_absent(tmp_path, capsys):
    from analysis import load
    from analysis.__main__ import main
    from analysis.paired import compare

    # random only at fraction 0.05: the 0.1 group has no Δ, and the note says so
    sweep = fake_sweep(tmp_path / "s", skip={("random", 0.1, s) for s in SEEDS})
    comp = compare(load(sweep))
    assert set(comp.csv()["fraction"]) == {0.05}
    assert any("fraction=0.1" in n and "no random run" in n for n in comp.notes)
    out = main([str(sweep)])
    t = cells((out / "table.md").read_text())
    assert t[2][:2] == ["less", "0.1"] and t[2][5:7] == ["–", "–"]
    assert "no random run, so no Δ" in (out / "table.md").read_text()
    # --reference less: random's Δ vs less, with the sign turned
    comp = compare(load(sweep), "less")
    r = comp.csv().query("metric == 'target_loss'").iloc[0]
    assert r["method"] == "random" and r["delta"] > 0
    # an explicit --reference that no run has: one-line error; the default one absent: no Δ, no error
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([str(sweep), "--reference", "bm25"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and err == ["error: --reference bm25: no run of that method (methods: less, random)"]
    only_less = fake_sweep(tmp_path / "l", methods=("less",))
    comp = compare(load(only_less))
    assert comp.csv().empty and "no run of the reference method random" in comp.note()


def test_runs_without_examples_keep_the_old_table(tmp_path):
    from analysis.__main__ import main

    sweep = fake_sweep(tmp_path / "s", examples=False)
    out = main([str(sweep)])
    md = (out / "table.md").read_text()
    assert "Δ" not in cells(md)[0] and not (out / "paired.csv").exists()
    assert "no per-example results" in md


def test_an_empty_examples_file_is_no_examples(tmp_path):
    """An accuracy-only eval cached before such evals stopped writing an empty examples.jsonl."""
    from analysis import load
    from analysis.paired import compare

    sweep = fake_sweep(tmp_path / "s")
    empty = next(p for p in sorted(sweep.glob("*/results.json")) if '"random"' in p.read_text())
    (empty.parent / "eval_artifact" / "examples.jsonl").write_text("")
    comp = compare(load(sweep))
    assert f"no per-example results for {empty.parent}" in comp.note()


def test_read_examples_rejects_duplicates_and_bad_lines(tmp_path):
    from analysis.paired import PairingError, read_examples

    f = tmp_path / "examples.jsonl"
    rec = {"task": "t", "subtask": "s", "doc_id": 0, "digest": "ab", "target_loss": 1.0, "metrics": {}}
    f.write_text(json.dumps(rec) + "\n" + json.dumps(rec) + "\n")
    with pytest.raises(PairingError, match="more than once"):
        read_examples(f)
    f.write_text(json.dumps(rec) + "\nnot json\n")
    with pytest.raises(PairingError, match=r"examples.jsonl:2"):
        read_examples(f)

"""Held-out target items planted in the pool (less.data.planted, ``plant.*``): which items, in which
rendering, where; precision@k against a brute-force count; the one-line errors; and the embedded
default's planted run with its analysis table."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from less.data import sources
from less.data.planted import Item, plant, recovery, render, sample
from tests.conftest import DATA, ROOT, compose, needs_data, run_expecting_error, run_pipeline

NO_COLOR = "pool.skills=[arithmetic,reverse,capital,uppercase,sort_words,describe,not_color]"


def _cfg(*over: str):
    return compose([NO_COLOR, "plant.n=30", *over], hydra=False)


def test_planting_inserts_test_items_and_keeps_the_pool_in_order():
    from less.data.synthetic import eval_questions, make_target

    cfg = _cfg()
    pool = sources.load_pool(cfg.pool, cfg.data)
    got = plant(pool, cfg)
    planted = [r for r in got if r.get("planted")]
    assert len(got) == len(pool) + 30 and [r for r in got if not r.get("planted")] == pool
    assert [r["id"] for r in planted] == [f"planted_{k}" for k in range(30)]  # by draw, at seeded places
    assert {r["dataset"] for r in planted} == {"planted"} and len({r["source_id"] for r in planted}) == 30
    questions = {f"eval_{i}": (q, c) for i, (q, c, _) in enumerate(eval_questions(cfg.target.n_eval, cfg.target.seed))}
    dval_texts = {r["messages"][0]["content"] for r in make_target(cfg.target.n_per_subtask, cfg.target.seed)}
    for r in planted:  # D_val's form: the question, "Answer: <color>." (the lm-eval task's right choice)
        q, color = questions[r["source_id"]]
        assert r["messages"] == [{"role": "user", "content": q}, {"role": "assistant", "content": f"Answer: {color}."}]
        assert q not in dval_texts
    chat = [r for r in plant(pool, _cfg("plant.rendering=chat")) if r.get("planted")]
    assert [r["source_id"] for r in chat] == [r["source_id"] for r in planted]
    assert all(r["messages"][1]["content"] == questions[r["source_id"]][1] for r in chat)  # the answer's text alone
    assert plant(pool, cfg) == got  # seeded
    other = plant(pool, _cfg("plant.seed=1"))
    assert [r["source_id"] for r in other if r.get("planted")] != [r["source_id"] for r in planted]


def test_nothing_planted_leaves_the_pool_key_and_planting_keys_only_what_it_reads(tmp_path):
    from less.runner import Runner

    def key(*over):
        return Runner(compose([f"cache_dir={tmp_path}", "logger=none", *over], hydra=False), tmp_path,
                      check=False).lookup("pool").key

    plain = key()
    assert key("plant.n=0", "plant.rendering=chat", "plant.seed=3") == plain
    assert len({plain, key("plant.n=5"), key("plant.n=5", "plant.rendering=chat"), key("plant.n=5", "plant.seed=1"),
                key("plant.n=5", "target.n_eval=80")}) == 5
    assert key("plant.n=5", "target.n_per_subtask=3") == key("plant.n=5")  # D_val's size is not what is planted


def test_the_draw_takes_subtasks_in_turn_and_stops_at_the_test_split():
    items = [Item(f"{s}{i}", s, "u", "", "c", "q", "a") for s in "abc" for i in range(4)]
    got = sample(items, 7, 0)
    assert len({it.id for it in got}) == 7 and sorted(it.subtask for it in got).count("a") in (2, 3)
    assert max(map(lambda s: sum(it.subtask == s for it in got), "abc")) - min(
        map(lambda s: sum(it.subtask == s for it in got), "abc")) <= 1
    with pytest.raises(Exception, match="only 12 items"):
        sample(items, 13, 0)


@needs_data
def test_mmlu_test_questions_planted_as_dval_asks_them():
    from less.data.formats import read_csv
    from less.data.planted import mmlu_items
    from less.data.targets import mmlu, mmlu_user

    cfg = compose(["target=mmlu", f"data.root={DATA}", "plant.n=57"], hydra=False)
    items = mmlu_items(cfg.target, cfg.data)
    got = sample(items, 57, 0)
    assert len({it.subtask for it in got}) == 57  # one per subject
    dval_users = {r["messages"][0]["content"] for r in mmlu(DATA)}
    row = read_csv(DATA / "mmlu" / "test" / "astronomy_test.csv")[0]
    it = next(i for i in items if i.id == "mmlu_test_astronomy_0")
    assert render(it, "dval") == [{"role": "user", "content": mmlu_user("astronomy", row)},
                                  {"role": "assistant", "content": f"The answer is: {row[5]}"}]
    assert render(it, "chat") == [{"role": "user", "content": row[0]},
                                  {"role": "assistant", "content": row[1 + "ABCD".index(row[5])]}]
    assert not {render(i, "dval")[0]["content"] for i in got} & dval_users  # never D_val


def test_precision_at_k_against_a_count_by_hand():
    ranked = ["p1", "x1", "p2", "x2", "x3", "p3", "x4", "x5", "x6", "x7"]
    got = recovery(ranked, {"p1", "p2", "p3"}, n_selected=4, seed=0)
    assert (got["k"], got["hits"], got["precision"]) == (3, 2, pytest.approx(2 / 3))
    assert got["base_rate"] == pytest.approx(0.3) and got["lift"] == pytest.approx((2 / 3) / 0.3)
    assert got["in_selection"] == 2 and got["mean_rank_percentile"] == pytest.approx((0 + 2 + 5) / 3 / 10)
    assert got["ci_low"] <= got["precision"] <= got["ci_high"] and got["ci_low"] < got["ci_high"]
    # the interval is the percentile bootstrap of the top-k hits, as less.stats computes it
    idx = np.random.default_rng(0).integers(0, 3, size=(2000, 3))
    means = np.array([1.0, 0.0, 1.0])[idx].mean(axis=1)
    assert got["ci_low"] == pytest.approx(np.quantile(means, 0.025))
    unranked = recovery(ranked[1:], {"p1", "p2", "p3"}, n_selected=4)  # p1 dropped: ranked last
    assert unranked["hits"] == 1 and unranked["mean_rank_percentile"] == pytest.approx((9 + 1 + 4) / 3 / 9)
    assert unranked["base_rate"] == pytest.approx(2 / 9)  # the planted share of what was ranked


@pytest.mark.parametrize("over, says", [
    (["plant.rendering=xml"], "plant.rendering: unknown rendering 'xml'; choose from dval, chat"),
    (["plant.n=-1"], "plant.n must be a whole number >= 0"),
    (["plant.n=3", "target=bbh"], "target.kind=bbh has no held-out items to plant"),
    (["plant.n=3", "stages=[prepare,warmup,datastore,select,train,eval]"], "stages ['eval'] would score a model"),
    (["plant.n=91", "stages=[prepare]"], "plant.n=91: the target's test split has only 90 items"),
])
def test_bad_planting_is_one_line(over, says, shared_cache, tmp_path, capsys):
    assert says in run_expecting_error(over, shared_cache, tmp_path / "out", capsys)


def test_an_unknown_rendering_exits_non_zero_from_the_command_line(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "experiment=planted", "plant.rendering=poem",
                           "logger=none", f"hydra.run.dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "LESS_CACHE_DIR": str(tmp_path / "c")})
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and errors == ["error: plant.rendering: unknown rendering 'poem'; choose from dval, chat"]


def test_the_planted_experiment_on_the_embedded_default(shared_cache, tmp_path):
    """experiment=planted's setting, LESS: D_val's rendering is found far above the base rate
    (measured 20 of the top 30; base rate 30/555), the plain chat rendering is not (measured 0);
    results.json, the summary and the analysis table say so."""
    from analysis.collect import load
    from analysis.diagnostics import correlates_table, planted_table

    over = [NO_COLOR, "plant.n=30", "stages=[prepare,warmup,datastore,select]"]
    dval = run_pipeline([*over, "selection=less"], shared_cache, tmp_path / "sweep" / "0")
    chat = run_pipeline([*over, "selection=less", "plant.rendering=chat"], shared_cache, tmp_path / "sweep" / "1")
    p, q = dval["selection"]["planted"], chat["selection"]["planted"]
    assert p["rendering"] == "dval" and p["k"] == 30 and p["base_rate"] == pytest.approx(30 / 555)
    assert p["precision"] >= 0.5 and p["ci_low"] > p["base_rate"], p
    assert q["precision"] <= 0.2 and q["mean_rank_percentile"] > 0.5, q
    assert isinstance(p["in_warmup"], int) and dval["selection"]["target_skill"] == "color"
    assert dval["selection"]["target_share"] == p["in_selection"] / p["n_selected"]  # planted rows carry the skill
    assert dval["selection"]["correlates"]["sources"]["planted"]["pool"] == pytest.approx(30 / 555)
    ranked = [line.split(",")[1] for line in open(dval["selection"]["ranking"]).read().splitlines()[1:31]]
    assert p["hits"] == sum(i.startswith("planted_") for i in ranked)
    df = load(tmp_path / "sweep")
    table = planted_table(df)
    assert list(table["rendering"]) == ["chat", "dval"] and list(table["hits"]) == [q["hits"], p["hits"]]
    corr = correlates_table(df)
    assert list(corr["rho_loss"]) == [r["selection"]["correlates"]["spearman"]["loss"]["rho"] for r in (dval, chat)]
    assert list(corr["top_source"])[0] == "planted"

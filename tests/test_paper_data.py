"""The paper's pools and targets on the real files in ../shared/data (skipped when absent)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from omegaconf import OmegaConf

from less.data import pools, sources, targets
from less.data.formats import IGNORE_INDEX, dval_text, encode_example, read_jsonl, validate_example
from less.errors import DataError
from tests.conftest import DATA, needs_data, run_pipeline


def data_cfg(root):
    return OmegaConf.create({"root": str(root) if root else None, "hub_repo": "princeton-nlp/less_data"})


@needs_data
@pytest.mark.parametrize("name,n,subtasks,per", [("mmlu", 285, 57, 5), ("bbh", 81, 27, 3), ("tydiqa", 9, 9, 1)])
def test_dval_counts_and_grouping(name, n, subtasks, per):
    cfg = OmegaConf.create({"name": name, "kind": name, "skill": None})
    rows = sources.load_target(cfg, data_cfg(DATA))
    counts = Counter(r["subtask"] for r in rows)
    assert (len(rows), len(counts), set(counts.values())) == (n, subtasks, {per})
    seen = [r["subtask"] for r in rows]  # grouped: each subtask is one contiguous run
    assert len([s for i, s in enumerate(seen) if i == 0 or seen[i - 1] != s]) == subtasks
    assert len({r["id"] for r in rows}) == n
    for r in rows:
        validate_example(r, name)


@needs_data
def test_mmlu_renders_the_papers_prompt_and_completion():
    ex = targets.mmlu(DATA)[0]
    assert ex["subtask"] == "abstract_algebra"
    assert dval_text(ex) == (
        "<|user|>\nThe following are multiple choice questions (with answers) about  abstract algebra.\n\n"
        "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer:\n"
        "<|assistant|>\nThe answer is: B")
    assert ex["messages"][-1]["content"] == " B"


@needs_data
def test_tydiqa_and_bbh_prompts():
    en = next(r for r in targets.tydiqa(DATA) if r["subtask"] == "english")
    text = dval_text(en)
    assert text.startswith("<|user|>\nAnswer the following question based on the information in the given "
                           "passage.Passage: ")
    assert "\nQuestion: " in text and text.endswith("\n<|assistant|>\nAnswer:" + en["messages"][-1]["content"])
    fi = next(r for r in targets.tydiqa(DATA) if r["subtask"] == "finnish")
    assert fi["assistant_prefix"] == "Vastaus:" and fi["messages"][-1]["content"] == " Kigali"

    raw = json.loads((DATA / "less_eval_formats" / "bbh-three-shot.json").read_text())
    rows = [r for r in targets.bbh(DATA) if r["subtask"] == "date_understanding"]
    exemplars = raw["date_understanding"].split("\n\n")[-3:]
    for j, r in enumerate(rows):
        user = r["messages"][0]["content"]
        assert user.startswith("Infer the date from context.\n\n")
        q_j, a_j = exemplars[j].split("\nA:")
        assert user.endswith(q_j) and r["messages"][-1]["content"] == a_j and r["assistant_prefix"] == "A:"
        for k, ex in enumerate(exemplars):
            assert (ex in user) == (k != j)  # the other two in context, not itself


@needs_data
def test_only_the_target_completion_carries_labels(tiny_tokenizer):
    ex = targets.mmlu(DATA)[3]
    ids, labels = encode_example(ex, tiny_tokenizer, None, completion_eos=False)
    assert tiny_tokenizer.decode([x for x in labels if x != IGNORE_INDEX]) == ex["messages"][-1]["content"]


@needs_data
@pytest.mark.parametrize("source,n", [("dolly", 15015), ("cot", 33443), ("flan_v2", 21391), ("oasst1", 688)])
def test_converters_give_valid_unique_examples(source, n):
    rows = pools.RAW_SOURCES[source](DATA, 0)
    assert len(rows) == n and len({r["id"] for r in rows}) == n
    for r in rows[:: max(1, n // 200)]:
        validate_example(r, source)
        assert r["dataset"] == source and r["messages"][-1]["role"] == "assistant"
        assert all(m["content"].strip() for m in r["messages"])
    assert rows == pools.RAW_SOURCES[source](DATA, 0)  # deterministic


@needs_data
def test_cot_uses_flan_templates_and_oasst_matches_open_instruct():
    rows = pools.cot(DATA, 0)
    gsm = next(r for r in rows if r["id"] == "cot_gsm8k_0")
    assert "Natalia" in gsm["messages"][0]["content"] and "72" in gsm["messages"][1]["content"]
    assert "48 / 2 = 24" in gsm["messages"][1]["content"]
    assert "\\n" not in "".join(m["content"] for r in rows[:500] for m in r["messages"])
    ref = read_jsonl(DATA / "oasst1" / "oasst1_validation_en_leafpaths_openinstruct_format.jsonl")
    assert sorted(json.dumps(r["messages"]) for r in ref) == sorted(json.dumps(r["messages"]) for r in pools.oasst1(DATA, 0))


@needs_data
def test_less_mix_caps_each_source():
    cfg = OmegaConf.create({"name": "less_mix", "kind": "raw", "sources": ["flan_v2", "cot", "dolly", "oasst1"],
                            "max_per_source": 50, "seed": 0})
    rows = sources.load_pool(cfg, data_cfg(DATA))
    assert Counter(r["dataset"] for r in rows) == {"flan_v2": 50, "cot": 50, "dolly": 50, "oasst1": 50}
    assert rows == sources.load_pool(cfg, data_cfg(DATA))


def test_less_data_processed_pool_from_a_local_copy(tmp_path):
    for src in ("dolly", "cot"):
        d = tmp_path / "train" / "processed" / src
        d.mkdir(parents=True)
        (d / f"{src}_data.jsonl").write_text("".join(json.dumps(
            {"dataset": src, "id": f"{src}_{i}", "messages": [{"role": "user", "content": "q"},
                                                              {"role": "assistant", "content": "a"}]}) + "\n"
            for i in range(5)))
    cfg = OmegaConf.create({"name": "less_data", "kind": "less_data", "path": str(tmp_path), "sources": ["cot"],
                            "max_per_source": 3, "seed": 0})
    rows = sources.load_pool(cfg, data_cfg(None))
    assert [r["dataset"] for r in rows] == ["cot"] * 3


def test_data_errors_name_the_file_or_setting(tmp_path):
    with pytest.raises(DataError, match=r"data directory not found \(set by data.root\)"):
        sources.load_target(OmegaConf.create({"name": "mmlu", "kind": "mmlu"}), data_cfg(tmp_path / "nope"))
    with pytest.raises(DataError, match=r"no MMLU dev CSVs found .*set by data.root"):
        sources.load_target(OmegaConf.create({"name": "mmlu", "kind": "mmlu"}), data_cfg(tmp_path))
    (tmp_path / "cot_flan_v2").mkdir()
    (tmp_path / "cot_flan_v2" / "flan_v2_cot_zeroshot_templates.json").write_text(
        json.dumps({"templates": {"cot_gsm8k": [["{question}", "{answer}"]]}}))
    (tmp_path / "cot_flan_v2" / "gsm8k_train.tsv").write_text("q\ta\tr\nonly two\tfields\n")
    with pytest.raises(DataError, match=r"gsm8k_train.tsv:2: expected 3 tab-separated fields"):
        pools.cot(tmp_path, 0)
    raw = OmegaConf.create({"name": "x", "kind": "raw", "sources": ["dolly"], "max_per_source": None, "seed": 0})
    with pytest.raises(DataError, match="set data.root"):
        sources.load_pool(raw, data_cfg(None))
    with pytest.raises(DataError, match=r"pool.sources: unknown source\(s\) \['nope'\]"):
        sources.load_pool(OmegaConf.merge(raw, {"sources": ["nope"]}), data_cfg(tmp_path))


def test_hub_is_not_reached_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="cannot load the bbh validation set from the hub .*set data.root"):
        sources.load_target(OmegaConf.create({"name": "bbh", "kind": "bbh"}), data_cfg(None))


def test_chat_format_tokenizer_masks_assistant_turns(tiny_tokenizer):
    from copy import deepcopy

    tok = deepcopy(tiny_tokenizer)
    tok.chat_template = ("{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}"
                         "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}\n{% endfor %}"
                         "{% if add_generation_prompt %}[assistant] {% endif %}")
    chat = {"id": "c", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                                    {"role": "user", "content": "2+3?"}, {"role": "assistant", "content": "5"}]}
    ids, labels = encode_example(chat, tok, None, chat_format="tokenizer")
    assert ids == tok(tok.apply_chat_template(chat["messages"], tokenize=False), add_special_tokens=False)["input_ids"]
    spans, cur = [], []
    for i, lab in zip(ids, labels):
        if lab == IGNORE_INDEX:
            spans, cur = (spans + [cur] if cur else spans), []
        else:
            cur.append(i)
    spans = spans + [cur] if cur else spans
    assert [tok.decode(s).rstrip("\n") for s in spans] == ["Hello!</s>", "5</s>"]
    target = {"id": "t", "assistant_prefix": "The answer is:",
              "messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": " B"}]}
    _, labels = encode_example(target, tok, None, completion_eos=False, chat_format="tokenizer")
    assert tok.decode([x for x in labels if x != IGNORE_INDEX]) == " B"


def test_target_truncation_keeps_the_completion(tiny_tokenizer):
    from less.data.formats import encode_examples

    ex = {"id": "long", "assistant_prefix": "A:",
          "messages": [{"role": "user", "content": "word " * 400}, {"role": "assistant", "content": " yes"}]}
    right = encode_examples([ex], tiny_tokenizer, 64, completion_eos=False)
    left = encode_examples([ex], tiny_tokenizer, 64, completion_eos=False, truncation="left")
    assert right.ids == [] and dict(right.dropped) == {"no_labels_after_truncation": 1}
    assert left.ids == ["long"] and left.truncated == 1 and len(left.input_ids[0]) == 64
    assert tiny_tokenizer.decode([x for x in left.labels[0] if x != IGNORE_INDEX]) == " yes"


@needs_data
@pytest.mark.parametrize("target,n_sub,per", [
    pytest.param("mmlu", 57, 5, marks=pytest.mark.slow), ("tydiqa", 9, 1)])
def test_pipeline_on_the_paper_data(target, n_sub, per, shared_cache, tmp_path):
    res = run_pipeline(["pool=less_mix", "pool.max_per_source=50", f"target={target}", f"data.root={DATA}",
                        "stages=[prepare,warmup,datastore,select]"], shared_cache, tmp_path)
    assert res["data"]["pool"]["by_source"] == {"cot": 50, "dolly": 50, "flan_v2": 50, "oasst1": 50}
    by_sub = res["data"]["target"]["by_subtask"]
    assert len(by_sub) == n_sub and set(by_sub.values()) == {per}
    assert res["data"]["target"]["dropped"] == {} and "dropped" in res["data"]["pool"]
    assert res["selection"]["n_selected"] == 10 and res["selection"]["target_share"] is None
    assert len(res["selection"]["subtasks"]) == n_sub

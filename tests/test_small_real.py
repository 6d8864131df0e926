"""Real data with the small model (``model=small``) when it is cached: its tokenizer encodes the
pools and every paper target as the reference code does, per-example D_val gradients equal
batch-size-1 gradients on real MMLU/BBH/TyDiQA prompts, and LESS with it finds target content
planted in a real pool.

The model is looked up (never built: that takes ~11 minutes on 2 cores) under its key in
``$LESS_CACHE_DIR``, ``<checkout>/cache`` and the read-only roots (``$LESS_CACHE_READONLY``, which
conftest points at ``../shared/cache`` beside the checkout). A copy there built before keys named
data by content (its key names ``data.root`` by path) is used as a plain Hugging Face checkpoint
when ``less.rekey`` finds that it is the same recipe on the same data, i.e. when
``python -m less.cache_cli rekey`` would move it to today's key. Without either, these tests skip and
say how to build it.
"""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path

import pytest
import torch

from less.data import pools, targets
from less.data.formats import encode_example
from tests.conftest import DATA, ROOT, SHARED_CACHE, compose, needs_data, run_pipeline
from tests.test_gradients import batch1_grads
from tests.test_reference_encoding import pool_examples, reference_dval, reference_encode_messages

BUILD = "python -m less.small_model data.root=../shared/data"


def _small_cfg(cache: Path):
    return compose(["model=small", f"data.root={DATA}", f"cache_dir={cache}"], hydra=False)


def _same_recipe(d: Path, spec: dict) -> bool:
    """Whether artifact ``d`` (keyed the old way) is the small model ``spec`` describes today."""
    from less.rekey import Unverifiable, Upgrade, path_named

    try:
        old = json.loads((d / "key.json").read_text())["spec"]
        if not path_named(old["config"]):
            return False
        recorded = old["config"]["data"]["root"]  # where it was built: the data is ../shared/data now
        return Upgrade([(recorded, str(DATA))]).config("model", old["config"]) == spec["config"]
    except (OSError, ValueError, KeyError, TypeError, Unverifiable):
        return False


def cached_small_model() -> tuple[Path, str] | None:
    """(directory, today's key) of the built small model in one of the caches a user's run would
    fill or a read-only root, under today's key or (built before content keys) the same recipe."""
    from less.cache import readonly_roots
    from less.runner import Runner

    writable = [Path(os.environ["LESS_CACHE_DIR"])] if os.environ.get("LESS_CACHE_DIR") else []
    for root in [*writable, ROOT / "cache"]:
        runner = Runner(_small_cfg(root), root, check=False)
        art = runner.lookup("model")
        if art.cached:
            return art.dir, art.key
        for d in sorted(p for r in [root, *readonly_roots()] for p in (r / "model").glob("*") if p.is_dir()):
            if _same_recipe(d, runner.spec("model")):
                return d, art.key
    return None


@pytest.fixture(scope="module")
def small_model() -> tuple[Path, str]:
    if not (DATA / "mmlu").is_dir():
        pytest.skip(f"real data not found at {DATA} (../shared/data beside the checkout)")
    found = cached_small_model()
    if found is None:
        where = " or ".join(filter(None, [os.environ.get("LESS_CACHE_DIR"), str(ROOT / "cache"), str(SHARED_CACHE)]))
        pytest.skip(f"the small model is not cached in {where}: build it once with `{BUILD}` (~11 min)")
    return found


@pytest.fixture(scope="module")
def small_dir(small_model) -> Path:
    return small_model[0]


@pytest.fixture(scope="module")
def small_tokenizer(small_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(small_dir)


def test_the_cached_model_has_read_real_text(small_dir, small_tokenizer):
    """Its recorded held-out perplexity, and a tokenizer that compresses held-out English (a byte
    tokenizer, or one trained on something else, gives about one character per token)."""
    rep = json.loads((small_dir / "pretrain.json").read_text())
    assert rep["held_out_perplexity"] < 200 and rep["tokens_seen"] >= 2_000_000, rep
    questions = [row[0] for row in csv.reader(open(DATA / "mmlu" / "test" / "astronomy_test.csv", encoding="utf-8"))]
    text = "\n".join(questions)
    n = len(small_tokenizer(text, add_special_tokens=False)["input_ids"])
    assert len(text) / n > 3.0, len(text) / n


@needs_data
def test_pool_and_dval_encoding_equal_the_reference(small_tokenizer):
    for ex in pool_examples():
        assert encode_example(dict(ex), small_tokenizer, 2048) == \
            reference_encode_messages(ex, small_tokenizer, 2048), ex["id"]
    for name in ("mmlu", "bbh", "tydiqa"):
        rows = getattr(targets, name)(DATA)
        for ex in rows[:: max(1, len(rows) // 20)]:
            query = "<|user|>\n" + ex["messages"][0]["content"] + "\n<|assistant|>\n" + ex["assistant_prefix"]
            assert encode_example(ex, small_tokenizer, None, completion_eos=False) == \
                reference_dval(query, ex["messages"][-1]["content"], small_tokenizer, 100_000), ex["id"]


def test_dval_gradients_on_real_prompts_equal_batch_size_one(small_dir, small_tokenizer):
    """Per-example LoRA gradients of the small model, one padded batch of real D_val examples of
    every target (12 to ~1,000 tokens), equal one-at-a-time autograd."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from less.gradients.per_example import PerExampleGradients

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(small_dir, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # LoRA B starts at zero, which would make every A gradient zero
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    model.eval()
    exs = [targets.mmlu(DATA)[7], targets.bbh(DATA)[40], targets.tydiqa(DATA)[0], targets.mmlu(DATA)[100]]
    enc = [encode_example(ex, small_tokenizer, 1024, completion_eos=False, truncation="left") for ex in exs]
    width = max(len(i) for i, _ in enc)
    ids = torch.zeros((len(enc), width), dtype=torch.long)
    mask, labels = torch.zeros_like(ids), torch.full_like(ids, -100)
    for r, (i, lab) in enumerate(enc):
        ids[r, :len(i)], mask[r, :len(i)], labels[r, :len(i)] = torch.tensor(i), 1, torch.tensor(lab)
    assert width > 200 and min(len(i) for i, _ in enc) < width / 2  # real padding in the batch
    ref = batch1_grads(model, ids, mask, labels)
    collector = PerExampleGradients(model)
    got = collector(ids, mask, labels)
    collector.close()
    assert len(got) == 4 * 2 * 2  # 4 layers x (q, v) x (A, B)
    for p, g in got.items():
        for r in range(len(enc)):
            torch.testing.assert_close(g[r], ref[r][p], rtol=1e-4, atol=1e-6)


def _planted_pool(path: Path, per_source: int, n_planted: int) -> set[str]:
    """``per_source`` seeded examples of each real source plus ``n_planted`` MMLU test questions
    (one per subject, never the dev questions of D_val) asked as D_val asks them; their ids."""
    rng = random.Random(0)
    rows = []
    for name in ("dolly", "cot", "flan_v2", "oasst1"):
        rows += [{**r, "dataset": name} for r in rng.sample(pools.RAW_SOURCES[name](DATA, 0), per_source)]
    planted = set()
    for f in sorted((DATA / "mmlu" / "test").glob("*_test.csv"))[::57 // n_planted][:n_planted]:
        q = next(csv.reader(open(f, encoding="utf-8")))
        subject = f.name.removesuffix("_test.csv")
        user = (f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
                + q[0] + "".join(f"\n{c}. {q[j + 1]}" for j, c in enumerate("ABCD")) + "\nAnswer:")
        rows.append({"id": f"planted_{subject}", "dataset": "mmlu_test",
                     "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": f"The answer is: {q[5]}"}]})
        planted.add(f"planted_{subject}")
    rng.shuffle(rows)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return planted


@pytest.fixture(scope="module")
def planted(small_model, tmp_path_factory) -> tuple[set[str], list[str], Path]:
    """(planted ids, the pipeline overrides of the planted pool, a cache holding the small model):
    200 real pool examples and 20 MMLU test questions asked as D_val asks them (header, lettered
    choices, "The answer is:"). The runs below share its warmup."""
    d = tmp_path_factory.mktemp("planted")
    ids = _planted_pool(d / "pool.jsonl", 50, 20)
    cache = d / "cache"
    (cache / "model").mkdir(parents=True)
    (cache / "model" / small_model[1]).symlink_to(small_model[0])  # read-only reuse under today's key
    over = ["model=small", f"data.root={DATA}", "pool=jsonl", f"pool.files=[{d / 'pool.jsonl'}]", "target=mmlu",
            "stages=[prepare,warmup,datastore,select]"]
    return ids, over, cache


def _ranked(res: dict) -> list[str]:
    return [row["id"] for row in csv.DictReader(open(res["selection"]["ranking"]))]


@pytest.mark.slow
def test_less_finds_target_content_planted_in_a_real_pool(planted, tmp_path):
    """LESS with the small model (warmup, Adam features, MMLU's D_val) fills its top 5% (11) with
    planted questions, where random picks would hold one on average. This checks the pipeline on
    real data, not what the model understands: the tiny model finds them too (measured 10 of 11),
    and neither finds the same questions asked plainly (question -> answer text: 1 of 11 each;
    experiments/README.md)."""
    ids, over, cache = planted
    res = run_pipeline([*over, "selection=less"], cache, tmp_path / "out")
    assert res["artifacts"]["model"]["cached"] is True
    selected = [json.loads(line)["id"] for line in open(res["selection"]["selected"])]
    ranked = _ranked(res)
    assert len(selected) == 11 and ranked[:11] == selected
    # measured: all 11 selected are planted, and 19 of the 20 planted rank first
    assert set(selected) <= ids and len(ids & set(ranked[:20])) >= 18, ranked[:20]


@pytest.mark.slow
@pytest.mark.parametrize("method, extra, at_least, at_most", [
    ("tracin", ["datastore.checkpoints=[4]"], 10, 11),     # measured 11 of 11 (all 4 checkpoints: 11)
    ("trackstar", ["datastore.checkpoints=[4]"], 10, 11),  # measured 11 (all 4: 11)
    ("ekfac", ["selection.ekfac.max_examples=100"], 10, 11),  # measured 11 (factors on all 220: 11)
    ("trak", ["datastore.checkpoints=[4]"], 0, 4),         # measured 2 (all 4: 1); damping 1: 7 (docs)
])
def test_attribution_methods_on_the_planted_pool(planted, method, extra, at_least, at_most, tmp_path):
    """The same planted pool, each attribution method (on the last warmup checkpoint, or EK-FAC's
    factors on 100 of the pool, to keep the cost down): planted questions in its top 5% (11; base
    rate 1). TracIn, TrackStar and EK-FAC recover them; TRAK does not at its default damping
    (0.01 x the kernel's mean eigenvalue): its inverse kernel discounts what many pool examples
    share, and the 20 planted questions share their format (docs/selection-methods.md)."""
    ids, over, cache = planted
    res = run_pipeline([*over, f"selection={method}", *extra], cache, tmp_path / "out")
    got = len(ids & set(_ranked(res)[:11]))
    assert at_least <= got <= at_most, (method, got, _ranked(res)[:11])

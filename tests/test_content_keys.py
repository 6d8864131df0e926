"""Keys name data by content (less.identity): the same bytes at another path give the same keys,
one changed byte changes the keys of exactly the stages that read it and of their dependants; the
digest memo skips files whose stat is unchanged; a cache keyed the old way (by paths) is re-keyed
in place by ``python -m less.cache_cli rekey`` and a run then uses it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from less import identity
from less.cache import KEY_FILE, cache_key
from less.cache_cli import main as cache_main
from less.runner import Runner
from tests.conftest import compose, run_pipeline, with_session_models


def make_root(root: Path) -> Path:
    """A miniature data root in the ../shared/data layout: every file the raw pools, the paper
    targets, the paper evaluation and the small model read (contents made up, a few lines each)."""
    files = {
        "dolly/dolly.jsonl": "".join(json.dumps({"instruction": f"Say {i}.", "context": "", "response": f"{i}"}) + "\n"
                                     for i in range(40)),
        "cot_flan_v2/flan_v2_cot_zeroshot_templates.json": "{}",
        "flan_v2_proxy_niv2/flan_v2_natinst_v2_zeroshot_templates.json": "{}",
        "oasst1/oasst1_validation_en_messages.jsonl": "",
        "mmlu/dev/anatomy_dev.csv": "q,a,b,c,d,A\n",
        "mmlu/test/anatomy_test.csv": "q,a,b,c,d,B\n",
        "tydiqa/tydiqa-one-shot.json": "{}",
        "tydiqa/tydiqa-goldp-v1.1-dev.json": "{}",
        "less_eval_formats/bbh-three-shot.json": "{}",
        "bbh/bbh/a.json": "{}",
        "README.md": "not read by anything",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def keys(overrides: list[str], cache: Path) -> dict[str, str]:
    r = Runner(compose([f"cache_dir={cache}", *overrides], hydra=False), cache.parent / "out", check=False)
    return {n: r.key(n) for n in r.graph if r.applies(n)}


def specs_text(overrides: list[str], cache: Path) -> str:
    r = Runner(compose([f"cache_dir={cache}", *overrides], hydra=False), cache.parent / "out", check=False)
    return json.dumps({n: r.spec(n) for n in r.graph if r.applies(n)})


def paper(root: Path) -> list[str]:
    return ["model=small", f"data.root={root}", "target=mmlu", "pool=less_mix", "eval=paper"]


def jsonl(d: Path) -> list[str]:
    return ["pool=jsonl", f"pool.files=[{d / 'pool.jsonl'}]", "target=jsonl", f"target.file={d / 'target.jsonl'}"]


def write_jsonl_data(d: Path) -> Path:
    from less.data import synthetic

    d.mkdir(parents=True, exist_ok=True)
    (d / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in synthetic.make_pool(10, 0)))
    (d / "target.jsonl").write_text("".join(json.dumps(r) + "\n" for r in synthetic.make_target(2, 0)))
    return d


def test_the_same_data_at_another_path_has_the_same_keys_and_no_path_enters_a_key(tmp_path):
    a, b = make_root(tmp_path / "a" / "data"), tmp_path / "b" / "elsewhere"
    shutil.copytree(a, b)
    write_jsonl_data(tmp_path / "a" / "files")
    shutil.copytree(tmp_path / "a" / "files", tmp_path / "b" / "files2")
    for over_a, over_b in [(paper(a), paper(b)), (jsonl(tmp_path / "a" / "files"), jsonl(tmp_path / "b" / "files2")),
                           ([*paper(a), *jsonl(tmp_path / "a" / "files")], [*paper(b), *jsonl(tmp_path / "b" / "files2")])]:
        ka, kb = keys(over_a, tmp_path / "c1"), keys(over_b, tmp_path / "c2")
        assert ka == kb and len(ka) >= 12
        text = specs_text(over_a, tmp_path / "c1")
        assert str(tmp_path) not in text and "mtime" not in text


CHANGED = {  # file under data.root -> stages whose key changes with it (model=small, target=mmlu, pool=less_mix)
    "mmlu/dev/anatomy_dev.csv": {"target", "target_features", "datastore", "select", "correlates", "train", "eval",
                                 "validation_subsets", "lds"},  # the subsets are evaluated as eval is (demos from dev)
    "mmlu/test/anatomy_test.csv": {"eval", "validation_subsets", "lds"},  # their target loss, hence each LDS
    "README.md": set(),
}


@pytest.mark.parametrize("rel", sorted(CHANGED))
def test_one_changed_byte_changes_exactly_the_readers_and_their_dependants(tmp_path, rel):
    root = make_root(tmp_path / "data")
    before = keys(paper(root), tmp_path / "cache")
    f = root / rel
    f.write_bytes(f.read_bytes()[:-1] + b"!")  # same size, one byte different
    after = keys(paper(root), tmp_path / "cache")
    assert {n for n in before if before[n] != after[n]} == CHANGED[rel]


def test_a_pool_source_changes_the_small_model_and_everything_after_it(tmp_path):
    root = make_root(tmp_path / "data")
    before = keys(paper(root), tmp_path / "cache")
    with open(root / "dolly" / "dolly.jsonl", "a") as fh:
        fh.write(json.dumps({"instruction": "One more.", "response": "ok"}) + "\n")
    after = keys(paper(root), tmp_path / "cache")
    # the small model reads dolly: everything but D_val (which no model enters) changes
    assert {n for n in before if before[n] == after[n]} == {"target"}
    tiny = [f"data.root={root}", "pool=less_mix", "target=mmlu", "eval=paper"]
    t0 = keys(tiny, tmp_path / "cache")
    (root / "dolly" / "dolly.jsonl").write_text("")
    t1 = keys(tiny, tmp_path / "cache")
    assert {n for n in t0 if t0[n] == t1[n]} == {"model", "selector", "target"}


def test_touch_changes_no_key_and_the_digest_memo_skips_unchanged_files(tmp_path):
    d = write_jsonl_data(tmp_path / "files")
    before = keys(jsonl(d), tmp_path / "cache")
    assert list((tmp_path / "cache" / identity.INDEX_DIR).iterdir())  # digests memoised beside the cache
    os.utime(d / "pool.jsonl", ns=(1, 1))  # a touch: new mtime, same bytes
    assert keys(jsonl(d), tmp_path / "cache") == before
    # same size, mtime and inode but other bytes: the memo answers without reading the file
    st = (d / "pool.jsonl").stat()
    with open(d / "pool.jsonl", "r+b") as fh:
        fh.write(b"[")
    os.utime(d / "pool.jsonl", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert keys(jsonl(d), tmp_path / "cache")["pool"] == before["pool"]
    shutil.rmtree(tmp_path / "cache" / identity.INDEX_DIR)  # without the memo the change is seen
    assert keys(jsonl(d), tmp_path / "cache")["pool"] != before["pool"]


def test_editing_a_pool_file_rebuilds_exactly_the_stages_that_read_it(shared_cache, tmp_path):
    root = make_root(tmp_path / "data")
    d = write_jsonl_data(tmp_path / "files")
    run = ["pool=less_mix", "pool.sources=[dolly]", f"data.root={root}", "target=jsonl",
           f"target.file={d / 'target.jsonl'}", "selection=random", "stages=[prepare,select]"]
    first = run_pipeline(run, shared_cache, tmp_path / "o1")
    again = run_pipeline(run, shared_cache, tmp_path / "o2")
    assert all(a["cached"] for a in again["artifacts"].values())
    shutil.copytree(root, tmp_path / "moved")  # the same data elsewhere: nothing to build
    moved = run_pipeline([*run[:2], f"data.root={tmp_path / 'moved'}", *run[3:]], shared_cache, tmp_path / "o3")
    assert all(a["cached"] for a in moved["artifacts"].values()) and moved["artifacts"]["pool"]["key"] == first["artifacts"]["pool"]["key"]
    with open(root / "dolly" / "dolly.jsonl", "a") as fh:
        fh.write(json.dumps({"instruction": "Say more.", "context": "", "response": "more"}) + "\n")
    edited = run_pipeline(run, shared_cache, tmp_path / "o4")
    built = {n for n, a in edited["artifacts"].items() if not a["cached"]}
    assert built == {"pool", "select", "correlates", "token_counts"} and edited["selection"]["n_ranked"] == 41


def _age(cache: Path, real_paths: dict[str, Path]) -> dict[str, str]:
    """Rewrite every artifact of ``cache`` as the old key scheme had it (files by absolute path,
    size and mtime; ``data.root`` by its absolute path), re-keyed and renamed: {new key: old key}."""
    def old(x):
        if isinstance(x, dict):
            if "blake2b" in x and x["name"] in real_paths:
                p = real_paths[x["name"]].resolve()
                return {"path": str(p), "size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns}
            if "files" in x and set(x) == {"files"} and "data_root" in real_paths:
                return {"root": str(real_paths["data_root"].resolve()), "hub_repo": "princeton-nlp/less_data"}
            return {k: old(v) for k, v in x.items()}
        return [old(v) for v in x] if isinstance(x, list) else x

    renamed: dict[str, str] = {}
    pending = [(k.parent.name, k.name) for k in sorted(cache.glob("*/*")) if (k / KEY_FILE).is_file()]
    while pending:  # inputs first
        for kind, key in list(pending):
            spec = json.loads((cache / kind / key / KEY_FILE).read_text())["spec"]
            if set(spec["inputs"].values()) & {k for _, k in pending}:
                continue
            spec = {"config": old(spec["config"]), "inputs": {r: renamed.get(v, v) for r, v in spec["inputs"].items()}}
            new = cache_key(kind, spec)
            (cache / kind / key / KEY_FILE).write_text(json.dumps({"kind": kind, "key": new, "spec": spec}))
            for f in (cache / kind / key).glob("manifest.json"):
                text = f.read_text()
                for a, b in renamed.items():
                    text = text.replace(f"/{a}", f"/{b}")
                f.write_text(text)
            (cache / kind / key).rename(cache / kind / new)
            renamed[key] = new
            pending.remove((kind, key))
    return {v: k for k, v in renamed.items()}


def test_rekey_moves_a_cache_keyed_by_paths_into_place_and_a_run_uses_it(shared_cache, tmp_path, capsys):
    root = make_root(tmp_path / "data")
    d = write_jsonl_data(tmp_path / "files")
    cache = with_session_models(shared_cache, tmp_path / "cache")
    run = ["pool=jsonl", f"pool.files=[{d / 'pool.jsonl'}]", "target=mmlu", f"data.root={root}",
           "stages=[prepare,warmup,datastore,select]"]
    fresh = run_pipeline(run, cache, tmp_path / "o1")
    aged = {new: old for new, old in _age(cache, {"pool.jsonl": d / "pool.jsonl", "data_root": root}).items() if new != old}
    assert set(aged.values()) >= {fresh["artifacts"][n]["key"] for n in ("pool", "target", "select", "datastore")}
    capsys.readouterr()
    assert cache_main(["rekey", "--cache-dir", str(cache)]) == 0
    dry = capsys.readouterr().out.splitlines()
    assert dry[-1].startswith("dry run: nothing moved; add --yes to move") and all(
        line.endswith("would move") for line in dry[:-1]) and len(dry) - 1 == len(aged), dry
    shutil.copytree(root, tmp_path / "moved")
    shutil.rmtree(root)  # the data moved since: say where it is now
    assert cache_main(["rekey", "--cache-dir", str(cache), "--yes", "--path", f"{root}={tmp_path / 'moved'}"]) == 0
    moved = capsys.readouterr().out.splitlines()
    assert len(moved) == len(aged) and all(line.endswith(": moved") for line in moved), moved
    again = run_pipeline([*run[:3], f"data.root={tmp_path / 'moved'}", *run[4:]], cache, tmp_path / "o2")
    assert all(a["cached"] for a in again["artifacts"].values())
    k0, k1 = ({n: a["key"] for n, a in r["artifacts"].items()} for r in (fresh, again))
    assert {n: k0[n] for n in k1} == k1 and "datastore" in k1  # the moved keys are today's keys
    assert again["selection"]["n_selected"] == fresh["selection"]["n_selected"]

"""Per-token explanations of a LESS score (less.selection.explain, ``python -m analysis explain``):
the contributions sum to the score, each equals its token's gradient taken alone (brute force), and
the command renders for a default run; bad input gets one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from less.data.formats import IGNORE_INDEX, Encoded
from less.gradients.adam import adam_direction
from less.gradients.features import FeatureExtractor, pad_batch
from less.gradients.per_example import PerExampleGradients
from less.explain import token_terms
from tests.conftest import ok, run_cli, run_pipeline, with_session_models
from tests.test_gradients import tiny_lora_model


def one_example(seed=3, n=14, prompt=5):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 50, (n,), generator=g).tolist()
    labels = [IGNORE_INDEX] * prompt + ids[prompt:]
    return Encoded(["z"], [ids], [labels])


@pytest.mark.parametrize("mapping", ["adam", "sgd", "precond"])
def test_token_contributions_sum_to_the_score_and_each_is_its_tokens_gradient_alone(mapping):
    model = tiny_lora_model()
    model.eval()
    g = torch.Generator().manual_seed(7)
    moments = None if mapping == "sgd" else {
        n: (torch.randn(p.shape, generator=g) * 1e-2, torch.rand(p.shape, generator=g) * 1e-3)
        for n, p in model.named_parameters() if p.requires_grad}
    ex = FeatureExtractor(model, pad_id=0, dims=[64, 128], seed=0, device=torch.device("cpu"), moments=moments,
                          mapping=mapping if mapping != "sgd" else "adam", cache_bytes=0)
    enc = one_example()
    target = np.random.default_rng(0).standard_normal(64)
    per, mom, total = token_terms(ex, enc, 0, target, 64)
    # the production path: the stored feature at dim 64 (unit row) against the target
    feat = ex.features(enc, [0])[64][0]
    assert total == pytest.approx(float(feat @ target), rel=1e-4, abs=1e-6)
    assert per.sum() + mom == pytest.approx(total, rel=1e-9, abs=1e-12)
    assert (mom == 0.0) == (mapping != "adam")
    labelled = [p for p, x in enumerate(enc.labels[0]) if x != IGNORE_INDEX and p > 0]
    assert set(np.nonzero(per)[0]) <= set(labelled) and np.count_nonzero(per) >= len(labelled) - 1

    # brute force: each token's loss alone through its own forward and backward, mapped with the
    # denominator at the example's whole gradient, projected, against the target
    params = [m.weight for m in ex.grads.modules]
    whole = PerExampleGradients(model)(*pad_batch(enc, [0], 0, torch.device("cpu")))
    gfull = torch.cat([whole[i][0].flatten() for i in sorted(whole)])
    ids = torch.tensor([enc.input_ids[0]])
    gold = torch.tensor(enc.labels[0])[1:]
    where = (gold != IGNORE_INDEX).nonzero().flatten().tolist()
    cols = []
    for j in where:
        logits = model(input_ids=ids).logits[0, :-1]
        loss = F.cross_entropy(logits[j: j + 1], gold[j: j + 1]) / len(where)
        cols.append(torch.cat([x.flatten() for x in torch.autograd.grad(loss, params)]))
    G = torch.stack(cols)
    torch.testing.assert_close(G.sum(0), gfull, rtol=1e-4, atol=1e-7)  # the tokens' gradients sum to the example's
    if mapping == "adam":
        m = torch.cat([x[0] for x in ex.mv])
        v = torch.cat([x[1] for x in ex.mv])
        # the Adam direction is the momentum term plus the tokens' terms, exactly
        D = torch.sqrt(0.999 * v + 0.001 * gfull * gfull + 1e-8)
        torch.testing.assert_close(0.9 * m / D + (0.1 * G / D).sum(0), adam_direction(gfull, m, v), rtol=1e-5, atol=1e-7)
        G = 0.1 * G / D
    elif mapping == "precond":
        G = G / torch.sqrt(torch.cat([x[1] for x in ex.mv]) + 1e-8)
    f = ex.project(torch.cat([G, (0.9 * m / D)[None]]) if mapping == "adam" else G)[:, :64].double()
    norm = f.sum(0).norm()
    brute = (f[: len(where)] @ torch.tensor(target)) / norm
    np.testing.assert_allclose(per[[p + 1 for p in where]], brute.numpy(), rtol=1e-3, atol=1e-6)
    ex.close()


@pytest.fixture(scope="module")
def cli_run(shared_cache, tmp_path_factory):
    """A default run up to the selection, made by ``python run.py`` (which saves .hydra/config.yaml)."""
    tmp = tmp_path_factory.mktemp("explain")
    cache = with_session_models(shared_cache, tmp / "cache")
    out = tmp / "run"
    ok(run_cli(["stages=[prepare,warmup,datastore,select]", "logger=none"], cache, out))
    return out


def test_explain_renders_for_a_default_run_and_recomputes_the_stored_scores(cli_run, tmp_path):
    from analysis.__main__ import main

    out = cli_run
    where = main(["explain", str(out), "--top", "2", "--out", str(tmp_path / "ex")])
    html = (where / "explain.html").read_text()
    assert html.count("<h2>") == 2 and "title='" in html
    rows = (where / "tokens.csv").read_text().splitlines()
    assert rows[0] == "id,rank,position,token,labelled,contribution" and len(rows) > 10
    from less.explain import explain

    exps = explain(out, top=2)
    assert [e.rank for e in exps] == [1, 2]
    for e in exps:
        # float32 recomputation vs the selection's float16 stores: within 1% of the score
        assert e.recomputed == pytest.approx(e.score, rel=1e-2, abs=2e-3)
        assert e.subtask == max(e.by_subtask, key=e.by_subtask.get)
        assert sum(e.by_checkpoint.values()) == pytest.approx(e.by_subtask[e.subtask], rel=1e-5)
        assert any(e.labelled) and not any(c for c, lab in zip(e.contribution, e.labelled) if not lab)


@pytest.mark.parametrize("args,msg", [
    (["--ids", "no_such_id"], "not in the ranking"),
    (["--top", "0"], "--top must be >= 1"),
    (["--top", "-1"], "--top must be >= 1"),
])
def test_explain_bad_input_is_one_line(cli_run, capsys, args, msg):
    from analysis.__main__ import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["explain", str(cli_run), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and msg in err[0], err


def errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


def test_explain_needs_a_less_ranking_and_the_runs_config(shared_cache, cli_run, tmp_path, capsys):
    import shutil

    from analysis.__main__ import main

    cache = with_session_models(shared_cache, tmp_path / "c")
    for stages, extra, msg in ((["prepare"], [], "no select artifact"),
                               (["prepare", "select"], ["selection=random"], "need a LESS selection")):
        out = tmp_path / "_".join(stages + extra).replace("=", "")
        run_pipeline([f"stages=[{','.join(stages)}]", *extra], cache, out)
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main(["explain", str(out)])
        err = errors(capsys)
        assert e.value.code == 2 and len(err) == 1 and msg in err[0], err
    bare = tmp_path / "bare"  # a LESS run without the composed config run.py saves
    shutil.copytree(cli_run, bare, ignore=shutil.ignore_patterns(".hydra", "explain"))
    with pytest.raises(SystemExit) as e:
        main(["explain", str(bare)])
    err = errors(capsys)
    assert e.value.code == 2 and len(err) == 1 and "no .hydra/config.yaml" in err[0], err

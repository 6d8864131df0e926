"""``model=small`` (less.small_model): a small Llama with a SentencePiece tokenizer pretrained here on
the instruction pools under data.root. The tests build a miniature of it (a few steps, a few
hundred texts); the real one takes minutes (docs/small-model.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import DATA, compose, needs_data

MINI = ["model=small", f"data.root={DATA}", "model.small.per_source=60", "model.small.vocab_size=600",
        "model.small.hidden_size=32", "model.small.intermediate_size=64", "model.small.num_layers=1",
        "model.small.seq_len=64", "model.small.batch_size=4", "model.small.steps=4", "model.small.checkpoint_every=2",
        "model.small.held_out=0.2"]


def test_without_data_root_it_stops_in_one_line(tmp_path):
    from less.errors import ConfigError
    from less.validate import validate

    with pytest.raises(ConfigError, match=r"model=small is pretrained on the instruction pools under data\.root, which is unset"):
        validate(compose(["model=small", "data.root=null"], hydra=False))
    with pytest.raises(ConfigError, match=r"data\.root, which is not a directory \(/nonexistent\)"):
        validate(compose(["selector=small", "data.root=/nonexistent"], hydra=False))


def _build(cfg, out: Path) -> None:
    from less.small_model import build_small

    out.mkdir(parents=True)
    build_small(cfg.model, cfg.data, out, out.with_name(".work-" + out.name))


@needs_data
def test_a_killed_build_resumes_to_the_same_model(tmp_path, monkeypatch):
    """Killed after its step-2 state was saved, the build resumes there and ends with the same weights
    as an uninterrupted one; held-out texts are never trained on; pretrain.json reports the figures."""
    from less.small_model import corpus

    cfg = compose(MINI, hydra=False)
    _build(cfg, tmp_path / "whole")
    calls = {"n": 0}
    real = torch.nn.utils.clip_grad_norm_

    def dies_at_step_3(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real(*a, **kw)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", dies_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        _build(cfg, tmp_path / "resumed")
    assert torch.load(tmp_path / ".work-resumed" / "state.pt", weights_only=True)["step"] == 2
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", real)
    import shutil

    shutil.rmtree(tmp_path / "resumed")
    _build(cfg, tmp_path / "resumed")
    assert not (tmp_path / ".work-resumed").exists()  # removed once built
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rep = json.loads((tmp_path / "whole" / "pretrain.json").read_text())
    assert rep["steps"] == 4 and rep["tokens_seen"] == 4 * 4 * 64 and rep["held_out_tokens"] > 0
    assert rep["held_out_perplexity"] == pytest.approx(torch.tensor(rep["held_out_loss"]).exp().item(), rel=1e-6)
    train, held = corpus(DATA, 60, 0, 0.2)
    assert held and not set(train) & set(held)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / "whole")
    assert tok.convert_ids_to_tokens(tok("héllo\n")["input_ids"])[0] == "<s>"  # Llama-style, byte fallback


def test_build_command_help_and_bad_overrides(capsys):
    """``python -m less.small_model``: usage on --help; a bad override or no data.root is one
    ``error:`` line and exit code 2, before anything is built."""
    from less.small_model.__main__ import main

    assert main(["--help"]) == 0 and "data.root=<dir>" in capsys.readouterr().out
    for args, why in ([f"data.root={DATA}", "model.small.nope=1"], "Could not override 'model.small.nope'"), \
                     (["data.root=["], "no viable alternative"), (["data.root=null"], "data.root, which is unset"):
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and why in err[0], err

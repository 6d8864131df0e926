"""Selection methods are a registry: a new method is one function plus one YAML file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from less.errors import ConfigError
from less.selection.registry import Request, get, method, names
from tests.conftest import compose, run_pipeline


@method("toy_turns", target_free=True)
def toy_turns(req: Request) -> np.ndarray:
    """Most user characters first (a toy: no gradients, no target)."""
    return np.array([sum(len(m["content"]) for m in ex["messages"] if m["role"] == "user") for ex in req.pool],
                    dtype=float)


def toy_config(tmp_path: Path) -> str:
    """The method's one config file, in a folder of its own on Hydra's search path."""
    (tmp_path / "conf" / "selection").mkdir(parents=True)
    (tmp_path / "conf" / "selection" / "toy_turns.yaml").write_text("method: toy_turns\nfraction: 0.1\nk: null\n")
    return f"hydra.searchpath=[file://{tmp_path / 'conf'}]"


def test_a_toy_method_runs_through_the_pipeline(default_run, shared_cache, tmp_path):
    assert "toy_turns" in names() and get("toy_turns").needs == "nothing"
    res = run_pipeline([toy_config(tmp_path), "selection=toy_turns", "stages=[prepare,warmup,datastore,select,train]"],
                       shared_cache, tmp_path / "out")
    assert set(res["stages"]) == {"prepare", "select", "train"}  # no gradients needed: no warmup, no datastore
    assert res["selection"]["method"] == "toy_turns" and res["selection"]["n_selected"] == 60
    selected = [__import__("json").loads(x) for x in open(res["selection"]["selected"])]
    lengths = [sum(len(m["content"]) for m in ex["messages"] if m["role"] == "user") for ex in selected]
    assert lengths == sorted(lengths, reverse=True)
    assert res["selection"]["target_share"] is not None  # shares reported for this run's target


def test_unknown_methods_and_clashing_names_are_refused(tmp_path):
    from less.validate import validate

    with pytest.raises(ConfigError, match=r"selection.method must be one of \[.*'less'.*\], got 'nope'"):
        validate(compose(["selection.method=nope"]))
    with pytest.raises(ValueError, match="registered twice"):
        method("less")(lambda req: np.zeros(len(req.pool)))
    with pytest.raises(ValueError, match="needs must be one of"):
        method("toy_bad", needs="gpus")(lambda req: None)

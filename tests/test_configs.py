"""Every config option composes; selector follows model unless set."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from tests.conftest import CONF, compose

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("hydra", "experiment"))


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes(group, option, tmp_path):
    cfg = compose([f"{group}={option}", f"cache_dir={tmp_path}"])
    node = cfg[group]
    # resolve everything except Hydra's runtime interpolations
    OmegaConf.to_container(node, resolve=True)
    assert node is not None


def test_default_has_every_axis():
    cfg = compose()
    for key in ("model", "pool", "target", "warmup", "datastore", "selection", "train", "eval", "logger"):
        assert key in cfg, key
    assert cfg.get("selector") is None and cfg.model.kind == "tiny"  # selector follows model
    assert list(cfg.stages) == ["prepare", "warmup", "datastore", "select", "train", "eval"]


def test_selector_sets_lesst():
    cfg = compose(["selector=llama2_7b", "model=llama2_13b"])
    assert cfg.selector.path == "meta-llama/Llama-2-7b-hf"
    assert cfg.model.path == "meta-llama/Llama-2-13b-hf"


def test_paper_settings():
    cfg = compose(["warmup=paper", "datastore=paper", "train=paper_full"])
    assert (cfg.warmup.lora.r, cfg.warmup.lora.alpha, cfg.warmup.lr, cfg.warmup.batch_size) == (128, 512, 2e-5, 128)
    assert list(cfg.datastore.projection.dims) == [8192] and cfg.train.mode == "full"


@pytest.mark.parametrize("override,key", [
    ("selection.k=0", "selection.k"),
    ("selection.proj_dim=77", "selection.proj_dim"),
    ("selection.checkpoints=[9]", "selection.checkpoints"),
    ("datastore.gradient_type=rms", "datastore.gradient_type"),
    ("datastore.projection.dims=[]", "datastore.projection.dims"),
    ("warmup.fraction=0", "warmup.fraction"),
    ("train.batch_size=7", "train.batch_size"),
    ("train.mode=qlora", "train.mode"),
    ("logger.mode=sometimes", "logger.mode"),
    ("chat_format=chatml", "chat_format"),
    ("datastore.target_truncation=middle", "datastore.target_truncation"),
    ("datastore.encoding.turns=first", "datastore.encoding.turns"),
    ("datastore.encoding.eos_label=maybe", "datastore.encoding.eos_label"),
    ("+datastore.encoding.bos_label=true", "datastore.encoding"),
    ("target=mmlu", "eval.tasks"),  # the synthetic eval task needs the synthetic target
])
def test_bad_values_name_their_key(override, key):
    from less.errors import ConfigError
    from less.validate import validate

    validate(compose())  # the default is valid
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(compose([override]))


@pytest.mark.parametrize("launcher", ["joblib", "slurm"])
def test_launcher_configs_compose(launcher):
    cfg = compose([f"hydra/launcher={launcher}", "datastore.num_shards=4", "datastore.shard=3"])
    target = cfg.hydra.launcher._target_
    assert ("Joblib" in target) if launcher == "joblib" else ("Slurm" in target and cfg.hydra.launcher.gpus_per_node == 1)

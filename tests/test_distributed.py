"""Several processes of one job (less.distributed): torchrun on CPU with gloo against one process,
how ranks split the datastore, which device each rank takes, FSDP checkpoints read back, the
multi-GPU presets and the per-GPU joblib override."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, compose, linked_cache, run_pipeline

STAGES = "stages=[prepare,warmup,datastore,select]"
SCORE_TOL = 1e-4  # docs/multi-gpu.md: what a torchrun run reproduces


def torchrun(args: list[str], cwd: Path, env: dict[str, str], n: int = 2, timeout: int = 600):
    """``torchrun --standalone --nproc_per_node=n <args>`` (a free port: runs never collide)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", *args]
    return subprocess.run(cmd, cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout)


def scores(run_dir: Path) -> dict[str, float]:
    return {r["id"]: float(r["score"]) for r in csv.DictReader(open(run_dir / "ranking.csv"))}


@pytest.mark.slow
def test_torchrun_on_two_processes_selects_as_one_process(shared_cache, tiny_model_dir, tmp_path):
    """The issue's command, as a user types it (no output dir given): one output directory and one
    results.json (rank 0's), the pool's features split between the ranks, and the same top-5% with
    the same scores (within SCORE_TOL) as one process; the artifacts have the same keys (the number
    of processes is not part of what they are)."""
    one = run_pipeline([STAGES], linked_cache(shared_cache, tmp_path / "c1", kinds=("model",)), tmp_path / "one")
    cache = linked_cache(shared_cache, tmp_path / "c2", kinds=("model",))
    work = tmp_path / "cwd"
    work.mkdir()
    proc = torchrun([str(ROOT / "run.py"), STAGES, "logger=none"], work, {"LESS_CACHE_DIR": str(cache)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    found = sorted(work.rglob("results.json"))
    assert len(found) == 1, found
    run_dir = found[0].parent
    assert run_dir.parent == work / "outputs" / "default"  # the other rank made no directory of its own
    assert sorted(p.name for p in work.iterdir()) == ["outputs"]  # nor a run.log or .hydra here
    assert len(list((work / "outputs" / "default").iterdir())) == 1
    two = json.loads(found[0].read_text())
    assert list(two["stages"]) == ["prepare", "warmup", "datastore", "select"]
    rows = two["artifacts"]["pool_features"]["rows_by_rank"]
    n_ckpt = len(two["warmup"]["checkpoints"])
    assert len(rows) == 2 and all(r > 0 for r in rows) and sum(rows) == 600 * n_ckpt
    for name in ("warmup", "pool_features", "target_features", "datastore", "select"):
        assert two["artifacts"][name]["key"] == one["artifacts"][name]["key"], name
    ids = lambda d: [json.loads(x)["id"] for x in open(d / "selected.jsonl")]  # noqa: E731
    a, b = scores(tmp_path / "one"), scores(run_dir)
    assert a.keys() == b.keys() and max(abs(a[i] - b[i]) for i in a) <= SCORE_TOL
    # the same top 5%, but for near ties at its boundary (scores within 2 x SCORE_TOL of the cut):
    # the two runs differ by float rounding, which the thread count of each also changes
    top = ids(tmp_path / "one")
    cut = a[top[-1]]
    assert all(abs(a[i] - cut) <= 2 * SCORE_TOL for i in set(top) ^ set(ids(run_dir)))
    assert two["warmup"]["steps"] == one["warmup"]["steps"]
    assert "rank 1" not in proc.stdout  # rank 0 tells the story

    # the rest of the pipeline on the same cache: DDP target training, rank 0's eval, one W&B run
    proc = torchrun([str(ROOT / "run.py"), f"hydra.run.dir={tmp_path / 'all'}"], work, {"LESS_CACHE_DIR": str(cache)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "all" / "results.json").read_text())
    assert [s for s, r in res["stages"].items() if not r["cached"]] == ["train", "eval"]
    assert res["artifacts"]["select"]["key"] == two["artifacts"]["select"]["key"]
    assert (Path(res["stages"]["train"]["dir"]) / "adapter" / "adapter_model.safetensors").is_file()
    assert res["train"]["steps"] == 32 and 0 <= res["eval"]["less_synthetic_color"]["acc"] <= 1
    assert res["wandb"]["mode"] == "offline"
    assert len(list((tmp_path / "all").rglob("run-*.wandb"))) == 1  # one W&B run, rank 0's


@pytest.mark.parametrize("n_rows,chunk,num_shards,world", [(600, 64, 1, 2), (601, 7, 3, 4), (10, 4, 2, 3)])
def test_the_ranks_of_a_shard_job_cover_exactly_its_chunks(monkeypatch, n_rows, chunk, num_shards, world):
    from less import distributed
    from less.stages.features import chunks_of

    for shard in range(num_shards):
        mine = []
        for rank in range(world):
            monkeypatch.setenv("WORLD_SIZE", str(world))
            monkeypatch.setenv("RANK", str(rank))
            mine += chunks_of(n_rows, chunk, *distributed.subshard(shard, num_shards))
        assert mine == chunks_of(n_rows, chunk, shard, num_shards)


def test_each_rank_takes_its_own_gpu(monkeypatch):
    from less.errors import ConfigError
    from less.models import resolve_device

    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert resolve_device("auto") == torch.device("cuda", 3) == resolve_device("cuda")
    with pytest.raises(ConfigError, match=r"device=cuda:1 with 4 processes"):
        resolve_device("cuda:1")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match=r"device=cuda:4: this machine has 4 CUDA devices"):
        resolve_device("cuda:4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"device=cuda: no CUDA device"):
        resolve_device("cuda")


def test_slurm_tasks_learn_their_rank_from_slurm(monkeypatch):
    """``hydra/launcher=slurm hydra.launcher.tasks_per_node=N``: submitit's tasks export torchrun's variables."""
    from less import distributed

    # submitit writes os.environ itself: give it a copy that the test's end throws away
    keep = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "SUBMITIT_EXECUTOR")
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if k not in keep})
    slurm = {"SLURM_JOB_ID": "123", "SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
             "SLURM_JOB_NODELIST": "gpu[3-4]", "SLURM_JOB_NUM_NODES": "2", "SLURM_NODEID": "1"}
    os.environ.update(slurm)
    assert not distributed.from_slurm()  # not a submitit job: nothing exported
    os.environ["SUBMITIT_EXECUTOR"] = "slurm"
    assert distributed.from_slurm()
    assert (distributed.rank(), distributed.world(), distributed.local_rank()) == (5, 8, 1)
    assert os.environ["MASTER_ADDR"] == "gpu3" and int(os.environ["MASTER_PORT"]) > 0
    assert not distributed.from_slurm()  # exported once


def test_only_rank_0_keeps_an_output_directory(monkeypatch, capsys):
    from less.cli import rank_overrides

    argv = ["run.py", "stages=[prepare]"]
    assert rank_overrides(argv) == argv  # one process
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert rank_overrides(argv) == argv
    monkeypatch.setenv("RANK", "1")
    assert rank_overrides(argv) == argv + ["hydra.output_subdir=null", "hydra/job_logging=stdout", "hydra.run.dir=."]
    given = argv + ["hydra.run.dir=/x/${now:%H-%M-%S}"]  # the last value wins: ".", whatever the clock says
    assert rank_overrides(given)[-1] == "hydra.run.dir=."
    with pytest.raises(SystemExit) as e:
        rank_overrides(["run.py", "-m", "seed=0,1"])
    assert e.value.code == 2 and "error: -m (a sweep) under a launcher of 2 processes" in capsys.readouterr().err


def test_joblib_jobs_take_the_gpus_in_turn(monkeypatch):
    """README: ``'device=${gpu:}'`` with the joblib launcher: job N on GPU N mod 4."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import read_write
    from omegaconf.errors import InterpolationResolutionError

    cfg = compose(["hydra/launcher=joblib", "hydra.launcher.n_jobs=4", "device=${gpu:}"])
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    devices = []
    before = HydraConfig.instance().cfg
    try:
        for num in range(6):  # what each joblib worker sets before running its job
            with read_write(cfg.hydra.job):
                cfg.hydra.job.num = num
            HydraConfig.instance().set_config(cfg)
            devices.append(cfg.device)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
        with pytest.raises(InterpolationResolutionError, match="no CUDA device is visible here"):
            cfg.device
    finally:
        HydraConfig.instance().cfg = before  # later tests see no Hydra job
    assert devices == ["cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0", "cuda:1"]
    assert "Joblib" in cfg.hydra.launcher._target_ and cfg.hydra.launcher.n_jobs == 4


def test_the_fsdp_preset_shards_llama2_7b_full_fine_tuning(monkeypatch):
    """``train=paper_full_fsdp``: FSDP2 passed to the Trainer, batch 128 kept on 8 ranks, the same
    artifact key as unsharded full fine-tuning (how training is spread is not what it is), and a
    one-line error instead of accelerate's silent DDP on a machine without GPUs."""
    from less.errors import ConfigError
    from less.stages.warmup import training_spec
    from less.training import accumulation_steps, sharding
    from less.validate import validate

    cfg = compose(["model=llama2_7b", "warmup=paper", "train=paper_full_fsdp"], hydra=False)
    args = sharding(cfg.train)
    assert args["fsdp"] is True and args["fsdp_config"]["version"] == 2
    assert args["fsdp_config"]["transformer_layer_cls_to_wrap"] == ["LlamaDecoderLayer"]
    assert sharding(compose(["train=paper_full"], hydra=False).train) == {}
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert cfg.train.batch_size == 128 and accumulation_steps(cfg.train) == 16
    plain = training_spec(compose(["train=paper_full", "train.per_device_batch_size=1",
                                   "train.gradient_checkpointing=false"], hydra=False).train)
    assert training_spec(cfg.train) == plain
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"train\.fsdp needs GPUs"):
        validate(cfg)
    validate(compose(["model=llama2_7b", "warmup=paper", "train=paper_full_fsdp", "plan=true"], hydra=False))  # a plan is fine


@pytest.mark.slow
def test_fsdp_checkpoints_are_read_as_one_process_would(tiny_model_dir, tmp_path):
    """A real FSDP2 save on CPU (2 ranks, gloo) of a LoRA warmup step, in both layouts accelerate
    writes (FULL_STATE_DICT ``optimizer.bin``, SHARDED_STATE_DICT ``optimizer_0/``): the datastore
    reads the same Adam moments as one process computes on the ranks' batches together."""
    from less.gradients.adam import load_moments

    proc = torchrun(["-m", "tests.fsdp_save", str(tiny_model_dir), str(tmp_path)], ROOT, {})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    names = json.loads((tmp_path / "single" / "names.json").read_text())
    state = torch.load(tmp_path / "single" / "optimizer.pt", weights_only=True)["state"]
    shapes = {n: tuple(state[i]["exp_avg"].shape) for i, n in enumerate(names)}
    ref = load_moments(tmp_path / "single", names, shapes)
    assert any(m.abs().max() > 0 for m, _ in ref.by_name.values())
    for layout, path in (("full", "optimizer.bin"), ("sharded", "optimizer_0")):
        got = load_moments(tmp_path / layout, None, shapes)
        assert got.path == tmp_path / layout / path and got.betas == (0.9, 0.999) and got.eps == 1e-8
        for n in names:
            for i in (0, 1):
                torch.testing.assert_close(got.by_name[n][i], ref.by_name[n][i], rtol=0, atol=1e-6)


def test_per_rank_optimizer_files_are_refused_in_one_line(tmp_path):
    from less.errors import DataError
    from less.gradients.adam import load_moments

    torch.save({}, tmp_path / "optimizer_0_rank0.bin")
    with pytest.raises(DataError, match=r"optimizer_0_rank0\.bin: per-rank FSDP optimizer files"):
        load_moments(tmp_path, None, {})


def test_rank_0_evaluates_alone_with_the_same_model(default_run, monkeypatch):
    """Under torchrun (WORLD_SIZE > 1) eval gives lm-eval the loaded model, so lm-eval does not split
    requests over ranks that are not evaluating; the model (base + trained adapter) computes the
    same logits as the one lm-eval loads from the paths in one process."""
    from less.evaluation.run import make_lm
    from less.models import load_tokenizer

    out, res = default_run
    cfg = compose(hydra=False)
    base = res["artifacts"]["model"]["dir"]
    adapter = str(Path(res["artifacts"]["train"]["dir"]) / "adapter")
    tok = load_tokenizer(cfg.model, base)
    one = make_lm(cfg, base, adapter, tok, torch.device("cpu"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    alone = make_lm(cfg, base, adapter, tok, torch.device("cpu"))
    assert alone.world_size == 1 and alone.rank == 0 and getattr(alone, "accelerator", None) is None
    ids = torch.tensor([tok("Question: 2 + 3 =")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(one.model(ids).logits, alone.model(ids).logits)
    assert type(alone.model).__name__ == type(one.model).__name__ == "PeftModelForCausalLM"


@pytest.mark.slow
def test_an_error_on_rank_0_ends_every_rank_with_its_line(tiny_model_dir, shared_cache, tmp_path):
    """Rank 0 fails in a step the others wait for (a malformed pool file at prepare): no rank hangs,
    the job exits non-zero and rank 0 names the file and line; the other rank says it was rank 0."""
    good = json.dumps({"id": "a", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    (tmp_path / "broken.jsonl").write_text(good + "\n{oops\n")
    cache = linked_cache(shared_cache, tmp_path / "c", kinds=("model",))
    proc = torchrun([str(ROOT / "run.py"), "pool=jsonl", f"pool.files=[{tmp_path}/broken.jsonl]", "logger=none",
                     f"hydra.run.dir={tmp_path / 'out'}"], ROOT, {"LESS_CACHE_DIR": str(cache)}, timeout=300)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "error: " in line]
    assert any(f"error: {tmp_path}/broken.jsonl:2: malformed JSON" in e for e in errors), proc.stderr[-3000:]
    assert any("error: rank 0 failed to build the pool artifact" in e for e in errors), proc.stderr[-3000:]
    assert not (tmp_path / "out" / "results.json").exists()


@pytest.mark.parametrize("overrides,needle", [
    (["train=paper_full_fsdp", "train.fsdp_config.state_dict_type=SHARDED_STATE_DICT"],
     r"train\.fsdp_config\.state_dict_type=SHARDED_STATE_DICT: the model \(or adapter\) must be saved whole"),
    (["+train.deepspeed.zero_optimization.stage=3"], r"train\.deepspeed: ZeRO stage 3 needs"),
    (["train.deepspeed=/nonexistent/ds.json"], r"train\.deepspeed=/nonexistent/ds\.json: no such file"),
    (["+warmup.deepspeed.zero_optimization.stage=2"], r"warmup\.deepspeed: not supported"),
    (["warmup.per_device_batch_size=8"], r"warmup\.batch_size \(8\) is not a multiple of warmup\.per_device_batch_size \(8\) x 2 processes"),
])
def test_sharding_settings_the_pipeline_cannot_use_are_refused(monkeypatch, overrides, needle):
    """Before any step (plan=true: no GPU needed to see the mistake)."""
    from less.errors import ConfigError
    from less.validate import validate

    monkeypatch.setenv("WORLD_SIZE", "2")
    validate(compose(["plan=true"], hydra=False))  # the tiny default splits over 2 processes
    with pytest.raises(ConfigError, match=needle):
        validate(compose(["plan=true", *overrides], hydra=False))
    ok = {"zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": True}}
    from less.stages.warmup import _check_deepspeed
    from omegaconf import OmegaConf

    _check_deepspeed("train", OmegaConf.create(ok))


def test_random_1b_is_a_1b_llama_shape():
    """``model=random_1b`` (GPU smoke runs): an untrained Llama of 0.7-1B parameters, counted on the
    meta device (nothing allocated)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    t = compose(["model=random_1b"], hydra=False).model.tiny
    assert t.pretrain_steps == 0
    config = LlamaConfig(vocab_size=t.vocab_size, hidden_size=t.hidden_size, intermediate_size=t.intermediate_size,
                         num_hidden_layers=t.num_layers, num_attention_heads=t.num_heads,
                         num_key_value_heads=t.num_heads, tie_word_embeddings=True)
    with torch.device("meta"):
        n = sum(p.numel() for p in LlamaForCausalLM(config).parameters())
    assert 0.7e9 < n < 1.0e9, n

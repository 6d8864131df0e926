"""The config-group section of ``python run.py --help``, generated: every public preset of each
group in ``conf/`` (files named ``_*.yaml`` are private: only other presets include them), the
default marked ``*`` (from ``config.yaml``'s defaults), and the registered pool and target kinds.
Only the one-line note under each group is written by hand, here. The help template
(``conf/hydra/help/less.yaml``) takes it as ``${less_help:groups}``."""

from __future__ import annotations

import textwrap

import yaml

from less.paths import conf_dir

NOTES = {
    "model": "M_T, the model trained on the selection and evaluated (model.path=<dir>: a local copy)",
    "selector": "M_S, whose gradients select; unset: the same as model (set it apart for LESS-T)",
    "pool": "the instruction pool to select from (jsonl: pool.files=[a.jsonl,...])",
    "target": "the few target examples D_val, with subtasks (jsonl: target.file=t.jsonl)",
    "warmup": "warmup.fraction, warmup.epochs, the LoRA's r/alpha/dropout/modules",
    "datastore": "datastore.projection.dims=[1024,8192], datastore.gradient_type=adam|sgd|precond, shards",
    "selection": "the selection method; selection.fraction=0.05 or selection.k=<n>",
    "train": "training of the target model on the selection (paper_full: full fine-tuning; _fsdp: on 8 GPUs)",
    "eval": "lm-eval tasks (eval.tasks=[mmlu,tydiqa,bbh] or any lm-eval task), eval.limit",
    "logger": "W&B, offline unless logger.mode=online",
    "experiment": "a paper experiment: a sweep preset (run it with -m); main_table_tiny is main_table's CPU twin,\n"
                  "main_table_small its real-data twin (model=small; needs data.root)",
}
ORDER = ("model", "selector", "pool", "target", "warmup", "datastore", "selection", "train", "eval", "logger", "experiment")


def defaults() -> dict[str, str]:
    """{group: default option} from config.yaml's defaults list."""
    out = {}
    for d in yaml.safe_load((conf_dir() / "config.yaml").read_text())["defaults"]:
        if isinstance(d, dict):
            (k, v), = d.items()
            if not k.startswith("override ") and v is not None:
                out[k] = str(v)
    return out


def groups() -> str:
    from less.data.kinds import POOLS, TARGETS

    root, default = conf_dir(), defaults()
    names = [g for g in ORDER if (root / g).is_dir()] + sorted(
        d.name for d in root.iterdir() if d.is_dir() and d.name not in ORDER and d.name != "hydra")
    lines = []
    for g in names:
        presets = sorted(f.stem for f in (root / g).glob("*.yaml") if not f.name.startswith("_"))
        if g in default:  # the default first
            presets = [default[g] + "*"] + [p for p in presets if p != default[g]]
        lines += textwrap.wrap(f"{g}: " + ", ".join(presets), 100, subsequent_indent="    ", break_on_hyphens=False)
        lines += ["    " + x for x in NOTES.get(g, "").splitlines()]
    lines += ["", f"pool kinds (pool.kind): {', '.join(POOLS.names())}; target kinds (target.kind): "
              f"{', '.join(TARGETS.names())}"]
    return "\n".join(lines)


def register() -> None:
    """``${less_help:groups}`` (idempotent)."""
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("less_help", lambda what: {"groups": groups}[what](), replace=True)

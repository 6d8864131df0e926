"""EK-FAC influence functions (Grosse et al., 2023: "Studying Large Language Model Generalization
with Influence Functions"; George et al., 2018 for EK-FAC) through ``kronfluence``:

    score(z) = max over subtasks s of  mean over target z' in s of  grad L(z')^T (G + lambda I)^-1 grad L(z)

grad L: the gradient of an example's loss (mean over its labelled tokens, as every other gradient
of this harness) with respect to the selector's LoRA parameters at the last warmup checkpoint
(the final warmup LoRA, LESS's selection model). G: kronfluence's EK-FAC approximation of the
Gauss-Newton Hessian (the true Fisher: labels sampled from the model's own distribution, seeded),
block-diagonal over the LoRA modules (every ``lora_A`` and ``lora_B`` Linear), fitted on the pool.
lambda: ``selection.ekfac.damping`` (absolute, added to every EK-FAC eigenvalue), or null for
kronfluence's heuristic (0.1 x the mean eigenvalue of each module).

Two artifacts, each cached (``less.stages.influence``): the factors (covariances, their
eigendecomposition and the corrected eigenvalues: fitted once per selector, warmup and pool) and
the pairwise scores of every target example against every pool example; the method itself only
aggregates those, as LESS aggregates its similarities. Scores are positive when training on z
lowers the loss of z' to first order (the sign of LESS's).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import DictConfig

from less.errors import ConfigError, require
from less.selection.gradient import target_subtasks
from less.selection.registry import Request, Scored, method
from less.selection.scoring import aggregate

if TYPE_CHECKING:
    import torch

    from less.data.formats import Encoded

ANALYSIS, FACTORS, SCORES = "ekfac", "factors", "scores"  # kronfluence's names under an output dir
MISSING_DEPENDENCY = ("selection=ekfac needs kronfluence: `pip install --no-deps kronfluence==1.0.1 einconv` "
                      "(scripts/setup.sh does; docs/selection-methods.md says why --no-deps)")


def check(cfg: DictConfig) -> None:
    e = cfg.selection.ekfac
    d = e.damping
    require(d is None or (isinstance(d, (int, float)) and not isinstance(d, bool) and d > 0),
            f"selection.ekfac.damping must be null (kronfluence's heuristic) or a number > 0, got {d!r}")
    for key in ("batch_size", "max_examples"):
        v = e[key]
        require(isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                f"selection.ekfac.{key} must be a positive integer, got {v!r}")
    q = e.query_gb
    require(isinstance(q, (int, float)) and not isinstance(q, bool) and q > 0,
            f"selection.ekfac.query_gb must be a number > 0 (GiB of preconditioned target gradients held at once), got {q!r}")
    require(e.fisher in ("sampled", "empirical"), f"selection.ekfac.fisher must be sampled or empirical, got {e.fisher!r}")


def kronfluence():
    """The kronfluence modules used here, or one line saying how to install it."""
    try:
        import kronfluence.analyzer as analyzer
        import kronfluence.arguments as arguments
        import kronfluence.task as task
        import kronfluence.utils.dataset as dataset
    except ImportError as e:
        raise ConfigError(f"{MISSING_DEPENDENCY} ({e})") from None
    return analyzer, arguments, task, dataset


def lora_modules(model) -> list[str]:
    """Names of the model's LoRA Linear modules (``...lora_A.<adapter>``, ``...lora_B.<adapter>``),
    the only ones EK-FAC tracks; one line if there are none."""
    import torch

    names = [n for n, m in model.named_modules()
             if isinstance(m, torch.nn.Linear) and (".lora_A." in n or ".lora_B." in n)]
    if not names:
        raise ConfigError("selection=ekfac needs a model with LoRA modules (the warmup's adapter): "
                          f"{type(model).__name__} has none (check warmup.lora.target_modules, datastore.warmup_dir)")
    return names


def example_losses(logits: "torch.Tensor", labels: "torch.Tensor") -> "torch.Tensor":
    """(B,) per-example loss: the mean cross-entropy over an example's labelled tokens (labels
    shifted by one, -100 ignored), in float32."""
    import torch.nn.functional as F

    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    tok = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100,
                          reduction="none").view(labels.shape)
    return tok.sum(1) / (labels != -100).sum(1).clamp(min=1)


def make_task(modules: list[str]):
    """A kronfluence ``Task`` for causal LMs: training loss and measurement are the sum over the
    batch of each example's mean token loss (so per-example gradients are this harness's); with
    ``sample=True`` the labels of the labelled positions are drawn from the model (true Fisher)."""
    import torch

    _, _, task, _ = kronfluence()

    class CausalLMTask(task.Task):
        def compute_train_loss(self, batch, model, sample=False):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            labels = batch["labels"]
            if sample:
                with torch.no_grad():
                    probs = torch.softmax(logits.detach().float(), dim=-1)
                    drawn = torch.multinomial(probs.view(-1, probs.shape[-1]), 1).view(labels.shape)
                    # logits at t predict token t+1: the draw at t-1 replaces the label at t
                    drawn = torch.cat([labels[:, :1], drawn[:, :-1]], dim=1)
                    labels = torch.where(labels == -100, labels, drawn)
            return example_losses(logits, labels).sum()

        def compute_measurement(self, batch, model):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            return example_losses(logits, batch["labels"]).sum()

        def get_influence_tracked_modules(self):
            return modules

        def get_attention_mask(self, batch):
            return batch["attention_mask"]

    return CausalLMTask()


class EncodedDataset:
    """A map-style dataset of encoded examples (``less.data.formats.Encoded``; ``rows``: only
    those), shortest first (so that kronfluence's fixed-size batches carry little padding): item i
    is example ``order[i]``'s (input ids, labels); ``in_enc_order`` puts an axis of results over
    every example back in the encoding's order. ``collate`` right-pads a batch of items as the
    datastore does (``pad_batch``). Items carry their data because kronfluence gives one collate
    to every dataset it reads."""

    def __init__(self, enc: "Encoded", pad_id: int, rows: np.ndarray | None = None):
        self.enc, self.pad_id = enc, pad_id
        rows = np.arange(len(enc)) if rows is None else np.sort(np.asarray(rows))
        self.order = rows[np.argsort([len(enc.input_ids[r]) for r in rows], kind="stable")]

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> tuple[list[int], list[int]]:
        j = int(self.order[i])
        return self.enc.input_ids[j], self.enc.labels[j]

    def in_enc_order(self, x: np.ndarray, axis: int) -> np.ndarray:
        if len(self.order) != len(self.enc):
            raise ValueError("in_enc_order: this dataset holds a subset of the examples")
        out = np.empty_like(x)
        index = [slice(None)] * x.ndim
        index[axis] = self.order
        out[tuple(index)] = x
        return out

    def collate(self, items: list[tuple[list[int], list[int]]]) -> dict[str, "torch.Tensor"]:
        import torch

        from less.data.formats import Encoded
        from less.gradients.features import pad_batch

        batch = Encoded([""] * len(items), [ids for ids, _ in items], [labels for _, labels in items])
        ids, mask, labels = pad_batch(batch, list(range(len(items))), self.pad_id, torch.device("cpu"))
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _analyzer(model, task, out: Path, data: EncodedDataset, device: "torch.device"):
    analyzer, _, _, dataset = kronfluence()
    a = analyzer.Analyzer(ANALYSIS, model, task, cpu=device.type == "cpu", output_dir=str(out))
    a.set_dataloader_kwargs(dataset.DataLoaderKwargs(collate_fn=data.collate))
    return a


def prepare(model, modules: list[str] | None = None):
    """(model wrapped for kronfluence, task) tracking the model's LoRA modules (or ``modules``)."""
    analyzer, _, _, _ = kronfluence()
    task = make_task(modules if modules is not None else lora_modules(model))
    return analyzer.prepare_model(model, task), task


def fit_subset(n: int, max_examples: int, seed: int) -> np.ndarray | None:
    """The pool rows the factors are fitted on: all (None), or a seeded sample of ``max_examples``
    (kronfluence itself would take the first ones, which follow the pool's source order)."""
    return None if n <= max_examples else np.random.default_rng(seed).choice(n, max_examples, replace=False)


def fit_factors(model, task, pool, out: Path, device: "torch.device", *, batch_size: int,
                seed: int, max_examples: int, fisher: str = "sampled") -> None:
    """Fit EK-FAC factors on ``pool`` (any map-style dataset with ``collate``; up to its first
    ``max_examples``) into ``out`` (kronfluence's layout: ``ekfac/factors_factors``); the sampled
    labels of the true Fisher come from ``torch.manual_seed(seed)`` in a forked RNG, so the
    process's own random state is as it was (what runs next does not depend on this having run)."""
    import torch

    _, arguments, _, _ = kronfluence()
    args = arguments.FactorArguments(strategy="ekfac", use_empirical_fisher=fisher == "empirical",
                                     covariance_max_examples=max_examples, lambda_max_examples=max_examples)
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        _analyzer(model, task, out, pool, device).fit_all_factors(
            FACTORS, pool, per_device_batch_size=batch_size, factor_args=args, overwrite_output_dir=True)


def factors_dir(root: Path) -> Path:
    return Path(root) / ANALYSIS / f"factors_{FACTORS}"


def pairwise_scores(model, task, target: EncodedDataset, pool: EncodedDataset, factors: Path, work: Path,
                    device: "torch.device", *, batch_size: int, damping: float | None,
                    query_gb: float | None = None) -> np.ndarray:
    """(n_target, n_pool) float32: kronfluence's pairwise influence of every pool example on every
    target example's loss, with the factors fitted under ``factors`` (``fit_factors``' out). The
    factors are linked into ``work``, where kronfluence writes its scores; they are read back.

    kronfluence passes over the whole pool once per group of query batches it holds: as many
    target examples' preconditioned gradients as fit in ``query_gb`` GiB (4 bytes per tracked
    parameter each; default: all) are accumulated before each pass (``query_chunk``)."""
    _, arguments, _, _ = kronfluence()
    link = factors_dir(work)
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(factors_dir(factors).resolve(), target_is_directory=True)
    chunk = query_chunk(model, task, len(target), batch_size, query_gb)
    args = arguments.ScoreArguments(damping_factor=damping, query_gradient_accumulation_steps=-(-chunk // batch_size))
    a = _analyzer(model, task, work, pool, device)
    a.compute_pairwise_scores(SCORES, FACTORS, query_dataset=target, train_dataset=pool,
                              per_device_query_batch_size=batch_size, per_device_train_batch_size=batch_size,
                              score_args=args, overwrite_output_dir=True)
    return a.load_pairwise_scores(SCORES)["all_modules"].float().cpu().numpy()


def query_chunk(model, task, n_target: int, batch_size: int, query_gb: float | None) -> int:
    """How many target examples' preconditioned gradients to hold per pass over the pool: all, or
    as many as fit in ``query_gb`` GiB at 4 bytes per tracked parameter (at least one batch)."""
    if query_gb is None:
        return n_target
    modules = dict(model.named_modules())
    n_params = sum(p.numel() for name in task.get_influence_tracked_modules() for p in modules[name].parameters())
    fit = int(query_gb * 2**30 // (4 * max(1, n_params)))
    return max(batch_size, min(n_target, fit - fit % batch_size))


def read_ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in open(path)]


@method("ekfac", needs="influence", check=check)
def ekfac_method(req: Request) -> Scored:
    d = req.influence
    scores = np.load(d / "scores.npy", mmap_mode="r")  # (n_target, n_pool)
    pool_ids, target_ids = read_ids(d / "pool_ids.jsonl"), read_ids(d / "target_ids.jsonl")
    info: dict[str, Any] = json.loads((d / "influence.json").read_text())
    agg = aggregate(lambda ix: np.asarray(scores[ix], dtype=np.float64).T, target_subtasks(req, target_ids),
                    reduce=req.selection.subtask_reduce)
    return Scored(agg, pool_ids, {"influence": str(d), "damping": info["damping"], "n_dropped": len(info["dropped_ids"]),
                                  "dropped": info["dropped"], "lora_modules": info["n_modules"]})

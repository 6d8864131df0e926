"""TRAK (Park et al., ICML 2023) on the gradient datastore:

    score(z) = max over subtasks s of  mean over target z' in s of
               (1/C) sum_c  phi_c(z')^T (Phi_c^T Phi_c + lambda_c I)^-1 phi_c(z)

phi_c: the projected per-example loss gradient at warmup checkpoint c (plain gradients, not
normalised: ``datastore.gradient_type=sgd datastore.normalize=false``, which ``selection=trak``
sets), Phi_c the pool's (N x d). lambda_c = ``selection.damping`` x tr(Phi_c^T Phi_c) / d, the
damping relative to the kernel's mean eigenvalue, so one setting serves every model and dim.
The d x d kernel is accumulated from the stored features chunk by chunk (never N x N) and the
target side is solved once per checkpoint, so the pool is read twice per checkpoint.

Differences from TRAK as published (docs/selection-methods.md): the C warmup checkpoints of one
run stand in for TRAK's ensemble of independently trained models; the loss gradient stands in for
the gradient of the margin, without TRAK's reweighting by 1 - p (there is no single class
probability in a language model's loss); TRAK's projection is the datastore's Rademacher one.
"""

from __future__ import annotations

import numpy as np
from omegaconf import DictConfig

from less.errors import ConfigError, require
from less.selection.gradient import PLAIN, load_features, target_subtasks
from less.selection.registry import Request, Scored, method


def check(cfg: DictConfig) -> None:
    d = cfg.selection.damping
    require(isinstance(d, (int, float)) and not isinstance(d, bool) and d > 0,
            f"selection.damping must be a number > 0 (lambda relative to the kernel's mean eigenvalue), got {d!r}")


def kernel(pool, chunk: int = 4096) -> np.ndarray:
    """Phi^T Phi (d x d) over row chunks of ``pool`` (N x d, rows decoded per slice): each chunk's
    product in float32 (the features are stored in float16 or float32), summed in float64."""
    from tqdm.auto import tqdm

    n, d = pool.shape
    k = np.zeros((d, d))
    for start in tqdm(range(0, n, chunk), desc=f"trak kernel ({d} x {d})", unit="chunk", disable=n <= chunk):
        x = np.asarray(pool[start: min(n, start + chunk)], dtype=np.float32)
        k += x.T @ x
    return k


def preconditioned_targets(pool, target: np.ndarray, damping: float) -> tuple[np.ndarray, float]:
    """(Phi^T Phi + lambda I)^-1 applied to every target row (n_t x d) and lambda."""
    k = kernel(pool)
    lam = damping * float(np.trace(k)) / k.shape[0]
    if not lam > 0:
        raise ConfigError("trak: the pool's gradient features are all zero (no kernel to invert)")
    k[np.diag_indices_from(k)] += lam
    return np.linalg.solve(k, np.asarray(target, dtype=np.float64).T).T, lam


@method("trak", needs="gradients", check=check, features=PLAIN)
def trak_method(req: Request) -> Scored:
    from less.selection.scoring import less_scores

    s = req.selection
    f = load_features(req)
    solved, lams = [], []
    for pool, target in zip(f.pool, f.target):
        t, lam = preconditioned_targets(pool, target, float(s.damping))
        solved.append(t.astype(np.float32))
        lams.append(lam)
    weights = np.full(len(f.pool), 1.0 / len(f.pool))
    scores = less_scores(f.pool, solved, weights, target_subtasks(req, f.target_ids), reduce=s.subtask_reduce)
    return Scored(scores, f.pool_ids, f.extra(req.datastore, damping=float(s.damping), lambda_=lams))

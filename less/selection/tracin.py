"""TracIn (Pruthi et al., NeurIPS 2020), TracInCP on the warmup checkpoints:

    score(z) = max over subtasks s of  mean over target z' in s of  sum_c  eta_c <g_c(z), g_c(z')>

g_c: the projected per-example loss gradient at warmup checkpoint c, plain and not normalised
(``datastore.gradient_type=sgd datastore.normalize=false``, which ``selection=tracin`` sets);
eta_c: the checkpoint's average learning rate, not renormalised. It is LESS's scoring path
(``less.selection.scoring.less_scores``) with those options: LESS with
``datastore.gradient_type=sgd datastore.normalize=false`` ranks the pool the same way (its weights
are eta_c renormalised to sum to 1, a constant factor), but TracIn is selected by its name and
its scores keep TracIn's scale.
"""

from __future__ import annotations

import numpy as np

from less.selection.gradient import PLAIN, load_features, target_subtasks
from less.selection.registry import Request, Scored, method


@method("tracin", needs="gradients", features=PLAIN)
def tracin_method(req: Request) -> Scored:
    from less.selection.scoring import less_scores

    f = load_features(req)
    lrs = np.asarray(f.lrs, dtype=np.float64)
    scores = less_scores(f.pool, [np.asarray(t) for t in f.target], lrs, target_subtasks(req, f.target_ids),
                         reduce=req.selection.subtask_reduce)
    return Scored(scores, f.pool_ids, f.extra(req.datastore, learning_rates=lrs.tolist()))

"""TrackStar-style attribution (Chang et al., 2024, "Scalable influence and fact tracing for large
language model pretraining"): gradients of pool and target alike preconditioned by the warmup
checkpoint's Adam second moment and unit-normalised before the dot product,

    score(z) = max over subtasks s of  mean over target z' in s of
               sum_c w_c <g~_c(z), g~_c(z')>,   g~ = (g / sqrt(v_c + eps)) / ||g / sqrt(v_c + eps)||

with w_c the checkpoints' learning rates renormalised (as LESS; ``selection.checkpoints=[<last>]``
for TrackStar's single final model). LESS applies Adam's update direction to the pool side only and
leaves the target's gradient plain; here both sides get the same preconditioner
(``datastore.gradient_type=precond datastore.normalize=true``, which ``selection=trackstar`` sets).
Not included: TrackStar's task-specific Hessian (an unlabelled-data second moment) correction.
"""

from __future__ import annotations

import numpy as np

from less.selection.gradient import PRECOND, load_features, target_subtasks
from less.selection.registry import Request, Scored, method


@method("trackstar", needs="gradients", features=PRECOND)
def trackstar_method(req: Request) -> Scored:
    from less.selection.scoring import checkpoint_weights, less_scores

    f = load_features(req)
    weights = checkpoint_weights(f.lrs)
    scores = less_scores(f.pool, [np.asarray(t) for t in f.target], weights, target_subtasks(req, f.target_ids),
                         reduce=req.selection.subtask_reduce)
    return Scored(scores, f.pool_ids, f.extra(req.datastore, checkpoint_weights=weights.tolist()))

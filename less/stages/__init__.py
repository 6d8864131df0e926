"""The pipeline's stages, one module each; GRAPH lists them in pipeline order (the runner walks it).

    prepare:   target, pool
    warmup:    warmup                            (LoRA on a slice of the pool, one checkpoint per epoch)
    datastore: init_adapter (no-warmup ablation), pool_features, target_features, datastore
    select:    representations (rds, kcenter), ekfac_factors and influence (ekfac), select,
               pool_losses (the pool's loss at the last warmup checkpoint) and correlates (what the
               selection correlates with: less.stages.correlates)
    train:     train
    eval:      eval_base, eval
    validate:  validation_subsets (M random subsets, each trained and evaluated), lds
    no step:   selector, model (tiny models: built by whichever stage first needs them),
               token_counts (the run's accounting, whenever the run has the pool)
"""

from less.stages.datastore import DATASTORE
from less.stages.eval import EVAL, EVAL_BASE
from less.stages.features import POOL_FEATURES, TARGET_FEATURES
from less.stages.correlates import CORRELATES
from less.stages.influence import EKFAC_FACTORS, INFLUENCE
from less.stages.losses import POOL_LOSSES
from less.stages.model import MODEL, SELECTOR
from less.stages.prepare import POOL, TARGET
from less.stages.representations import REPRESENTATIONS
from less.stages.select import SELECT
from less.stages.token_counts import TOKEN_COUNTS
from less.stages.train import TRAIN
from less.stages.validate import LDS, VALIDATION_SUBSETS
from less.stages.warmup import INIT_ADAPTER, WARMUP

GRAPH = (SELECTOR, MODEL, TARGET, POOL, WARMUP, INIT_ADAPTER, POOL_FEATURES, TARGET_FEATURES, DATASTORE,
         REPRESENTATIONS, EKFAC_FACTORS, INFLUENCE, SELECT, POOL_LOSSES, CORRELATES, TRAIN, EVAL_BASE, EVAL, VALIDATION_SUBSETS, LDS, TOKEN_COUNTS)

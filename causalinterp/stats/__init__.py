"""`causalinterp.stats` -- pure-numpy statistics on per-prompt data, vectorised over sites.

No model knowledge lives here: every function takes arrays with prompts on `axis` (0 by default)
and returns small frozen result objects in the style of `scipy.stats`, with arrays over the
remaining axes (scalars for 1-D input).  Torch tensors are accepted (converted with numpy).

Examples:
    >>> import numpy as np, causalinterp as ci
    >>> effects = np.random.default_rng(0).normal(1.0, 1.0, size=(40, 3))   # 40 prompts x 3 sites
    >>> p = ci.stats.permutation_test(effects, seed=0).pvalue
    >>> ci.stats.adjust_pvalues(p, method="holm").shape
    (3,)
"""
from .bootstrap import ConfidenceInterval, bootstrap_ci, bootstrap_distribution
from .effects import EffectSize, RecoveryResult, RecoveryUndefined, effect_size, recovery
from .equivalence import TOSTResult, tost
from .multiple import CORRECTIONS, adjust_pvalues
from .permutation import PermutationResult, maxt_pvalues, permutation_test, signflip_ci
from .power import MDEResult, min_detectable_effect, smallest_pvalue

__all__ = [
    "permutation_test", "PermutationResult", "maxt_pvalues", "signflip_ci",
    "bootstrap_ci", "bootstrap_distribution", "ConfidenceInterval",
    "adjust_pvalues", "CORRECTIONS",
    "tost", "TOSTResult",
    "effect_size", "EffectSize", "recovery", "RecoveryResult", "RecoveryUndefined",
    "min_detectable_effect", "MDEResult", "smallest_pvalue",
]

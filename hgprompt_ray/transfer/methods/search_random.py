"""Random search: the HGPrompt search with Optuna's RandomSampler in place of TPE.

The product's claim is that its search picks a better ensemble than naive choices, random search
among them (Bergstra and Bengio, "Random Search for Hyper-Parameter Optimization", JMLR 2012):
the same space (lambda, M and the subset), the same alpha solver per trial, the same trial metric
(the val200 probe on P0 = sum_i alpha_i P_i) and the same number of trials, only the sampler
differs. Its alpha is the best random trial's. The difference to HGPrompt is what TPE's guided
sampling adds; the difference to CMA-ES (no H-score, no gradients) is what the objective adds.

Both searches use the same seed, and TPE's first ``n_startup_trials`` (10, ``search_spaces.
hgprompt.tpe_sampler``) are drawn by a RandomSampler of that seed: the two searches share those
trials (common random numbers; one or two more when trials run concurrently, since TPE samples
at random until ten have finished: 11 on count's first split draw in #20's leave-one-out). Each
is still a valid draw of its own method, and their paired difference is TPE's guidance over the
remaining trials: where the best trial is among the shared ones, both pick the same alpha and tie
on that draw (as on count's first draw). An independent seed would add the noise of two unrelated startups to every
difference without changing either method. The shared trials reach the same alpha bit for bit
(11 per draw on count's first three draws), so their val-probe results are read from the metric's
cache (``tuning.probe_metric``) instead of recomputed.
"""

from __future__ import annotations

import numpy as np

from hgprompt_ray.transfer.methods.common import PROMPT_PATTERNS
from hgprompt_ray.transfer.methods.inputs import WeightingInputs
from hgprompt_ray.transfer.methods.registry import MethodKind, TransferMethod, register_method


def random_search_weights(inputs: WeightingInputs, seed: int = 0) -> np.ndarray:
    """The random search's best alpha over the sources."""
    return inputs.required("random_search_weights", "random search", "Run the random search.")


METHOD = register_method(
    TransferMethod(
        name="search-random",
        label="Random search",
        kind=MethodKind.WEIGHTING,
        paper="Bergstra & Bengio, Random Search for Hyper-Parameter Optimization, JMLR 2012 "
        "(HGPrompt's search with Optuna's RandomSampler)",
        trains=PROMPT_PATTERNS,
        trains_text="prompt + head (from the random search's ensemble)",
        reads=("search", "sources"),
        weights=random_search_weights,
        needs=("random-search",),
        order=59,
    )
)

"""H-ensemble: alpha = argmax_alpha H(sum_i alpha_i f_i) on the simplex — HGPrompt with lambda = 0.

Wu, Wang, Zhang, Zhao, "H-ensemble: An Information Theoretic Approach to Reliable Few-Shot
Multi-Source-Free Transfer", AAAI 2024. The ensemble H-score of the weighted feature sum is
maximised over the simplex (the exact precomputed statistics of ``core.ensemble_hscore``, the
same solver as HGPrompt), on the search's train800 samples. This is exactly HGPrompt's "H only"
ablation, so it is one method, shown once as "H-ensemble (= H only)". (An earlier version
normalised each source's own H-score, which is not H-ensemble.)
"""

from __future__ import annotations

import numpy as np

from hgprompt_ray.transfer.methods.common import PROMPT_PATTERNS
from hgprompt_ray.transfer.methods.inputs import WeightingInputs
from hgprompt_ray.transfer.methods.registry import MethodKind, TransferMethod, register_method
from hgprompt_ray.transfer.weights import h_only_weights


def h_ensemble_weights(inputs: WeightingInputs, seed: int = 0) -> np.ndarray:
    """argmax_alpha H(sum_i alpha_i f_i) over the simplex, on the search's train800 statistics."""
    return h_only_weights(inputs.statistics)


METHOD = register_method(
    TransferMethod(
        name="h-ensemble",
        label="H-ensemble (= H only)",
        kind=MethodKind.WEIGHTING,
        paper="Wu et al., H-ensemble: An Information Theoretic Approach to Reliable Few-Shot "
        "Multi-Source-Free Transfer, AAAI 2024",
        trains=PROMPT_PATTERNS,
        trains_text="prompt + head (from argmax H of the weighted feature sum)",
        reads=("train800", "sources"),
        weights=h_ensemble_weights,
        needs=("search",),
        order=54,
    )
)

"""SPoT-weighted: sources weighted by their positive cosine similarity with SPoT's target prompt
(Vu et al., ACL 2022; see ``spot_best``)."""

from __future__ import annotations

import numpy as np

from hgprompt_ray.transfer.methods.common import PROMPT_PATTERNS
from hgprompt_ray.transfer.methods.inputs import WeightingInputs
from hgprompt_ray.transfer.methods.registry import MethodKind, TransferMethod, register_method
from hgprompt_ray.transfer.weights import spot_weights


def spot_weighted_weights(inputs: WeightingInputs, seed: int = 0) -> np.ndarray:
    """Positive similarities normalised to the simplex (uniform if none is positive)."""
    return spot_weights(inputs.spot_similarities[seed], best=False)


METHOD = register_method(
    TransferMethod(
        name="spot-weighted",
        label="SPoT-weighted",
        kind=MethodKind.WEIGHTING,
        paper="Vu et al., SPoT: Better Frozen Model Adaptation through Soft Prompt Transfer, ACL 2022",
        trains=PROMPT_PATTERNS,
        trains_text="prompt + head (from the similarity-weighted sources)",
        reads=("train800", "sources"),
        weights=spot_weighted_weights,
        per_seed=True,
        needs=("spot",),
        order=53,
    )
)

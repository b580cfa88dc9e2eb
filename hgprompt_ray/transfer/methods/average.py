"""Average: alpha_i = 1/K, the uniform ensemble of the source prompts (the ablation's "neither")."""

from __future__ import annotations

import numpy as np

from hgprompt_ray.core.simplex import uniform_weights
from hgprompt_ray.transfer.methods.common import PROMPT_PATTERNS
from hgprompt_ray.transfer.methods.inputs import WeightingInputs
from hgprompt_ray.transfer.methods.registry import MethodKind, TransferMethod, register_method


def average_weights(inputs: WeightingInputs, seed: int = 0) -> np.ndarray:
    """The uniform weights over the sources."""
    return uniform_weights(len(inputs.sources))


METHOD = register_method(
    TransferMethod(
        name="average",
        label="Average",
        kind=MethodKind.WEIGHTING,
        paper="the uniform prompt ensemble (HGPrompt's 'neither' ablation), Zhang et al., arXiv 2504.12311",
        trains=PROMPT_PATTERNS,
        trains_text="prompt + head (from P0 = mean of the sources)",
        reads=("sources",),
        weights=average_weights,
        scaling=True,
        tsne=True,
        order=50,
    )
)

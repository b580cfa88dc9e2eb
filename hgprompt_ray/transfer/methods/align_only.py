"""Alignment only: alpha = argmin L_align(alpha), HGPrompt without the H-score term (the ablation)."""

from __future__ import annotations

import numpy as np

from hgprompt_ray.transfer.methods.common import PROMPT_PATTERNS
from hgprompt_ray.transfer.methods.inputs import WeightingInputs
from hgprompt_ray.transfer.methods.registry import MethodKind, TransferMethod, register_method
from hgprompt_ray.transfer.weights import alignment_only_weights


def align_only_weights(inputs: WeightingInputs, seed: int = 0) -> np.ndarray:
    """argmin_alpha L_align(alpha) on the search's train800 gradient statistics."""
    return alignment_only_weights(inputs.statistics)


METHOD = register_method(
    TransferMethod(
        name="align-only",
        label="Alignment only",
        kind=MethodKind.WEIGHTING,
        paper="HGPrompt's ablation (Zhang et al., arXiv 2504.12311 v5)",
        trains=PROMPT_PATTERNS,
        trains_text="prompt + head (from argmin L_align)",
        reads=("train800", "sources"),
        weights=align_only_weights,
        table="ablation",
        ablation_row="alignment only",
        needs=("search",),
        order=65,
    )
)

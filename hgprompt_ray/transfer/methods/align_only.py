"""Alignment only: alpha = argmin L_align(alpha) on the search's chosen subset, HGPrompt without
the H-score term (the ablation).

The ablation compares the four objectives of the same search over the same sources: the subset
the HGPrompt search's best trial chose (its M prompts), weighted uniformly ("neither",
``search-uniform``), by argmax H ("H only", ``search-h-only``), by argmin L_align (this method)
and by the search's own alpha ("both", HGPrompt). Only the objective differs between the rows.
"""

from __future__ import annotations

import numpy as np

from hgprompt_ray.transfer.methods.common import PROMPT_PATTERNS
from hgprompt_ray.transfer.methods.inputs import WeightingInputs
from hgprompt_ray.transfer.methods.registry import MethodKind, TransferMethod, register_method
from hgprompt_ray.transfer.weights import alignment_only_weights


def align_only_weights(inputs: WeightingInputs, seed: int = 0) -> np.ndarray:
    """argmin_alpha L_align(alpha) over the search's subset, on its train800 gradient statistics."""
    return inputs.on_search_subset(lambda part: alignment_only_weights(part.statistics))


METHOD = register_method(
    TransferMethod(
        name="align-only",
        label="Alignment only",
        kind=MethodKind.WEIGHTING,
        paper="HGPrompt's ablation (Zhang et al., arXiv 2504.12311 v5)",
        trains=PROMPT_PATTERNS,
        trains_text="prompt + head (from argmin L_align over the search's subset)",
        reads=("train800", "sources", "search"),
        weights=align_only_weights,
        table="ablation",
        ablation_row="alignment only",
        needs=("search",),
        order=65,
    )
)

"""Uniform over the search's subset: the ablation's "neither" row (no objective).

HGPrompt's ablation (Zhang et al., arXiv 2504.12311 v5) compares its objectives; here all four
rows use the subset the same HGPrompt search chose (see ``align_only``), so "neither" is the
uniform ensemble of that subset, not of every source (that is Average, a main-table baseline).
"""

from __future__ import annotations

import numpy as np

from hgprompt_ray.transfer.methods.common import PROMPT_PATTERNS
from hgprompt_ray.transfer.methods.inputs import WeightingInputs
from hgprompt_ray.transfer.methods.registry import MethodKind, TransferMethod, register_method


def search_uniform_weights(inputs: WeightingInputs, seed: int = 0) -> np.ndarray:
    """1/M on each of the search's M chosen prompts, 0 elsewhere."""
    return inputs.on_search_subset(lambda part: np.full(len(part.sources), 1.0 / len(part.sources)))


METHOD = register_method(
    TransferMethod(
        name="search-uniform",
        label="Uniform (search's subset)",
        kind=MethodKind.WEIGHTING,
        paper="HGPrompt's ablation 'neither' (Zhang et al., arXiv 2504.12311 v5)",
        trains=PROMPT_PATTERNS,
        trains_text="prompt + head (from P0 = mean of the search's subset)",
        reads=("train800", "val200", "sources", "search"),
        weights=search_uniform_weights,
        table="ablation",
        ablation_row="neither (uniform)",
        needs=("search",),
        order=62,
    )
)

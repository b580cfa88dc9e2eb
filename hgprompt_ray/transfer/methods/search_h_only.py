"""H only over the search's subset: the ablation's "H only" row (lambda = 0).

argmax_alpha H(sum_i alpha_i f_i) over the subset the HGPrompt search chose (see ``align_only``),
with the search's solver on its train800 statistics. Over every source this is H-ensemble (the
main-table baseline, ``h_ensemble``); here only the objective differs from HGPrompt's row.
"""

from __future__ import annotations

import numpy as np

from hgprompt_ray.transfer.methods.common import PROMPT_PATTERNS
from hgprompt_ray.transfer.methods.inputs import WeightingInputs
from hgprompt_ray.transfer.methods.registry import MethodKind, TransferMethod, register_method
from hgprompt_ray.transfer.weights import h_only_weights


def search_h_only_weights(inputs: WeightingInputs, seed: int = 0) -> np.ndarray:
    """argmax_alpha H over the search's subset, 0 elsewhere."""
    return inputs.on_search_subset(lambda part: h_only_weights(part.statistics))


METHOD = register_method(
    TransferMethod(
        name="search-h-only",
        label="H only (search's subset)",
        kind=MethodKind.WEIGHTING,
        paper="HGPrompt's ablation 'H only' (Zhang et al., arXiv 2504.12311 v5)",
        trains=PROMPT_PATTERNS,
        trains_text="prompt + head (from argmax H over the search's subset)",
        reads=("train800", "val200", "sources", "search"),
        weights=search_h_only_weights,
        table="ablation",
        ablation_row="H only",
        needs=("search",),
        order=63,
    )
)

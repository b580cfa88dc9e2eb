"""HGPrompt: alpha from the Ray Tune search over lambda, M and the subset (``tuning.run_search``).

Zhang, Cao, Wu, Zhao, Li, "Learning Optimal Prompt Ensemble for Multi-source Visual Prompt
Transfer", arXiv 2504.12311 v5: alpha = argmin -H(alpha) + lambda L_align(alpha) on the simplex,
the trial chosen by the val200 probe on P0 = sum_i alpha_i P_i.
"""

from __future__ import annotations

import numpy as np

from hgprompt_ray.transfer.methods.common import PROMPT_PATTERNS
from hgprompt_ray.transfer.methods.inputs import WeightingInputs
from hgprompt_ray.transfer.methods.registry import MethodKind, TransferMethod, register_method


def hgprompt_weights(inputs: WeightingInputs, seed: int = 0) -> np.ndarray:
    """The search's best alpha over the sources."""
    return inputs.required("search_weights", "HGPrompt", "Run the search.")


METHOD = register_method(
    TransferMethod(
        name="hgprompt",
        label="HGPrompt",
        kind=MethodKind.WEIGHTING,
        paper="Zhang et al., Learning Optimal Prompt Ensemble for Multi-source Visual Prompt Transfer, "
        "arXiv 2504.12311 v5",
        trains=PROMPT_PATTERNS,
        trains_text="prompt + head (from the searched ensemble)",
        reads=("search", "sources"),
        weights=hgprompt_weights,
        ablation_row="both (HGPrompt)",
        scaling=True,
        tsne=True,
        needs=("search",),
        order=70,
    )
)

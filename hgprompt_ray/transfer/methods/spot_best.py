"""SPoT-best: the source prompt most similar to a briefly tuned target prompt.

Vu et al., "SPoT: Better Frozen Model Adaptation through Soft Prompt Transfer", ACL 2022: task
embeddings are mean-pooled prompt tokens; a target prompt is tuned briefly on train800 from VPT's
init (one per seed), and the sources are ranked by cosine similarity with it.
"""

from __future__ import annotations

import numpy as np

from hgprompt_ray.transfer.methods.common import PROMPT_PATTERNS
from hgprompt_ray.transfer.methods.inputs import WeightingInputs
from hgprompt_ray.transfer.methods.registry import MethodKind, TransferMethod, register_method
from hgprompt_ray.transfer.weights import spot_weights


def spot_best_weights(inputs: WeightingInputs, seed: int = 0) -> np.ndarray:
    """One-hot on the most similar source (this seed's target prompt)."""
    return spot_weights(inputs.spot_similarities[seed], best=True)


METHOD = register_method(
    TransferMethod(
        name="spot-best",
        label="SPoT-best",
        kind=MethodKind.WEIGHTING,
        paper="Vu et al., SPoT: Better Frozen Model Adaptation through Soft Prompt Transfer, ACL 2022",
        trains=PROMPT_PATTERNS,
        trains_text="prompt + head (from the most similar source)",
        reads=("train800", "sources"),
        weights=spot_best_weights,
        per_seed=True,
        scaling=True,
        needs=("spot",),
        order=52,
    )
)

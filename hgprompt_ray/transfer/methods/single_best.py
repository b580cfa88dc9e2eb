"""Single-Best: all weight on the source with the best zero-shot accuracy on *val200*.

The zero-shot matrix scores a linear probe under every source prompt (fitted on train800, C
chosen on val200); the source is picked by the val200 column, never by test accuracy (an earlier
version picked by test accuracy, which leaked the test set into the choice).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from hgprompt_ray.errors import InvalidValueError, invalid_value
from hgprompt_ray.transfer.methods.common import PROMPT_PATTERNS
from hgprompt_ray.transfer.methods.inputs import WeightingInputs
from hgprompt_ray.transfer.methods.registry import MethodKind, TransferMethod, register_method


def best_source_weights(sources: Sequence[str], accuracy: Mapping[str, float]) -> np.ndarray:
    """One-hot on the source with the highest ``accuracy`` (ties: the first in ``sources``)."""
    missing = [s for s in sources if s not in accuracy]
    if missing:
        raise InvalidValueError(
            invalid_value("zero_shot_val", sorted(accuracy), f"has no val200 accuracy for sources {missing}",
                          "Compute the zero-shot matrix for this target (launch/zero_shot.py).")  # fmt: skip
        )
    weights = np.zeros(len(sources))
    weights[int(np.argmax([accuracy[s] for s in sources]))] = 1.0
    return weights


def single_best_weights(inputs: WeightingInputs, seed: int = 0) -> np.ndarray:
    """One-hot on the best source by zero-shot val200 accuracy."""
    return best_source_weights(inputs.sources, inputs.zero_shot_val)


METHOD = register_method(
    TransferMethod(
        name="single-best",
        label="Single-Best",
        kind=MethodKind.WEIGHTING,
        paper="the best single source prompt, as in SPoT (Vu et al., ACL 2022) and HGPrompt's tables",
        trains=PROMPT_PATTERNS,
        trains_text="prompt + head (from the best source by zero-shot val200 accuracy)",
        reads=("sources", "zero-shot val200"),
        weights=single_best_weights,
        order=51,
    )
)

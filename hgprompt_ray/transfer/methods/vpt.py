"""VPT from scratch: m prompt tokens from VPT's uniform init, tuned with the head.

Jia, Tang, Chen, Cardie, Belongie, Hariharan, Lim, "Visual Prompt Tuning", ECCV 2022
(VPT-shallow: the prompt inserted after CLS, no position embedding; ``models.PromptedViT``).
Every weighting tunes the same classifier from its own initial prompt P0.
"""

from __future__ import annotations

from torch import nn

from hgprompt_ray.transfer.methods.common import PROMPT_PATTERNS, BuildContext, prompt_classifier
from hgprompt_ray.transfer.methods.registry import MethodKind, TransferMethod, register_method


def build_vpt(context: BuildContext) -> nn.Module:
    """A PromptedViT with a fresh prompt (VPT's init from the seed) and the linear head."""
    return prompt_classifier(context._replace(initial=None))


METHOD = register_method(
    TransferMethod(
        name="vpt",
        label="VPT (scratch)",
        kind=MethodKind.TUNING,
        paper="Jia et al., Visual Prompt Tuning, ECCV 2022",
        trains=PROMPT_PATTERNS,
        trains_text="prompt + head (VPT's init)",
        reads=("train800", "val200"),
        build=build_vpt,
        order=30,
    )
)

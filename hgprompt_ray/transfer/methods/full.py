"""Full fine-tuning: every backbone parameter trains, with the linear head.

VPT's "Full" transfer type (Jia et al., ECCV 2022); the standard fine-tuning of a pretrained
ViT (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021). The backbone is a copy of
the frozen one, read through timm's ``forward_features`` / ``forward_head`` hooks.
"""

from __future__ import annotations

from torch import nn

from hgprompt_ray.transfer.methods.common import HEAD_PATTERNS, BuildContext, tuned_backbone_classifier
from hgprompt_ray.transfer.methods.registry import MethodKind, TransferMethod, register_method

TRAINS = ("backbone.*", *HEAD_PATTERNS)


def build_full(context: BuildContext) -> nn.Module:
    """The whole backbone and the head train."""
    return tuned_backbone_classifier(context, TRAINS)


METHOD = register_method(
    TransferMethod(
        name="full",
        label="Full fine-tuning",
        kind=MethodKind.TUNING,
        paper="Jia et al., Visual Prompt Tuning, ECCV 2022 ('Full'); Dosovitskiy et al., ICLR 2021",
        trains=TRAINS,
        trains_text="every backbone parameter + head",
        reads=("train800", "val200"),
        build=build_full,
        base_lr=4e-4,
        order=20,
    )
)

"""BIAS (BitFit): only the backbone's bias terms train, with the head.

Ben Zaken, Ravfogel, Goldberg, "BitFit: Simple Parameter-efficient Fine-tuning for
Transformer-based Masked Language-models", ACL 2022; VPT's "Bias" transfer type. Every parameter
named ``*bias`` trains: the attention's qkv and projection biases, the MLP biases, the LayerNorm
biases and the patch embedding's bias.
"""

from __future__ import annotations

from torch import nn

from hgprompt_ray.transfer.methods.common import HEAD_PATTERNS, BuildContext, tuned_backbone_classifier
from hgprompt_ray.transfer.methods.registry import MethodKind, TransferMethod, register_method

TRAINS = ("backbone.*bias", *HEAD_PATTERNS)


def build_bias(context: BuildContext) -> nn.Module:
    """A copy of the backbone whose bias terms train, and the head."""
    return tuned_backbone_classifier(context, TRAINS)


METHOD = register_method(
    TransferMethod(
        name="bias",
        label="BIAS (BitFit)",
        kind=MethodKind.TUNING,
        paper="Ben Zaken et al., BitFit, ACL 2022; VPT's 'Bias' (ECCV 2022)",
        trains=TRAINS,
        trains_text="backbone bias terms + head",
        reads=("train800", "val200"),
        build=build_bias,
        base_lr=8e-3,
        order=23,
    )
)

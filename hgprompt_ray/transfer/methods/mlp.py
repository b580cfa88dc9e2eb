"""MLP-k: a k-layer MLP head on the frozen backbone's features (k = 3 by default).

VPT's "Mlp-k" transfer type (Jia et al., ECCV 2022): the linear head is replaced by k linear
layers with ReLU between them, hidden width d (the feature width), the last one to the classes.
The features are standardised first (the BatchNorm without affine parameters of every head
here) and the last layer starts at zero, so k = 1 is exactly the linear head.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from hgprompt_ray.transfer.methods.common import (
    HEAD_PATTERNS,
    BackboneClassifier,
    BuildContext,
    check_count,
    fresh_backbone,
    linear_head,
    set_trainable,
)
from hgprompt_ray.transfer.methods.registry import MethodKind, TransferMethod, register_method


@dataclass(frozen=True)
class MlpSettings:
    """MLP-k's setting."""

    mlp_k: int = field(default=3, metadata={"help": "MLP-k: layers of the MLP head (1 = linear)"})

    def __post_init__(self) -> None:
        check_count("mlp_k", self.mlp_k, 1, None, "--mlp-k", "")


def mlp_head(dim: int, num_classes: int, layers: int) -> nn.Sequential:
    """BatchNorm (no affine), then ``layers - 1`` (Linear(d, d), ReLU) pairs, then the zero linear."""
    standardise, last = linear_head(dim, num_classes)
    hidden: list[nn.Module] = []
    for _ in range(layers - 1):
        hidden += [nn.Linear(dim, dim), nn.ReLU()]
    return nn.Sequential(standardise, *hidden, last)


def build_mlp(context: BuildContext) -> nn.Module:
    """The frozen backbone's features under a k-layer MLP."""
    settings = context.settings or MlpSettings()
    backbone = fresh_backbone(context)
    torch.manual_seed(context.seed)  # the hidden layers' init
    model = BackboneClassifier(backbone, mlp_head(backbone.embed_dim, context.num_classes, settings.mlp_k),
                               frozen_features=True, cache=context.feature_cache)  # fmt: skip
    return set_trainable(model, HEAD_PATTERNS)


METHOD = register_method(
    TransferMethod(
        name="mlp",
        label="MLP-{mlp_k}",
        kind=MethodKind.TUNING,
        paper="Jia et al., Visual Prompt Tuning, ECCV 2022 ('Mlp-k')",
        trains=HEAD_PATTERNS,
        trains_text="k-layer MLP head on frozen features",
        reads=("train800", "val200"),
        build=build_mlp,
        settings=MlpSettings,
        order=22,
    )
)

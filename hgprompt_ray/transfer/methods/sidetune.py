"""SideTune: a small side network whose output is alpha-blended with the frozen representation.

Zhang, Sax, Zamir, Guibas, Malik, "Side-Tuning: A Baseline for Network Adaptation via Additive
Side Networks", ECCV 2020; VPT's "SideTune" transfer type (Jia et al., ECCV 2022):

    r(x) = a * B(x) + (1 - a) * S(x),   a = sigmoid(side_alpha)   (learned, starts at 1/2)

B(x) is the frozen backbone's final-norm CLS feature, S a small convolutional side network
(three stride-2 convolutions of ``sidetune_width``, 2x and 4x channels with GELU, global average
pooling and a linear map to d), and the head reads r(x). The paper initialises S from the base
network or a distilled copy; with no small pretrained network offline, S starts from random
weights (seeded) with its last linear map at zero, so that r(x) starts as a B(x)/2 that the head's
BatchNorm standardises (the linear head's start) instead of B(x) plus random noise. This is this
project's adaptation. The blending weight learns at the head's rate (``tune._FAST_GROUP``): at the
side network's base rate Adam would move it by about 0.1 over a fit, a fixed blend in practice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hgprompt_ray.transfer.methods.common import (
    HEAD_PATTERNS,
    BackboneClassifier,
    BuildContext,
    FeatureCache,
    check_count,
    fresh_backbone,
    linear_head,
    set_trainable,
)
from hgprompt_ray.transfer.methods.registry import MethodKind, TransferMethod, register_method

TRAINS = ("side.*", "side_alpha", *HEAD_PATTERNS)


@dataclass(frozen=True)
class SideTuneSettings:
    """The side network's setting."""

    sidetune_width: int = field(default=32, metadata={"help": "SideTune: channels of the side network's first layer"})

    def __post_init__(self) -> None:
        check_count("sidetune_width", self.sidetune_width, 1, None, "--sidetune-width", "")


def side_network(dim: int, width: int) -> nn.Sequential:
    """Three stride-2 convolutions (width, 2 width, 4 width), average pooling, a zero linear map to d."""
    return nn.Sequential(
        nn.Conv2d(3, width, 3, stride=2, padding=1), nn.GELU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.GELU(),
        nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.GELU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), _zero(nn.Linear(4 * width, dim)),
    )  # fmt: skip


def _zero(linear: nn.Linear) -> nn.Linear:
    """The side network's last map starts at zero (module docstring)."""
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    return linear


class SideTunedClassifier(BackboneClassifier):
    """Frozen backbone features alpha-blended with a side network's, then the head."""

    def __init__(self, backbone: Any, head: nn.Module, width: int, cache: FeatureCache | None = None) -> None:
        super().__init__(backbone, head, frozen_features=True, cache=cache)
        self.side = side_network(self.embed_dim, width)
        self.side_alpha = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blend = torch.sigmoid(self.side_alpha)
        return self.head(blend * self.features(x) + (1 - blend) * self.side(x))


def build_sidetune(context: BuildContext) -> nn.Module:
    """The frozen backbone, a seeded side network and the blending weight, and the head."""
    settings = context.settings or SideTuneSettings()
    backbone = fresh_backbone(context)
    torch.manual_seed(context.seed)
    model = SideTunedClassifier(backbone, linear_head(backbone.embed_dim, context.num_classes), settings.sidetune_width,
                                context.feature_cache)  # fmt: skip
    return set_trainable(model, TRAINS)


METHOD = register_method(
    TransferMethod(
        name="sidetune",
        label="SideTune",
        kind=MethodKind.TUNING,
        paper="Zhang et al., Side-Tuning, ECCV 2020; VPT's 'SideTune' (ECCV 2022)",
        trains=TRAINS,
        trains_text="side network + blending weight + head",
        reads=("train800", "val200"),
        build=build_sidetune,
        settings=SideTuneSettings,
        base_lr=8e-3,
        order=25,
    )
)

"""Adapter: a residual bottleneck adapter after each block's MLP; the rest of the backbone frozen.

Houlsby et al., "Parameter-Efficient Transfer Learning for NLP", ICML 2019, in the placement of
Pfeiffer et al., "AdapterFusion", EACL 2021 (after the feed-forward sub-layer only), which is
VPT's "Adapter" transfer type (Jia et al., ECCV 2022), reduction r = 8 by default:

    mlp_out <- mlp_out + W_up GELU(W_down mlp_out),   W_down: d -> d / r,   W_up: d / r -> d

W_up starts at zero, so the adapted network starts as the pretrained one. The adapters attach to
timm's blocks by forward hooks on ``block.mlp`` (timm's code is neither copied nor edited; where
the block has LayerScale, it scales the adapted output as it scaled the MLP's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hgprompt_ray.errors import InvalidValueError, invalid_value
from hgprompt_ray.transfer.methods.common import (
    HEAD_PATTERNS,
    BackboneClassifier,
    BuildContext,
    fresh_backbone,
    linear_head,
    set_trainable,
)
from hgprompt_ray.transfer.methods.registry import MethodKind, TransferMethod, register_method

TRAINS = ("adapters.*", *HEAD_PATTERNS)


@dataclass(frozen=True)
class AdapterSettings:
    """The adapters' setting."""

    adapter_reduction: int = field(
        default=8, metadata={"help": "Adapter: bottleneck width = d / reduction (reduction >= 1)"}
    )

    def __post_init__(self) -> None:
        value = self.adapter_reduction
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidValueError(
                invalid_value("adapter_reduction", value, "must be an integer >= 1 (bottleneck = d / reduction)",
                              "Pass --adapter-reduction 8.")  # fmt: skip
            )


class BottleneckAdapter(nn.Module):
    """x + W_up GELU(W_down x), W_up zero-initialised.

    Shape:
        x: (..., d); returns (..., d).
    """

    def __init__(self, dim: int, bottleneck: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(nn.functional.gelu(self.down(x)))


class AdaptedClassifier(BackboneClassifier):
    """The backbone with one adapter hooked after every block's MLP, and a head."""

    def __init__(self, backbone: Any, head: nn.Module, reduction: int) -> None:
        super().__init__(backbone, head)
        dim = int(backbone.embed_dim)
        if dim // reduction < 1:
            raise InvalidValueError(
                invalid_value("adapter_reduction", reduction, f"must be at most the width d = {dim}",
                              f"Pass --adapter-reduction {min(8, dim)}.")  # fmt: skip
            )
        self.adapters = nn.ModuleList(BottleneckAdapter(dim, dim // reduction) for _ in backbone.blocks)
        for block, adapter in zip(backbone.blocks, self.adapters):
            block.mlp.register_forward_hook(_AdapterHook(adapter))


class _AdapterHook:
    """A forward hook that replaces the MLP's output by the adapter's."""

    def __init__(self, adapter: BottleneckAdapter) -> None:
        self.adapter = adapter

    def __call__(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return self.adapter(output)  # type: ignore[no-any-return]


def build_adapter(context: BuildContext) -> nn.Module:
    """A copy of the frozen backbone with adapters after every MLP, and the head."""
    settings = context.settings or AdapterSettings()
    backbone = fresh_backbone(context)
    head = linear_head(backbone.embed_dim, context.num_classes)
    torch.manual_seed(context.seed)
    return set_trainable(AdaptedClassifier(backbone, head, settings.adapter_reduction), TRAINS)


METHOD = register_method(
    TransferMethod(
        name="adapter",
        label="Adapter",
        kind=MethodKind.TUNING,
        paper="Houlsby et al., ICML 2019; Pfeiffer et al., EACL 2021; VPT's 'Adapter' (ECCV 2022)",
        trains=TRAINS,
        trains_text="bottleneck adapters after every MLP (reduction r) + head",
        reads=("train800", "val200"),
        build=build_adapter,
        settings=AdapterSettings,
        base_lr=8e-3,
        order=24,
    )
)

"""PARTIAL-k: the last k transformer blocks (and the final norm after them) train, with the head.

VPT's "Partial-k" transfer type (Jia et al., ECCV 2022; Yosinski et al., "How transferable are
features in deep neural networks?", NeurIPS 2014). As in VPT's code, the final LayerNorm that
follows the last block trains with it. k = 1 by default (``--partial-k``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from hgprompt_ray.transfer.methods.common import (
    HEAD_PATTERNS,
    BuildContext,
    check_count,
    tuned_backbone_classifier,
)
from hgprompt_ray.transfer.methods.registry import MethodKind, TransferMethod, register_method


@dataclass(frozen=True)
class PartialSettings:
    """PARTIAL-k's setting."""

    partial_k: int = field(default=1, metadata={"help": "PARTIAL-k: the last k blocks train (1 .. depth)"})

    def __post_init__(self) -> None:
        check_count("partial_k", self.partial_k, 1, None, "--partial-k", "")


def trainable(settings: Any, depth: int) -> tuple[str, ...]:
    """The last k blocks, the final norm and the head (k checked against ``depth``)."""
    k = (settings or PartialSettings()).partial_k
    check_count("partial_k", k, 1, depth, "--partial-k", f"the backbone has {depth} blocks")
    return (*(f"backbone.blocks.{i}.*" for i in range(depth - k, depth)), "backbone.norm.*", *HEAD_PATTERNS)


def build_partial(context: BuildContext) -> nn.Module:
    """A copy of the backbone whose last k blocks and final norm train, and the head."""
    depth = len(context.backbone.blocks)
    return tuned_backbone_classifier(context, trainable(context.settings, depth))


METHOD = register_method(
    TransferMethod(
        name="partial",
        label="PARTIAL-{partial_k}",
        kind=MethodKind.TUNING,
        paper="Jia et al., Visual Prompt Tuning, ECCV 2022 ('Partial-k'); Yosinski et al., NeurIPS 2014",
        trains=trainable,
        trains_text="last k blocks + final norm + head",
        reads=("train800", "val200"),
        build=build_partial,
        settings=PartialSettings,
        base_lr=1e-3,
        order=21,
    )
)

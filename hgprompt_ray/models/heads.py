"""Classification heads on a ViT's CLS feature shared by prompt training and transfer.

:func:`linear_head` is MAE's linear-probe head (BatchNorm without affine parameters, then a
zero-initialised linear layer) with running statistics (:class:`RunningNorm`): every transfer
method's head (``hgprompt_ray.transfer.methods``), and the source prompts' head when
``PromptTrainingConfig.head`` is ``standardised``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["HEAD_BN_MOMENTUM", "RunningNorm", "linear_head"]

HEAD_BN_MOMENTUM = 0.1
"""Momentum of the head's BatchNorm statistics once warm (PyTorch's default: a running average
of the recent batches). MAE's probe keeps cumulative statistics (``momentum=None``), which is
exact for frozen features only: here the features move while a method trains (a prompt, biases, a
side network), and an average since step 0 standardises the final features with stale statistics.
Measured on ``count`` (lr x1, 4 epochs, val200 after each): VPT 0.325/0.410/0.490/0.525 with
cumulative statistics vs 0.400/0.415/0.535/0.545 with this momentum and 0.420/0.435/0.540/0.560
with statistics recomputed over train800; SideTune 0.310/0.295/0.180/0.220 vs 0.385/0.345/
0.415/0.380 recomputed. Recomputing them before every val200 score would cost a forward pass over
train800 per epoch; the lag it removes is largest mid-schedule and small at the end of the cosine
decay, where the test score is taken."""


class RunningNorm(nn.BatchNorm1d):
    """BatchNorm without affine parameters whose statistics are cumulative for the first
    ``1 / momentum`` batches, then a running average with ``momentum``: PyTorch's running average
    starts from mean 0 and variance 1 and would keep 0.9^n of them after n batches (7% after one
    epoch of train800), while a ViT's CLS features have large offsets."""

    def __init__(self, dim: int, momentum: float = HEAD_BN_MOMENTUM) -> None:
        super().__init__(dim, affine=False, momentum=momentum)
        self.warm_momentum = momentum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.momentum = max(1.0 / (int(self.num_batches_tracked) + 1), self.warm_momentum)
        return super().forward(x)


def linear_head(dim: int, num_classes: int) -> nn.Sequential:
    """MAE's linear-probe head: BatchNorm without affine parameters, then a zero-initialised
    linear layer. The raw CLS features of a ViT have large shared offsets that a zero-initialised
    head needs many steps to undo; standardised, a few steps suffice. The statistics are a running
    average (:class:`RunningNorm`), not MAE's cumulative one."""
    linear = nn.Linear(dim, num_classes)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    return nn.Sequential(RunningNorm(dim), linear)

"""The linear head whose loss defines the per-sample prompt gradients before any target tuning.

HGPrompt's alignment term compares the per-sample gradients g^i_j of the prompts P_i. They are
comparable only as gradients of the *same* target loss, and informative only if that loss is
not already near zero. Our choice (DESIGN.md section 2, "The loss behind g"):

* **shared** (the default): one multinomial logistic-regression head for every prompt, fitted
  on the *bare* backbone's CLS features (no prompt), so no prompt is favoured; and fitted on
  samples disjoint from those whose gradients it defines. The gradient samples are cut into
  ``SHARED_HEAD_FOLDS`` folds (:func:`cross_fit_folds`); fold f's head is fitted on every drawn
  sample of the split outside fold f and its held-out accuracy is measured on fold f. Then
  g^i_j = d CE(head_f(j)(f_i(x_j)), y_j) / d P_i for every prompt i.
* **per-prompt** (the earlier choice, kept to compare): a head (W_i, b_i) per prompt, fitted on
  that prompt's features of the gradient samples themselves. With d > N such heads separate the
  samples, the losses are near zero and so are the gradients, and each g^i is the gradient of a
  different loss: g^alpha then mixes incomparable things.

A head is fitted with an L2 penalty ``l2 * ||W||^2 / 2`` on the mean cross-entropy, by L-BFGS in
float64 from zeros (deterministic), on standardised features (a fixed per-feature scale, so one
``l2`` fits every backbone).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

from hgprompt_ray.core._checks import to_numpy
from hgprompt_ray.errors import InvalidValueError, invalid_value

__all__ = ["SHARED_HEAD_FOLDS", "ProbeHead", "cross_fit_folds", "fit_probe_head"]

SHARED_HEAD_FOLDS = 2
"""Folds of the shared head's cross-fitting over the gradient samples."""


class ProbeHead(NamedTuple):
    """logits = ((f - shift) / scale) @ weight.T + bias.

    Attributes:
        weight: (C, d) float64.
        bias: (C,) float64.
        shift: (d,) feature means of the fit set.
        scale: (d,) feature standard deviations of the fit set (floored).
        train_accuracy: accuracy of the head on the features it was fitted on.
    """

    weight: np.ndarray
    bias: np.ndarray
    shift: np.ndarray
    scale: np.ndarray
    train_accuracy: float

    def folded(
        self, dtype: torch.dtype = torch.float32, device: Any = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(W', b') with the standardisation folded in: logits = f @ W'.T + b'; (C, d), (C,)."""
        weight = self.weight / self.scale[None, :]
        bias = self.bias - weight @ self.shift
        return (
            torch.as_tensor(weight, dtype=dtype, device=device),
            torch.as_tensor(bias, dtype=dtype, device=device),
        )


def fit_probe_head(
    features: Any, labels: Any, num_classes: int, *, l2: float = 1e-2, max_iterations: int = 200
) -> ProbeHead:
    """Fit the head (see the module docstring).

    Args:
        features: (N, d).
        labels: (N,) integers in [0, num_classes).
        num_classes: C (classes absent from ``labels`` get logits that never win).
        l2: penalty on the weights of standardised features.
        max_iterations: L-BFGS iterations.
    """
    x = to_numpy(features, "features").astype(np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or y.shape != (x.shape[0],) or x.shape[0] < 2:
        raise InvalidValueError(
            invalid_value("features/labels shapes", (x.shape, y.shape), "must be (N, d) and (N,), N >= 2", "")
        )
    if num_classes < 2 or y.min() < 0 or y.max() >= num_classes:
        raise InvalidValueError(
            invalid_value("labels", (int(y.min()), int(y.max())), f"must lie in [0, {num_classes})", "")
        )
    if not (l2 > 0):
        raise InvalidValueError(invalid_value("l2", l2, "must be positive", "Use e.g. 1e-2."))
    shift = x.mean(axis=0)
    scale = np.maximum(x.std(axis=0), 1e-6)
    z = torch.from_numpy((x - shift) / scale)
    target = torch.from_numpy(y.astype(np.int64))
    weight = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], max_iter=max_iterations, tolerance_grad=1e-9, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ weight.T + bias, target) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        accuracy = float(((z @ weight.T + bias).argmax(1) == target).double().mean())
    return ProbeHead(weight.detach().numpy(), bias.detach().numpy(), shift, scale, accuracy)


def cross_fit_folds(gradient_positions: Any, num_folds: int = SHARED_HEAD_FOLDS) -> list[np.ndarray]:
    """Split the gradient samples into ``num_folds`` folds (every ``num_folds``-th, in order).

    Fold f's head is fitted on the split's samples outside fold f, so the head that defines a
    sample's gradient never saw that sample.

    Shape:
        gradient_positions: (G,) distinct positions; returns ``num_folds`` arrays, together (G,).
    """
    positions = np.asarray(gradient_positions, dtype=np.int64)
    if positions.ndim != 1 or len(np.unique(positions)) != positions.size:
        raise InvalidValueError(
            invalid_value("gradient_positions", positions.tolist(), "must be distinct positions", "")
        )
    if not isinstance(num_folds, int) or num_folds < 2 or num_folds > positions.size:
        raise InvalidValueError(
            invalid_value("num_folds", num_folds, f"must be in [2, {positions.size}]", "Draw more gradient samples.")
        )
    return [positions[f::num_folds] for f in range(num_folds)]

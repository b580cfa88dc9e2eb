"""The linear head whose loss defines the per-sample prompt gradients before any target tuning.

DESIGN.md leaves the loss of g^i_j open ("a linear head fitted on the features"). Our choice:
for each source prompt P_i, a multinomial logistic-regression head (W_i, b_i) is fitted on the
target's features f_i(X) of the gradient split (L2 penalty ``l2 * ||W||^2 / 2`` on the mean
cross-entropy, L-BFGS in float64 from zeros: deterministic). The per-sample gradient is then
g^i_j = d CE(W_i f_i(x_j) + b_i, y_j) / d P_i — the same loss that target tuning descends, so
L_align measures how differently the prompts' gradients would move a tuned prompt. Features are
standardised by the head (a fixed per-feature scale) so one ``l2`` fits every backbone.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

from hgprompt_ray.core._checks import to_numpy
from hgprompt_ray.errors import InvalidValueError, invalid_value

__all__ = ["ProbeHead", "fit_probe_head"]


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

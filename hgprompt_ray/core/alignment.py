"""Gradient-variance alignment L_align(alpha) from streamed, mergeable statistics.

Per-sample gradients g^i_j (prompt i, sample j, flattened to p = m * d coordinates) define,
with g^alpha_j = sum_k alpha_k g^k_j,

    v_i(alpha)    = Var_j( g^i_j - g^alpha_j )            per coordinate, a vector in R^p
    vbar(alpha)   = sum_i alpha_i v_i(alpha)
    L_align(alpha) = 1/M sum_i || v_i(alpha) - vbar(alpha) ||^2

Per coordinate c, g^i_jc - g^alpha_jc = (e_i - alpha)^T g_jc with g_jc in R^M, so
Var_j = (e_i - alpha)^T S_c (e_i - alpha), where S_c is the M x M covariance over samples of the
M gradients at coordinate c. The (p, M, M) stack of S_c is all L_align needs: memory M * M * p,
independent of N. It is accumulated in one streaming pass (Welford), and partial statistics
from disjoint sample shards merge exactly (Chan et al.'s parallel update), so Ray workers can
each accumulate their part. Var uses the unbiased N - 1 denominator (like ``torch.var``).

Normalisation (our choice, documented): gradients' scale varies by orders of magnitude across
backbones and targets, so the solver can divide L_align by
``alignment_scale(S) = sum_c (tr(S_c) / M)^2``, the squared mean gradient variance summed over
coordinates. That ratio is invariant to rescaling the gradients, which keeps lambda's range
transferable between targets. ``alignment_loss`` itself is the raw formula.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

from hgprompt_ray.core._checks import to_numpy
from hgprompt_ray.errors import InvalidValueError, invalid_value

__all__ = [
    "GradientMoments",
    "alignment_loss",
    "alignment_loss_torch",
    "alignment_scale",
    "empty_gradient_moments",
    "gradient_covariance",
    "merge_gradient_moments",
    "update_gradient_moments",
]


class GradientMoments(NamedTuple):
    """Streaming first and second moments of M prompts' per-sample gradients.

    Attributes:
        num_samples: samples seen, N.
        mean: per-coordinate mean gradient of each prompt, (p, M) float64.
        m2: per-coordinate sum over samples of outer products of deviations from the mean,
            (p, M, M) float64 (Welford's M2; covariance = m2 / (N - 1)).
    """

    num_samples: int
    mean: np.ndarray
    m2: np.ndarray

    @property
    def num_prompts(self) -> int:
        return int(self.mean.shape[1])

    @property
    def num_coordinates(self) -> int:
        return int(self.mean.shape[0])

    def subset(self, indices: Any) -> GradientMoments:
        """Moments of the prompts at ``indices`` (in that order)."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.ndim != 1 or idx.size == 0 or idx.min() < 0 or idx.max() >= self.num_prompts:
            raise InvalidValueError(
                invalid_value("indices", idx.tolist(), f"must be positions in [0, {self.num_prompts})", "")
            )
        return GradientMoments(self.num_samples, self.mean[:, idx], self.m2[:, idx][:, :, idx])


def empty_gradient_moments(num_prompts: int, num_coordinates: int) -> GradientMoments:
    """Moments of no samples, to be updated batch by batch."""
    for name, value in (("num_prompts", num_prompts), ("num_coordinates", num_coordinates)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise InvalidValueError(invalid_value(name, value, "must be a positive integer", ""))
    return GradientMoments(
        num_samples=0,
        mean=np.zeros((num_coordinates, num_prompts)),
        m2=np.zeros((num_coordinates, num_prompts, num_prompts)),
    )


def merge_gradient_moments(first: GradientMoments, second: GradientMoments) -> GradientMoments:
    """Exact moments of the union of two disjoint sample sets (Chan et al., 1979).

    M2 = M2_a + M2_b + delta delta^T * n_a n_b / n, delta = mean_b - mean_a (per coordinate).
    """
    if first.mean.shape != second.mean.shape:
        raise InvalidValueError(
            invalid_value(
                "second.mean.shape",
                second.mean.shape,
                f"must equal first.mean.shape {first.mean.shape} (same prompts, same coordinates)",
                "Merge statistics of the same prompt set only.",
            )
        )
    if first.num_samples == 0:
        return second
    if second.num_samples == 0:
        return first
    total = first.num_samples + second.num_samples
    delta = second.mean - first.mean  # (p, M)
    mean = first.mean + delta * (second.num_samples / total)
    m2 = (
        first.m2
        + second.m2
        + np.einsum("pi,pj->pij", delta, delta) * (first.num_samples * second.num_samples / total)
    )
    return GradientMoments(num_samples=total, mean=mean, m2=m2)


def update_gradient_moments(moments: GradientMoments, gradients: Any) -> GradientMoments:
    """Fold a batch of per-sample gradients into the moments.

    Args:
        moments: the running moments.
        gradients: the batch; for each of B samples, each prompt's flattened gradient.

    Shape:
        gradients: (B, M, p) (numpy or torch; converted to float64).
    """
    batch = to_numpy(gradients, "gradients").astype(np.float64, copy=False)
    if batch.ndim != 3 or batch.shape[1:] != (moments.num_prompts, moments.num_coordinates):
        raise InvalidValueError(
            invalid_value(
                "gradients.shape",
                batch.shape,
                f"must be (B, {moments.num_prompts}, {moments.num_coordinates})",
                "Pass (samples, prompts, flattened prompt coordinates).",
            )
        )
    if batch.shape[0] == 0:
        return moments
    if not np.all(np.isfinite(batch)):
        raise InvalidValueError(invalid_value("gradients", "NaN/inf entries", "must be finite", ""))
    per_coordinate = batch.transpose(0, 2, 1)  # (B, p, M)
    mean = per_coordinate.mean(axis=0)
    centred = per_coordinate - mean
    m2 = np.einsum("bpi,bpj->pij", centred, centred)
    return merge_gradient_moments(moments, GradientMoments(num_samples=batch.shape[0], mean=mean, m2=m2))


def gradient_covariance(moments: GradientMoments) -> np.ndarray:
    """S_c for every coordinate c, the unbiased (N - 1) covariance over samples.

    Shape:
        returns: (p, M, M).
    """
    if moments.num_samples < 2:
        raise InvalidValueError(
            invalid_value(
                "moments.num_samples", moments.num_samples, "must be at least 2 to estimate a variance", ""
            )
        )
    return moments.m2 / (moments.num_samples - 1)


def alignment_scale(covariance: Any) -> float:
    """sum_c (tr(S_c) / M)^2: the gradient-scale normaliser of L_align (module docstring)."""
    cov = to_numpy(covariance, "covariance")
    mean_variance = np.trace(cov, axis1=1, axis2=2) / cov.shape[1]
    return float(np.sum(mean_variance**2))


def alignment_loss_torch(covariance: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Differentiable L_align(alpha) for one weight vector or a batch.

    v[c, i] = S_c[i, i] - 2 (S_c alpha)_i + alpha^T S_c alpha.

    Shape:
        covariance: (p, M, M); alpha: (M,) or (S, M); returns a scalar or (S,).
    """
    batched = alpha.dim() == 2
    a = (alpha if batched else alpha.unsqueeze(0)).to(covariance.dtype)
    if a.shape[-1] != covariance.shape[1]:
        raise InvalidValueError(
            invalid_value("alpha.shape", tuple(alpha.shape), f"must end in M={covariance.shape[1]}", "")
        )
    diagonal = torch.diagonal(covariance, dim1=1, dim2=2)  # (p, M)
    s_alpha = torch.einsum("pij,sj->spi", covariance, a)  # (S, p, M)
    quadratic = torch.einsum("spi,si->sp", s_alpha, a)  # (S, p)
    variances = diagonal.unsqueeze(0) - 2.0 * s_alpha + quadratic.unsqueeze(-1)  # (S, p, M)
    mixed = torch.einsum("spi,si->sp", variances, a)  # vbar
    loss = (variances - mixed.unsqueeze(-1)).pow(2).sum(dim=(1, 2)) / a.shape[-1]
    return loss if batched else loss[0]


def alignment_loss(covariance: Any, alpha: Any) -> float:
    """L_align(alpha) as a float.

    Shape:
        covariance: (p, M, M); alpha: (M,).
    """
    cov = torch.as_tensor(to_numpy(covariance, "covariance"), dtype=torch.float64)
    weights = torch.as_tensor(to_numpy(alpha, "alpha"), dtype=torch.float64)
    with torch.no_grad():
        return float(alignment_loss_torch(cov, weights))

"""Gradient alignment L_align(alpha) (the paper's formula) from streamed, mergeable statistics.

Per-sample gradients g^i_j (prompt i, sample j, flattened to p = m * d coordinates) define,
with g^alpha_j = sum_k alpha_k g^k_j (HGPrompt, arXiv 2504.12311, read literally),

    v_i(alpha)     = 1/(N-1) sum_j ( g^i_j - g^alpha_j )^2     per coordinate, a vector in R^p
    vbar(alpha)    = sum_i alpha_i v_i(alpha)
    L_align(alpha) = 1/M sum_i || v_i(alpha) - vbar(alpha) ||^2

v_i is an *uncentred* second moment: it keeps the difference between the prompts' mean
gradients (prompts that push the shared parameters in different directions on average are
misaligned even when their fluctuations agree), which a centred variance would throw away.

**Exact trick.** Per coordinate c, g^i_jc - g^alpha_jc = (e_i - alpha)^T g_jc with g_jc in R^M, so
v_i,c = (e_i - alpha)^T R_c (e_i - alpha) with the M x M second-moment matrix
R_c = 1/(N-1) sum_j g_jc g_jc^T. The (p, M, M) stack of R_c is all L_align needs: memory
M * M * p and evaluation cost O(p M^2), both independent of N. The stream keeps Welford's mean
and M2 (numerically stable; shards from Ray workers merge exactly by Chan et al.'s update), and
R_c = (M2_c + N mu_c mu_c^T) / (N - 1) (:func:`gradient_second_moment`).

**Centred variant (an option, never the default).** ``centred=True`` replaces R_c by the
covariance S_c = M2_c / (N - 1), i.e. v_i becomes the sample variance of g^i - g^alpha; it is
blind to prompts whose gradients differ only by a constant.

**A property to know: at M = 2 the term only pulls to the average.** With alpha = (a, 1 - a) and
q_c = (1, -1) R_c (1, -1)^T = 1/(N-1) sum_j (g^1_jc - g^2_jc)^2,

    v_1 = (1 - a)^2 q,   v_2 = a^2 q,   L_align(a) = (1 - 2a)^2 ((1 - a)^2 + a^2) ||q||^2 / 2,

so for any gradients (unless g^1 = g^2 on every sample, when L_align is identically 0) the term
vanishes only at alpha = (1/2, 1/2): at M = 2 a large lambda pulls the weights to the average
whatever the gradients say.

**Normalisation (the solver's, fixed and documented).** Gradient scales differ by orders of
magnitude between backbones and targets, and L_align scales with the fourth power of the
gradients. :func:`alignment_scale` = sum_c (tr(R_c) / M)^2, the squared mean second moment summed
over coordinates, computed from the same (uncentred) R; L_align / alignment_scale is invariant to
rescaling the gradients. ``hgprompt_ray.core.simplex.solve_weights`` divides by it (setting
``normalize_alignment``), so lambda is in units of that ratio; the functions here return the
raw formula.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
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
    "gradient_second_moment",
    "merge_gradient_moments",
    "update_gradient_moments",
]


class GradientMoments(NamedTuple):
    """Streaming first and second moments of M prompts' per-sample gradients.

    Attributes:
        num_samples: samples seen, N.
        mean: per-coordinate mean gradient of each prompt, (p, M) float64.
        m2: per-coordinate sum over samples of outer products of deviations from the mean,
            (p, M, M) float64 (Welford's M2; covariance = m2 / (N - 1), second moment
            R = (m2 + N mean mean^T) / (N - 1)).
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
    m2 = np.add(first.m2, second.m2)
    outer = delta[:, :, None] * delta[:, None, :]  # exactly symmetric
    outer *= first.num_samples * second.num_samples / total
    m2 += outer
    return GradientMoments(num_samples=total, mean=mean, m2=m2)


def update_gradient_moments(moments: GradientMoments, gradients: Any) -> GradientMoments:
    """Fold a batch of per-sample gradients into the moments.

    Args:
        moments: the running moments.
        gradients: the batch; for each of B samples, each prompt's flattened gradient.

    Shape:
        gradients: (B, M, p) (numpy or torch; converted to float64).
    """
    batch = to_numpy(gradients, "gradients")
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
    centred = np.array(batch, dtype=np.float64)  # a copy: centred in place
    mean = centred.mean(axis=0)  # (M, p)
    centred -= mean
    return merge_gradient_moments(
        moments,
        GradientMoments(
            num_samples=batch.shape[0], mean=np.ascontiguousarray(mean.T), m2=_outer_sums(centred)
        ),
    )


_CHUNK = 4096
"""Coordinates per block of :func:`_outer_sums`: the block's accumulator stays in cache."""


def _outer_sums(centred: np.ndarray) -> np.ndarray:
    """sum_b x_bc x_bc^T for every coordinate c: Welford's M2 of one centred batch.

    B M (M + 1) / 2 multiply-adds per coordinate, as in-place multiply-adds of each sample's rows
    into the upper triangle of an (M, M, block) accumulator, block by block of coordinates; the
    coordinate range is split between ``torch.get_num_threads()`` Python threads (numpy releases
    the GIL). About ten times faster here than a batched product of p tiny (M x B) matrices, and
    it needs no barrier per operation, so it keeps its speed when other processes share the cores
    (fine-grained OpenMP loops do not). Few coordinates: one ``einsum``.

    Shape:
        centred: (B, M, p) float64; returns (p, M, M) float64, symmetric.
    """
    _, num_prompts, num_coordinates = centred.shape
    if num_coordinates < _CHUNK:
        return np.einsum("bip,bjp->pij", centred, centred)
    sums = np.zeros((num_prompts, num_prompts, num_coordinates))
    workers = max(1, min(torch.get_num_threads(), num_coordinates // _CHUNK))
    bounds = np.linspace(0, num_coordinates, workers + 1).round().astype(int)
    ranges = list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))
    if workers == 1:
        _accumulate_outer(centred, sums, 0, num_coordinates)
    else:
        with ThreadPoolExecutor(workers) as pool:
            for done in [pool.submit(_accumulate_outer, centred, sums, lo, hi) for lo, hi in ranges]:
                done.result()
    for k in range(1, num_prompts):
        sums[k, :k] = sums[:k, k]
    return np.ascontiguousarray(sums.transpose(2, 0, 1))


def _accumulate_outer(centred: np.ndarray, sums: np.ndarray, low: int, high: int) -> None:
    """The upper triangle of :func:`_outer_sums` for coordinates [low, high), in place."""
    num_prompts = centred.shape[1]
    scratch = np.empty((num_prompts, _CHUNK))
    for begin in range(low, high, _CHUNK):
        end = min(begin + _CHUNK, high)
        block, target = centred[:, :, begin:end], sums[:, :, begin:end]
        for sample in block:  # (M, block)
            for k in range(num_prompts):
                product = scratch[: num_prompts - k, : end - begin]
                np.multiply(sample[k], sample[k:], out=product)
                target[k, k:] += product


def gradient_second_moment(moments: GradientMoments, centred: bool = False) -> np.ndarray:
    """R_c = 1/(N-1) sum_j g_jc g_jc^T for every coordinate c: the matrix L_align needs.

    From the streamed moments, R_c = (M2_c + N mu_c mu_c^T) / (N - 1). With ``centred=True`` it
    is the covariance S_c = M2_c / (N - 1) instead (the centred variant; module docstring).

    Args:
        moments: streamed moments of M prompts' per-sample gradients (at least 2 samples).
        centred: drop the mean gradients (the covariance) instead of keeping them.

    Shape:
        returns: (p, M, M) float64, symmetric positive semi-definite per coordinate.

    Raises:
        InvalidValueError: fewer than 2 samples.
    """
    if not isinstance(moments, GradientMoments):
        raise TypeError(
            invalid_value(
                "moments", type(moments).__name__, "must be GradientMoments", "Stream the gradients first."
            )
        )
    if moments.num_samples < 2:
        raise InvalidValueError(
            invalid_value(
                "moments.num_samples",
                moments.num_samples,
                "must be at least 2 to estimate a second moment with the N - 1 denominator",
                "Stream more gradient samples.",
            )
        )
    if centred:
        return moments.m2 / (moments.num_samples - 1)
    outer = np.einsum("pi,pj->pij", moments.mean, moments.mean)
    return (moments.m2 + moments.num_samples * outer) / (moments.num_samples - 1)


def gradient_covariance(moments: GradientMoments) -> np.ndarray:
    """S_c = M2_c / (N - 1): the centred covariance (``gradient_second_moment(..., centred=True)``).

    Not what the paper's L_align uses; kept for the centred variant and for checks of the
    streamed statistics.

    Shape:
        returns: (p, M, M).
    """
    return gradient_second_moment(moments, centred=True)


def _matrix(statistics: Any, centred: bool, name: str) -> np.ndarray:
    """The (p, M, M) matrix from moments, or a precomputed matrix as given."""
    if isinstance(statistics, GradientMoments):
        return gradient_second_moment(statistics, centred=centred)
    if centred:
        raise InvalidValueError(
            invalid_value(
                "centred",
                centred,
                f"applies only when {name} is GradientMoments (a precomputed matrix is already one form)",
                "Pass the moments, or gradient_second_moment(moments, centred=True) with centred=False.",
            )
        )
    matrix = to_numpy(statistics, name)
    if matrix.ndim != 3 or matrix.shape[1] != matrix.shape[2] or matrix.shape[1] < 1:
        raise InvalidValueError(
            invalid_value(
                f"{name}.shape", matrix.shape, "must be (p, M, M)", "Pass gradient_second_moment(moments)."
            )
        )
    return matrix


def alignment_scale(statistics: GradientMoments | np.ndarray | torch.Tensor, centred: bool = False) -> float:
    """sum_c (tr(R_c) / M)^2: the gradient-scale normaliser of L_align (module docstring).

    Args:
        statistics: streamed ``GradientMoments`` or a precomputed matrix (the same R the loss
            uses, e.g. ``gradient_second_moment(moments)``).
        centred: with moments, use the covariance instead of R (the centred variant).

    Shape:
        statistics: moments of M prompts or (p, M, M); returns a float (0.0 for zero gradients).
    """
    matrix = _matrix(statistics, centred, "statistics")
    mean_second_moment = np.trace(matrix, axis1=1, axis2=2) / matrix.shape[1]
    return float(np.sum(mean_second_moment**2))


def alignment_loss_torch(
    statistics: GradientMoments | torch.Tensor, alpha: torch.Tensor, centred: bool = False
) -> torch.Tensor:
    """Differentiable L_align(alpha) for one weight vector or a batch.

    v[c, i] = (e_i - alpha)^T R_c (e_i - alpha) = R_c[i, i] - 2 (R_c alpha)_i + alpha^T R_c alpha.

    Args:
        statistics: streamed ``GradientMoments``, or a precomputed (p, M, M) tensor (R from
            :func:`gradient_second_moment`, or a subset of it; the solver precomputes it once).
        alpha: weights; the formula is exact for any alpha.
        centred: with moments, the centred variant (covariance instead of R).

    Shape:
        statistics: (p, M, M); alpha: (M,) or (S, M); returns a scalar or (S,).
    """
    if isinstance(statistics, GradientMoments):
        matrix = torch.from_numpy(gradient_second_moment(statistics, centred=centred))
    else:
        if centred:
            _matrix(statistics, centred, "statistics")  # raises: a matrix is already one form
        matrix = statistics
        if matrix.dim() != 3 or matrix.shape[1] != matrix.shape[2]:
            raise InvalidValueError(
                invalid_value("statistics.shape", tuple(matrix.shape), "must be (p, M, M)", "")
            )
    batched = alpha.dim() == 2
    a = (alpha if batched else alpha.unsqueeze(0)).to(matrix.dtype)
    if a.dim() != 2 or a.shape[-1] != matrix.shape[1]:
        raise InvalidValueError(
            invalid_value(
                "alpha.shape", tuple(alpha.shape), f"must be (M,) or (S, M) with M={matrix.shape[1]}", ""
            )
        )
    diagonal = torch.diagonal(matrix, dim1=1, dim2=2)  # (p, M)
    r_alpha = torch.einsum("pij,sj->spi", matrix, a)  # (S, p, M)
    quadratic = torch.einsum("spi,si->sp", r_alpha, a)  # (S, p)
    second_moments = diagonal.unsqueeze(0) - 2.0 * r_alpha + quadratic.unsqueeze(-1)  # v: (S, p, M)
    mixed = torch.einsum("spi,si->sp", second_moments, a)  # vbar
    loss = (second_moments - mixed.unsqueeze(-1)).pow(2).sum(dim=(1, 2)) / a.shape[-1]
    return loss if batched else loss[0]


def alignment_loss(
    statistics: GradientMoments | np.ndarray | torch.Tensor, alpha: Any, centred: bool = False
) -> float:
    """L_align(alpha) as a float: the paper's uncentred formula by default.

    Args:
        statistics: streamed ``GradientMoments`` (from :func:`empty_gradient_moments` and
            :func:`update_gradient_moments`), or a precomputed (p, M, M) matrix R
            (:func:`gradient_second_moment`, or a prompt subset of it).
        alpha: the weights.
        centred: with moments, the centred variant (an option, not the paper's formula).

    Shape:
        statistics: moments of M prompts or (p, M, M); alpha: (M,).
    """
    # np.array copies: Ray's zero-copy arrays are read-only, which torch warns about
    matrix = torch.from_numpy(np.array(_matrix(statistics, centred, "statistics"), dtype=np.float64))
    weights = torch.from_numpy(np.array(to_numpy(alpha, "alpha"), dtype=np.float64))
    if weights.dim() != 1:
        raise InvalidValueError(invalid_value("alpha.shape", tuple(weights.shape), "must be (M,)", ""))
    with torch.no_grad():
        return float(alignment_loss_torch(matrix, weights))

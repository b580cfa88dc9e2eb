"""The one-sided H-score and its Ledoit-Wolf regularised form.

H(f) = tr( cov(f)^-1 cov(E[f | Y]) )   (Bao et al., "An Information-Theoretic Approach to
Transferability in Task Transfer Learning", ICIP 2019), as tllib computes it
(``tllib/ranking/hscore.py``), and the shrinkage form of Ibrahim et al., "Newer is not always
better: Rethinking transferability metrics, their peculiarities, stability and performance",
ECML-PKDD 2022 (tllib's ``regularized_h_score``).

Two families:

* numpy, exactly tllib's formulas (``h_score``, ``regularized_h_score``): references and
  reporting. ``h_score`` keeps tllib's pseudo-inverse (rcond 1e-15).
* torch float64, differentiable (``regularized_h_score_torch``, and ``trace_solve`` under the
  exact ensemble H-score): a Cholesky solve instead of an inverse, falling back to a
  pseudo-inverse only when the matrix is singular.

Labels may be any integers: only values that occur become classes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hgprompt_ray.core._checks import check_features_labels

__all__ = [
    "class_mean_deviations",
    "h_score",
    "ledoit_wolf_shrinkage",
    "ledoit_wolf_torch",
    "regularized_h_score",
    "regularized_h_score_torch",
    "trace_solve",
]


def _class_mean_features(f: np.ndarray, codes: np.ndarray, num_classes: int) -> np.ndarray:
    """Each sample's class-mean feature, g_n = E[f | y = y_n]."""
    sums = np.zeros((num_classes, f.shape[1]))
    np.add.at(sums, codes, f)
    means = sums / np.bincount(codes, minlength=num_classes)[:, None]
    return means[codes]


def h_score(features: Any, labels: Any) -> float:
    """One-sided H-score, exactly as tllib computes it.

    ``tr(pinv(np.cov(f), rcond=1e-15) @ np.cov(g))`` with g the per-sample class-mean feature and
    ``np.cov``'s N - 1 denominator.

    Shape:
        features: (N, d); labels: (N,) integers.

    Raises:
        InvalidValueError: N < 2, fewer than 2 classes, NaN/inf, or mismatched shapes.
    """
    f, codes, counts = check_features_labels(features, labels)
    g = _class_mean_features(f, codes, counts.size)
    cov_f = np.atleast_2d(np.cov(f, rowvar=False))
    cov_g = np.atleast_2d(np.cov(g, rowvar=False))
    return float(np.trace(np.linalg.pinv(cov_f, rcond=1e-15) @ cov_g))


def ledoit_wolf_shrinkage(centered: np.ndarray) -> tuple[float, np.ndarray]:
    """Ledoit-Wolf shrinkage of centred data, as scikit-learn's ``LedoitWolf`` computes it.

    Returns:
        (a, S_a): the shrinkage in [0, 1] and (1 - a) * S + a * mu * I, where S = X^T X / N
        (the maximum-likelihood covariance) and mu = tr(S) / d.

    Shape:
        centered: (N, d) with zero column means.
    """
    x = torch.from_numpy(np.ascontiguousarray(centered, dtype=np.float64))
    shrinkage, shrunk = ledoit_wolf_torch(x)
    return float(shrinkage), shrunk.numpy()


def regularized_h_score(features: Any, labels: Any) -> float:
    """H-score with a Ledoit-Wolf shrinkage covariance, as tllib's ``regularized_h_score``.

    Centre f (float64), fit Ledoit-Wolf (shrinkage a, shrunk covariance S_a), and return
    ``tr(pinv(S_a) @ (1 - a) * np.cov(g))``.

    Shape:
        features: (N, d); labels: (N,) integers.
    """
    f, codes, counts = check_features_labels(features, labels)
    f = f - f.mean(axis=0, keepdims=True)
    shrinkage, shrunk = ledoit_wolf_shrinkage(f)
    g = _class_mean_features(f, codes, counts.size)
    cov_g = np.atleast_2d(np.cov(g, rowvar=False))
    return float(np.trace(np.linalg.pinv(shrunk, rcond=1e-15) @ ((1.0 - shrinkage) * cov_g)))


# ---------------------------------------------------------------------------- torch, differentiable
def ledoit_wolf_torch(centered: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable Ledoit-Wolf shrinkage (scikit-learn's formula) of centred data.

    Shape:
        centered: (N, d) float64 with zero column means.
        returns: (shrinkage scalar, shrunk covariance (d, d)).
    """
    n, d = centered.shape
    emp = centered.T @ centered / n
    trace = torch.diagonal(emp).sum()
    if d == 1:  # scikit-learn: no shrinkage for a single feature
        return torch.zeros((), dtype=emp.dtype), emp
    fourth = (centered.pow(2).sum(dim=1) ** 2).sum()  # sum_n ||x_n||^4
    return _shrink(emp, trace, fourth, n)


def _shrink(
    emp: torch.Tensor, trace: torch.Tensor, fourth: torch.Tensor, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ledoit-Wolf from the MLE covariance S, tr(S) and sum_n ||x_n||^4 (all N-independent).

    scikit-learn's ``ledoit_wolf_shrinkage`` written in these sufficient statistics:
    delta_ = ||S||_F^2, beta = (sum_n ||x_n||^4 / N - delta_) / (d N),
    delta = (delta_ - 2 mu tr(S) + d mu^2) / d, a = min(beta, delta) / delta (0 if beta = 0).

    Shape:
        emp: (d, d) or (S, d, d); trace, fourth: () or (S,). Returns (shrinkage, shrunk).
    """
    d = emp.shape[-1]
    mu = trace / d
    delta_sum = (emp * emp).sum(dim=(-2, -1))
    beta = (fourth / n - delta_sum) / (d * n)
    delta = (delta_sum - 2.0 * mu * trace + d * mu * mu) / d
    beta = torch.minimum(beta, delta)
    degenerate = (beta.detach() == 0) | (delta.detach() <= 0)
    shrinkage = torch.where(degenerate, torch.zeros_like(beta), beta / torch.where(degenerate, 1.0, delta))
    eye = torch.eye(d, dtype=emp.dtype)
    shrunk = (1.0 - shrinkage)[..., None, None] * emp + (shrinkage * mu)[..., None, None] * eye
    return shrinkage, shrunk


class _TraceSolve(torch.autograd.Function):
    """t = sum_c w_c d_c^T A^-1 d_c with the closed-form gradient.

    With Z = A^-1 D^T: dt/dA = -Z diag(w) Z^T and dt/dD = 2 diag(w) Z^T, which costs O(d^2 C)
    instead of differentiating through the Cholesky factorisation (O(d^3)).
    """

    @staticmethod
    def forward(ctx: Any, mats: torch.Tensor, devs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        chol, info = torch.linalg.cholesky_ex(mats)
        solved = torch.cholesky_solve(devs.transpose(1, 2), chol)  # (S, d, C) = A^-1 D^T
        for s in torch.nonzero(info).flatten().tolist():  # not positive definite: pseudo-inverse
            solved[s] = torch.linalg.pinv(mats[s], rtol=1e-15, hermitian=True) @ devs[s].T
        ctx.save_for_backward(solved, weights)
        return ((devs.transpose(1, 2) * solved).sum(dim=1) * weights).sum(dim=1)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        solved, weights = ctx.saved_tensors
        weighted = solved * weights  # (S, d, C)
        grad_mats = -grad_output[:, None, None] * (weighted @ solved.transpose(1, 2))
        grad_devs = 2.0 * grad_output[:, None, None] * weighted.transpose(1, 2)
        return grad_mats, grad_devs, None


def trace_solve(matrix: torch.Tensor, deviations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """tr( matrix^-1 D^T diag(w) D ) = sum_c w_c d_c^T matrix^-1 d_c, by a Cholesky solve.

    Falls back to a pseudo-inverse (rcond 1e-15, like tllib) for a matrix that is not
    positive definite (rank-deficient covariance, e.g. d > N without shrinkage); the gradient
    then uses the same closed form with the pseudo-inverse. Differentiable in matrix and D.

    Shape:
        matrix: (d, d) or (S, d, d) symmetric PSD; deviations: (C, d) or (S, C, d);
        weights: (C,). Returns a scalar or (S,).
    """
    single = matrix.dim() == 2
    mats = matrix.unsqueeze(0) if single else matrix
    devs = deviations.unsqueeze(0) if single else deviations
    result = _TraceSolve.apply(mats, devs, weights)
    return result[0] if single else result


def class_mean_deviations(features: torch.Tensor, codes: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Class means minus the overall mean.

    Shape:
        features: (N, d); codes: (N,) in 0..C-1; counts: (C,); returns (C, d).
    """
    sums = torch.zeros(counts.numel(), features.shape[1], dtype=features.dtype)
    sums = sums.index_add(0, codes, features)
    means = sums / counts.to(features.dtype)[:, None]
    return means - features.mean(dim=0, keepdim=True)


def _prepare(features: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    f_np, codes, counts = check_features_labels(features, labels)
    if isinstance(features, torch.Tensor):
        f = features.to(torch.float64)  # keep the autograd graph
    else:
        f = torch.from_numpy(np.ascontiguousarray(f_np))
    return f, torch.from_numpy(codes), torch.from_numpy(counts)


def regularized_h_score_torch(features: Any, labels: Any) -> torch.Tensor:
    """Differentiable float64 Ledoit-Wolf H-score, equal to :func:`regularized_h_score`.

    Shape:
        features: (N, d); labels: (N,); returns a scalar tensor.
    """
    f, codes, counts = _prepare(features, labels)
    n = f.shape[0]
    centered = f - f.mean(dim=0, keepdim=True)
    shrinkage, shrunk = ledoit_wolf_torch(centered)
    deviations = class_mean_deviations(centered, codes, counts)
    return (1.0 - shrinkage) * trace_solve(shrunk, deviations, counts.to(f.dtype) / (n - 1))

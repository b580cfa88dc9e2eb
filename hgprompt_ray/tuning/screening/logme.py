"""Screening score ``logme``: LogME, the maximum log evidence of a Bayesian linear model of the
labels on the features (You, Liu, Wang, Long, "LogME: Practical Assessment of Pre-trained
Models for Transfer Learning", ICML 2021, Algorithm 1).

For features F (N x D) and each class c with the one-hot target y_c (N,), the model
y = F w + e, w ~ N(0, alpha^-1 I), e ~ N(0, beta^-1 I) has the log evidence

    L(alpha, beta) = N/2 log beta + D/2 log alpha - N/2 log 2 pi
                     - beta/2 ||F m - y||^2 - alpha/2 m^T m - 1/2 log |A|,
    A = alpha I + beta F^T F,   m = beta A^-1 F^T y.

It is maximised by the fixed point (MacKay's evidence updates, the paper's Algorithm 1)

    gamma = sum_i beta s_i / (alpha + beta s_i),  alpha <- gamma / m^T m,
    beta <- (N - gamma) / ||F m - y||^2,

with s_i the eigenvalues of F^T F. LogME = (1/C) sum_c L_c(alpha_c*, beta_c*) / N.

Everything is written in the thin SVD F = U diag(sigma) V^T (r = min(N, D) singular values,
s = sigma^2, z = U^T y): m^T m = sum (beta sigma z / (alpha + beta s))^2,
||F m - y||^2 = sum (alpha z / (alpha + beta s))^2 + ||y||^2 - ||z||^2 and
log |A| = sum log(alpha + beta s) + (D - r) log alpha, so one iteration costs O(r C) after one
SVD, for all classes at once. Features are used as given (not centred), as in the paper.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hgprompt_ray.core._checks import check_features_labels
from hgprompt_ray.tuning.screening.registry import register_screening_score

__all__ = ["log_maximum_evidence"]

_TINY = np.finfo(np.float64).tiny


def _terms(
    alpha: np.ndarray, beta: np.ndarray, s: np.ndarray, z: np.ndarray, residual_out: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(gamma, m^T m, ||F m - y||^2, denominators) per class at (alpha, beta)."""
    denominator = alpha[None, :] + beta[None, :] * s[:, None]  # (r, C)
    gamma = (beta[None, :] * s[:, None] / denominator).sum(axis=0)
    mean_norm = ((beta[None, :] * np.sqrt(s)[:, None] * z / denominator) ** 2).sum(axis=0)
    residual = ((alpha[None, :] * z / denominator) ** 2).sum(axis=0) + residual_out
    return gamma, np.maximum(mean_norm, _TINY), np.maximum(residual, _TINY), denominator


def log_maximum_evidence(
    features: Any, labels: Any, *, tolerance: float = 1e-10, max_iterations: int = 1000
) -> float:
    """LogME of the features for the labels (module docstring): larger = better transfer.

    Args:
        features: one prompt's target features.
        labels: the class of each sample (any integers; each value that occurs is a class).
        tolerance: stop when alpha and beta change by less than this, relatively.
        max_iterations: at most this many fixed-point updates.

    Shape:
        features: (N, D); labels: (N,).

    Raises:
        InvalidValueError: N < 2, fewer than 2 classes, NaN/inf, or mismatched shapes.
    """
    f, codes, counts = check_features_labels(features, labels)
    num_samples, dim = f.shape
    targets = np.eye(counts.size)[codes]  # (N, C) one-hot
    u, sigma, _ = np.linalg.svd(f, full_matrices=False)
    s = sigma**2
    z = u.T @ targets  # (r, C)
    residual_out = np.maximum((targets**2).sum(axis=0) - (z**2).sum(axis=0), 0.0)  # ||y - U U^T y||^2
    alpha = np.ones(counts.size)
    beta = np.ones(counts.size)
    for _ in range(max_iterations):
        gamma, mean_norm, residual, _ = _terms(alpha, beta, s, z, residual_out)
        new_alpha = gamma / mean_norm
        new_beta = (num_samples - gamma) / residual
        change = max(np.max(np.abs(new_alpha / alpha - 1)), np.max(np.abs(new_beta / beta - 1)))
        alpha, beta = np.maximum(new_alpha, _TINY), np.maximum(new_beta, _TINY)
        if change < tolerance:
            break
    _, mean_norm, residual, denominator = _terms(alpha, beta, s, z, residual_out)
    log_det = np.log(denominator).sum(axis=0) + (dim - s.size) * np.log(alpha)
    evidence = (
        num_samples / 2 * np.log(beta)
        + dim / 2 * np.log(alpha)
        - num_samples / 2 * np.log(2 * np.pi)
        - beta / 2 * residual
        - alpha / 2 * mean_norm
        - log_det / 2
    )
    return float(np.mean(evidence / num_samples))


@register_screening_score(
    "logme",
    help="LogME: the maximised log evidence per sample of a Bayesian linear model of the one-hot "
    "labels on f_i (You et al., ICML 2021)",
)
def logme_screening(features: np.ndarray, labels: np.ndarray) -> float:
    """:func:`log_maximum_evidence` as a screening score.

    Shape:
        features: (N, d); labels: (N,).
    """
    return log_maximum_evidence(features, labels)

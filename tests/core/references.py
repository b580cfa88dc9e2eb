"""Independent float64 numpy references for the core maths (written from the formulas).

The H-score references transcribe tllib's ``tllib/ranking/hscore.py``; Ledoit-Wolf comes from
scikit-learn. They share no code with ``hgprompt_ray.core``.
"""

from __future__ import annotations

import numpy as np
from sklearn.covariance import LedoitWolf


def class_mean_features(f: np.ndarray, y: np.ndarray) -> np.ndarray:
    g = np.zeros_like(f)
    for value in np.unique(y):
        g[y == value] = f[y == value].mean(axis=0)
    return g


def tllib_h_score(features: np.ndarray, labels: np.ndarray) -> float:
    f = features.astype(np.float64)
    cov_f = np.cov(f, rowvar=False)
    cov_g = np.cov(class_mean_features(f, labels), rowvar=False)
    return float(np.trace(np.dot(np.linalg.pinv(cov_f, rcond=1e-15), cov_g)))


def tllib_regularized_h_score(features: np.ndarray, labels: np.ndarray) -> float:
    f = features.astype(np.float64)
    f = f - np.mean(f, axis=0, keepdims=True)
    estimator = LedoitWolf(assume_centered=False).fit(f)
    shrinkage, cov_f = estimator.shrinkage_, estimator.covariance_
    cov_g = np.cov(class_mean_features(f, labels), rowvar=False)
    return float(np.trace(np.dot(np.linalg.pinv(cov_f, rcond=1e-15), (1 - shrinkage) * cov_g)))


def direct_alignment(gradients: np.ndarray, alpha: np.ndarray, centred: bool = False) -> float:
    """L_align from the full per-sample gradient stack (N, M, p), the paper's formula as written.

    v_i = 1/(N-1) sum_j (g^i_j - g^alpha_j)^2 per coordinate (uncentred); ``centred=True`` gives
    the sample variance instead (the centred variant). Loops over prompts and samples: O(N M p).
    """
    n, m, _ = gradients.shape
    v = []
    for i in range(m):
        differences = [gradients[j, i] - sum(alpha[k] * gradients[j, k] for k in range(m)) for j in range(n)]
        stack = np.array(differences)  # (N, p)
        if centred:
            stack = stack - stack.mean(axis=0)
        v.append((stack**2).sum(axis=0) / (n - 1))
    vbar = sum(alpha[i] * v[i] for i in range(m))
    return float(sum(((v[i] - vbar) ** 2).sum() for i in range(m)) / m)


def class_structured_features(
    rng: np.random.Generator, num_prompts: int, num_samples: int, dim: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """(M, N, d) features whose class structure differs in strength between prompts, and labels."""
    labels = rng.integers(0, num_classes, num_samples)
    strength = rng.uniform(0.2, 1.5, size=(num_prompts, 1, 1))
    centres = rng.normal(size=(num_prompts, num_classes, dim)) * strength
    mixing = rng.normal(size=(num_prompts, dim, dim)) / np.sqrt(dim)
    noise = rng.normal(size=(num_prompts, num_samples, dim)) @ mixing + 0.3 * rng.normal(
        size=(num_prompts, num_samples, dim)
    )
    return centres[:, labels] + noise, labels

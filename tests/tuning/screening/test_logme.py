"""LogME against an independent reference: the Gaussian marginal likelihood maximised by SciPy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import multivariate_normal

from hgprompt_ray.errors import InvalidValueError
from hgprompt_ray.tuning.screening import log_maximum_evidence


def _reference(features: np.ndarray, labels: np.ndarray) -> float:
    """mean_c max_{alpha, beta} log N(y_c; 0, beta^-1 I + alpha^-1 F F^T) / N: the evidence of
    the paper's model written as a marginal likelihood, with no SVD and no fixed point."""
    n = features.shape[0]
    gram = features @ features.T

    def negative_evidence(log_params: np.ndarray, target: np.ndarray) -> float:
        log_alpha, log_beta = log_params
        covariance = np.exp(-log_beta) * np.eye(n) + np.exp(-log_alpha) * gram
        return -float(multivariate_normal(np.zeros(n), covariance).logpdf(target))

    values = []
    for c in np.unique(labels):
        target = (labels == c).astype(np.float64)
        fits = [
            minimize(
                negative_evidence, start, args=(target,), method="Nelder-Mead",
                options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 5000},
            )
            for start in ([0.0, 0.0], [2.0, 1.0], [-2.0, 2.0])
        ]  # fmt: skip
        values.append(-min(fit.fun for fit in fits) / n)
    return float(np.mean(values))


def _data(n: int, d: int, classes: int, signal: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    rng.shuffle(labels)
    centres = rng.normal(size=(classes, d)) * signal
    return centres[labels] + rng.normal(size=(n, d)), labels


@pytest.mark.parametrize(("n", "d"), [(40, 5), (12, 20)])  # N > D, and more features than samples
def test_matches_the_maximised_marginal_likelihood(n, d):
    features, labels = _data(n, d, 3, signal=1.5)
    assert log_maximum_evidence(features, labels) == pytest.approx(_reference(features, labels), abs=1e-7)


def test_invariant_to_relabelling_and_higher_for_informative_features():
    features, labels = _data(200, 8, 4, signal=2.0, seed=1)
    permuted = np.array([7, -3, 5, 0])[labels]  # any integers: another name for each class
    assert log_maximum_evidence(features, permuted) == pytest.approx(log_maximum_evidence(features, labels))
    noise = np.random.default_rng(2).normal(size=features.shape)
    assert log_maximum_evidence(features, labels) > log_maximum_evidence(noise, labels) + 0.05


def test_bad_inputs_are_refused():
    features, labels = _data(20, 3, 2, signal=1.0)
    with pytest.raises(InvalidValueError, match="at least 2 classes"):
        log_maximum_evidence(features, np.zeros(20, dtype=int))
    with pytest.raises(InvalidValueError, match="must be finite"):
        log_maximum_evidence(np.full((20, 3), np.nan), labels)
    with pytest.raises(InvalidValueError, match=r"labels.shape must be \(20,\)"):
        log_maximum_evidence(features, labels[:5])

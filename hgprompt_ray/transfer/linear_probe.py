"""A linear probe: logistic regression on frozen features, C chosen on a validation split."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

__all__ = ["PROBE_GRID", "ProbeResult", "linear_probe"]

PROBE_GRID = (0.01, 0.1, 1.0, 10.0)


class ProbeResult(NamedTuple):
    """Test and validation accuracy of the probe, and the chosen C."""

    test_accuracy: float
    val_accuracy: float
    c: float


def linear_probe(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    grid: tuple[float, ...] = PROBE_GRID,
) -> ProbeResult:
    """Standardise on train, fit on train for each C in ``grid``, keep the best on val, score test.

    Shape:
        each pair: features (N, d), labels (N,).
    """
    scaler = StandardScaler().fit(train[0])
    xs = [scaler.transform(x) for x, _ in (train, val, test)]
    scored = []
    for c in grid:
        model = LogisticRegression(C=c, max_iter=3000).fit(xs[0], train[1])
        scored.append((model.score(xs[1], val[1]), c, model))
    val_accuracy, c, model = max(scored, key=lambda item: item[0])
    return ProbeResult(float(model.score(xs[2], test[1])), float(val_accuracy), float(c))

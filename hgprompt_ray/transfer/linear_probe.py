"""A linear probe: logistic regression on frozen features, C chosen on a validation split.

The fits run with one BLAS thread. Their matrices are small (800 x 384 features, a few classes),
and a threaded BLAS spends more time waking and spinning its threads than computing: on the
2-core machine, one probe (four C values) on count's features took 0.87 s with one thread and
12.8 s with the default two (``bench/bench_probe_threads.py``: 14.8x, the same C and accuracies),
43 s beside a feature extraction; the zero-shot matrix's 100 probes of one target took longer
than its 38,000 prompted forwards. The solver and its stopping rule are unchanged.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

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
    with threadpool_limits(limits=1):  # small fits: see the module docstring
        for c in grid:
            model = LogisticRegression(C=c, max_iter=3000).fit(xs[0], train[1])
            scored.append((model.score(xs[1], val[1]), c, model))
    val_accuracy, c, model = max(scored, key=lambda item: item[0])
    return ProbeResult(float(model.score(xs[2], test[1])), float(val_accuracy), float(c))

"""Screening score ``h-score``: each prompt's own regularised H-score on the target."""

from __future__ import annotations

import numpy as np

from hgprompt_ray.core import regularized_h_score
from hgprompt_ray.tuning.screening.registry import register_screening_score

__all__ = ["h_score_screening"]


@register_screening_score(
    "h-score",
    help="H(f_i) = tr(cov(f_i)^-1 cov(E[f_i|y])) with Ledoit-Wolf shrinkage (Bao et al. 2019; the "
    "solver's own score: equal to SearchStatistics.source_h_scores)",
)
def h_score_screening(features: np.ndarray, labels: np.ndarray) -> float:
    """H(f_i), exactly the per-source H-score the search reports (``per_source_h_scores`` of the
    ensemble statistics, regularised), computed from one prompt's features alone, so screening
    costs O(K N d^2) and never builds the K^2 statistics.

    Shape:
        features: (N, d); labels: (N,).
    """
    return regularized_h_score(features, labels)

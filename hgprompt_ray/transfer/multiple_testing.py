"""Holm-Bonferroni adjustment of a family of p-values.

The paired table tests HGPrompt against every baseline in it; with a dozen baselines one of them
falls under 0.05 by chance alone about half the time. Holm's step-down procedure (Holm,
Scandinavian Journal of Statistics 1979) controls the family-wise error rate at the nominal level
for any dependence between the tests, and is uniformly more powerful than plain Bonferroni: sort
the m p-values, multiply the k-th smallest (k = 0, 1, ...) by m - k, and make the products
non-decreasing (capped at 1). A family member whose p is nan (too few pairs) is left out of the
family and stays nan.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["holm"]


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values, in the order given; nan entries stay nan and do not count in m."""
    p = np.asarray(p_values, dtype=float)
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {p[(p < 0) | (p > 1)].tolist()}")
    adjusted = np.full_like(p, np.nan)
    present = np.flatnonzero(~np.isnan(p))
    order = present[np.argsort(p[present], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[index]))
        adjusted[index] = running
    return adjusted

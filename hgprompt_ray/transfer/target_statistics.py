"""Per-target statistics for the evaluation report: do a method's weights follow the sources'
transferability (Spearman's rho with a bootstrap CI), and do the weightings differ on a target
beyond seed noise (one-way ANOVA, and the randomized-block ANOVA that uses the pairing).

* :func:`spearman_ci`: Spearman's rho assumes only paired, ordinal data; the percentile bootstrap
  assumes the pairs are exchangeable draws (resampled with replacement) and is rough for the
  handful of sources a library has.
* :func:`one_way_anova`: ``scipy.stats.f_oneway`` assumes independent, normal groups with equal
  variances; it ignores the pairing (it asks whether the methods' seed clouds on one target differ
  by more than seed noise), which makes it conservative where every draw shifts all methods alike,
  and it has no correction for overlapping draws (:mod:`hgprompt_ray.transfer.statistics`).
* :func:`blocked_anova`: the two-way ANOVA without interaction (method + seed as blocks) of a
  randomized complete block design; every method of a seed sees the same split draw, so the draw's
  shift of all methods is removed from the error term. It assumes additive method and block
  effects and normal errors with equal variance, uses only seeds on which every method ran, and
  has the same lack of an overlap correction.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.stats

from hgprompt_ray.errors import InvalidValueError, invalid_value
from hgprompt_ray.transfer.statistics import (
    _TOLERANCE,
    _check_frame,
    _check_level,
    _filter_protocol,
    _finite_vector,
)

__all__ = ["blocked_anova", "one_way_anova", "spearman_ci"]


def spearman_ci(
    x: Sequence[float] | np.ndarray | pd.Series,
    y: Sequence[float] | np.ndarray | pd.Series,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """Spearman's rho of paired vectors and a percentile bootstrap confidence interval.

    The pairs (x_i, y_i) are resampled with replacement ``n_boot`` times (a
    ``numpy.random.default_rng(seed)`` Generator); resamples in which either side is constant
    have no rho and are dropped. Ties get average ranks, as in ``scipy.stats.spearmanr``. For a
    one-hot ``x`` (one source chosen) the kept resamples are those that draw the chosen source,
    often more than once, which pushes rho away from 0: the interval can exclude the estimate.

    Args:
        x: one vector (e.g. a method's source weights).
        y: the paired vector (e.g. the sources' zero-shot accuracies), same length.
        n_boot: the number of bootstrap resamples (positive).
        seed: the Generator's seed.
        level: the confidence level, strictly between 0 and 1.

    Returns:
        ``(rho, ci_low, ci_high)``; all three NaN when ``x`` or ``y`` is constant, and the bounds
        NaN when every resample was dropped.

    Raises:
        InvalidValueError: the lengths differ, there are fewer than 3 pairs, a value is not
            finite, ``n_boot`` is not a positive integer or ``level`` is outside (0, 1).
    """
    _check_level("level", level)
    if isinstance(n_boot, bool) or not isinstance(n_boot, numbers.Integral) or n_boot < 1:
        raise InvalidValueError(
            invalid_value("n_boot", n_boot, "must be a positive integer", "Pass e.g. 2000.")
        )
    first, second = _finite_vector("x", x), _finite_vector("y", y)
    if first.size != second.size:
        raise InvalidValueError(
            invalid_value(
                "y",
                f"length {second.size}",
                f"must have the length of x ({first.size})",
                "Pass one y value per x value (paired vectors).",
            )
        )
    if first.size < 3:
        raise InvalidValueError(
            invalid_value(
                "x",
                f"length {first.size}",
                "must hold at least 3 pairs",
                "A rank correlation of fewer than 3 pairs is meaningless; pass more sources.",
            )
        )
    if np.ptp(first) == 0 or np.ptp(second) == 0:
        return math.nan, math.nan, math.nan
    rho = float(_rank_correlation(first[None, :], second[None, :])[0])
    indices = np.random.default_rng(seed).integers(0, first.size, size=(int(n_boot), first.size))
    samples_x, samples_y = first[indices], second[indices]
    varied = (np.ptp(samples_x, axis=1) > 0) & (np.ptp(samples_y, axis=1) > 0)
    if not varied.any():
        return rho, math.nan, math.nan
    rhos = _rank_correlation(samples_x[varied], samples_y[varied])
    low, high = np.percentile(rhos, [50 * (1 - level), 50 * (1 + level)])
    return rho, float(low), float(high)


def one_way_anova(frame: pd.DataFrame, target: str, protocol: str | None = None) -> tuple[float, float]:
    """One-way ANOVA of test accuracy across methods on one target (do they differ beyond seed noise?).

    Methods with fewer than 2 runs on the target are left out (no within-method variance).

    Args:
        frame: the results (columns ``target, method, protocol, seed, test_accuracy``).
        target: the target task; it must have runs in ``frame``.
        protocol: keep only runs of this protocol first; default: all.

    Returns:
        ``(F, p)`` from ``scipy.stats.f_oneway``. Both NaN when fewer than 2 methods remain, or
        when every run has the same accuracy; ``(inf, 0.0)`` when each method is constant over its
        seeds but the methods differ.

    Raises:
        InvalidValueError: a column is missing, an accuracy is not a finite fraction, ``target``
            has no runs, or ``protocol`` is absent.
    """
    runs = _target_runs(frame, target, protocol)
    groups = [g["test_accuracy"].to_numpy(dtype=np.float64) for _, g in runs.groupby("method", sort=True)]
    groups = [g for g in groups if g.size >= 2]
    if len(groups) < 2:
        return math.nan, math.nan
    within = sum(float(((g - g.mean()) ** 2).sum()) for g in groups)
    if within <= _TOLERANCE**2:
        spread = np.ptp(np.concatenate(groups))
        return (math.nan, math.nan) if spread <= _TOLERANCE else (math.inf, 0.0)
    result = scipy.stats.f_oneway(*groups)
    return float(result.statistic), float(result.pvalue)


def blocked_anova(frame: pd.DataFrame, target: str, protocol: str | None = None) -> tuple[float, float, int]:
    """Randomized-block ANOVA of test accuracy across methods on one target, the seeds as blocks.

    Methods with fewer than 2 runs are left out, as in :func:`one_way_anova`; of the rest, only
    the seeds on which every method ran are used (complete blocks; a seed's repeated runs of one
    method are averaged first). ``F = MS_method / MS_error`` with ``M - 1`` and ``(M - 1)(B - 1)``
    degrees of freedom for M methods and B seeds.

    Args:
        frame: the results (columns ``target, method, protocol, seed, test_accuracy``).
        target: the target task; it must have runs in ``frame``.
        protocol: keep only runs of this protocol first; default: all.

    Returns:
        ``(F, p, seeds)``: seeds is B, the number of complete blocks. F and p are NaN when fewer
        than 2 methods or 2 complete seeds remain, or when the methods do not differ and nothing is
        left of the error; ``(inf, 0.0, B)`` when the methods differ by exactly the same amount on
        every seed.

    Raises:
        InvalidValueError: as :func:`one_way_anova`.
    """
    runs = _target_runs(frame, target, protocol)
    counts = runs.groupby("method").size()
    runs = runs[runs["method"].isin(counts.index[counts >= 2])]
    table = runs.pivot_table(index="seed", columns="method", values="test_accuracy", aggfunc="mean").dropna()
    blocks, methods = table.shape
    if methods < 2 or blocks < 2:
        return math.nan, math.nan, int(blocks)
    y = table.to_numpy(dtype=np.float64)
    grand = y.mean()
    ss_method = blocks * float(((y.mean(axis=0) - grand) ** 2).sum())
    residual = y - y.mean(axis=0, keepdims=True) - y.mean(axis=1, keepdims=True) + grand
    ss_error = float((residual**2).sum())  # computed directly: SS_total - SS_method - SS_block cancels badly
    df_method, df_error = methods - 1, (methods - 1) * (blocks - 1)
    if ss_error <= _TOLERANCE**2:
        return (math.inf, 0.0, int(blocks)) if ss_method > _TOLERANCE**2 else (math.nan, math.nan, int(blocks))
    statistic = (ss_method / df_method) / (ss_error / df_error)
    return float(statistic), float(scipy.stats.f.sf(statistic, df_method, df_error)), int(blocks)


def _target_runs(frame: pd.DataFrame, target: str, protocol: str | None) -> pd.DataFrame:
    """The runs of one target (and protocol); a clear error when there are none."""
    runs = _filter_protocol(_check_frame(frame), protocol)
    runs = runs[runs["target"] == target]
    if runs.empty:
        present = sorted(map(str, _check_frame(frame)["target"].unique()))
        raise InvalidValueError(
            invalid_value(
                "target",
                target,
                "must have runs in the frame" + (f" (protocol {protocol!r})" if protocol else ""),
                f"Pass one of {present}.",
            )
        )
    return runs


def _rank_correlation(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair (rows must not be constant): Pearson's r of average ranks."""
    rx = scipy.stats.rankdata(x, axis=1)
    ry = scipy.stats.rankdata(y, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    rho = (rx * ry).sum(axis=1) / np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))
    return np.clip(rho, -1.0, 1.0)

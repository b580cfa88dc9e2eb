"""Significance tests and confidence intervals for the evaluation report.

Every function reads a results frame with columns ``target, method, protocol, seed,
test_accuracy`` (one row per run; accuracies are fractions in [0, 1]) and computes nothing that
needs a model. The unit of pairing is (target, protocol, seed): every method is run on the same
split and seed, so two methods' runs that share those three keys saw the same data and differ only
in the method. Runs without a partner are ignored by the paired tests.

What each test assumes:

* :func:`mean_ci`: a Student-t interval, mean +- t_{(1+level)/2, n-1} * sd / sqrt(n). It assumes
  the values are independent draws from one roughly normal distribution (here: seeds of one
  method on one target); with 3-5 seeds it is wide, which is the honest answer.
* :func:`paired_differences` and :func:`win_tie_loss`: the paired t-test
  (``scipy.stats.ttest_rel``) assumes the per-pair differences (method minus baseline) are
  independent and roughly normal. Pooling pairs over targets (as :func:`paired_differences` does)
  treats a target's seeds and different targets alike, so its p-value answers "is the method
  better on average over these runs", not "on every target". The Wilcoxon signed-rank test
  (``scipy.stats.wilcoxon``) drops the normality assumption and only assumes the differences are
  symmetric about their median; zero differences are dropped (``zero_method="wilcox"``).

Overlapping draws (``overlap``): the init-probe protocol's replicates are split draws of one
pool, whose training sets share about half their images, so their accuracies are correlated and
the plain t statistics above are anti-conservative. With ``overlap`` = n_test / n_train > 0,
:func:`mean_ci`, :func:`paired_differences` and :func:`win_tie_loss` use Nadeau and Bengio's
corrected resampled t (Machine Learning 52, 2003): the sample variance times (1/n + n_test/n_train)
instead of 1/n; pooled over targets, times (1/N + overlap * sum_t n_t^2 / N^2), the same
correction per target with targets independent. The Wilcoxon test has no such correction: with
``overlap`` > 0 its p is NaN.

Differences smaller than ``1e-12`` are treated as zero (accuracies are fractions of a finite test
set, so a genuine difference is never that small; float subtraction leaves ~1e-17 residues that
would otherwise give a t statistic of 1e15).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats

from hgprompt_ray.errors import InvalidValueError, invalid_value

__all__ = [
    "PAIRING_KEYS",
    "format_ci",
    "mean_ci",
    "paired_differences",
    "win_tie_loss",
]

PAIRING_KEYS = ("target", "protocol", "seed")
"""Two runs are paired when they agree on these columns (same split, same seed)."""
REQUIRED_COLUMNS = ("target", "method", "protocol", "seed", "test_accuracy")
PAIRED_COLUMNS = [
    "baseline",
    "pairs",
    "targets",
    "mean_difference",
    "ci_low",
    "ci_high",
    "t_statistic",
    "p_t",
    "p_wilcoxon",
]
SUMMARY_COLUMNS = ["baseline", "wins", "ties", "losses", "targets"]
DETAIL_COLUMNS = ["baseline", "target", "pairs", "mean_difference", "p_t", "outcome"]
_TOLERANCE = 1e-12
"""Differences at most this large (in accuracy fractions) count as zero; see the module docstring."""


def mean_ci(
    values: Sequence[float] | np.ndarray | pd.Series, level: float = 0.95, overlap: float = 0.0
) -> tuple[float, float]:
    """The mean and the half-width of its Student-t confidence interval.

    Args:
        values: the sample (e.g. one method's test accuracies over seeds on one target).
        level: the confidence level, strictly between 0 and 1.
        overlap: n_test / n_train of overlapping resampled draws (module docstring); 0: independent.

    Returns:
        ``(mean, half_width)`` with half_width = t.ppf((1 + level) / 2, n - 1) * sd *
        sqrt(1 / n + overlap) and sd the sample standard deviation (ddof=1). half_width is NaN
        when n < 2.

    Raises:
        InvalidValueError: ``values`` is empty or not finite, or ``level`` is outside (0, 1).
    """
    _check_level("level", level)
    array = _finite_vector("values", values)
    if array.size == 0:
        raise InvalidValueError(
            invalid_value("values", [], "must hold at least one number", "Pass the runs' accuracies.")
        )
    mean = float(array.mean())
    if array.size < 2:
        return mean, math.nan
    sd = float(array.std(ddof=1))
    factor = 1.0 / array.size + _check_overlap(overlap)
    half_width = float(scipy.stats.t.ppf((1 + level) / 2, array.size - 1)) * sd * math.sqrt(factor)
    return mean, half_width


def format_ci(values: Sequence[float] | np.ndarray | pd.Series, scale: float = 100.0, digits: int = 1) -> str:
    """A table cell "mean ± half-width (n=N)" with the 95% Student-t half-width of :func:`mean_ci`.

    Args:
        values: the sample, as fractions; multiplied by ``scale`` for display (100: percent).
        scale: the display factor.
        digits: decimals after the point.

    Returns:
        ``"56.1 ± 1.3 (n=5)"``; ``"56.1 (n=1)"`` for one value; ``"-"`` when ``values`` is empty.

    Raises:
        InvalidValueError: ``values`` holds a non-finite number, or ``digits`` is negative.
    """
    if isinstance(digits, bool) or not isinstance(digits, numbers.Integral) or digits < 0:
        raise InvalidValueError(
            invalid_value("digits", digits, "must be a non-negative integer", "Pass e.g. 1.")
        )
    array = _finite_vector("values", values)
    if array.size == 0:
        return "-"
    mean, half_width = mean_ci(array)
    if array.size == 1:
        return f"{scale * mean:.{digits}f} (n=1)"
    return f"{scale * mean:.{digits}f} ± {scale * half_width:.{digits}f} (n={array.size})"


def paired_differences(
    frame: pd.DataFrame,
    method: str = "hgprompt",
    baselines: Sequence[str] | None = None,
    protocol: str | None = None,
    level: float = 0.95,
    overlap: float = 0.0,
) -> pd.DataFrame:
    """Method minus each baseline over every (target, protocol, seed) both were run on.

    Args:
        frame: the results (columns ``target, method, protocol, seed, test_accuracy``).
        method: the method under test; it must have runs in ``frame``.
        baselines: the methods to compare against, in the order of the returned rows; default:
            every other method in ``frame`` (after the protocol filter), sorted by name. A baseline
            without runs gets a row with ``pairs`` = 0 and NaNs.
        protocol: keep only runs of this protocol first; default: all (pairs never cross protocols).
        level: the confidence level of ``ci_low``/``ci_high`` (Student-t over the differences).
        overlap: n_test / n_train of overlapping draws (module docstring); 0: independent pairs.

    Returns:
        One row per baseline: ``baseline, pairs, targets`` (distinct targets among the pairs),
        ``mean_difference, ci_low, ci_high`` (fractions; positive: the method is better),
        ``t_statistic, p_t`` (``scipy.stats.ttest_rel``; NaN with fewer than 2 pairs or when all
        differences are equal) and ``p_wilcoxon`` (``scipy.stats.wilcoxon`` on the non-zero
        differences; NaN when fewer than 2 are non-zero).

    Raises:
        InvalidValueError: a column is missing, an accuracy is not a finite fraction, a run is
            duplicated, ``method`` has no runs, ``baselines`` contains ``method``, ``protocol`` is
            absent, or ``level`` is outside (0, 1).
    """
    _check_level("level", level)
    runs, names = _prepare(frame, method, baselines, protocol)
    rows = []
    for baseline in names:
        differences, pair_targets = _pair(runs, method, baseline)
        row: dict[str, Any] = {
            "baseline": baseline,
            "pairs": int(differences.size),
            "targets": int(pair_targets.nunique()),
        }
        row.update(dict.fromkeys(PAIRED_COLUMNS[3:], math.nan))
        if differences.size:
            sizes = pair_targets.value_counts().to_numpy(dtype=np.float64)
            pooled = _check_overlap(overlap) * float((sizes**2).sum()) / differences.size**2
            mean, half_width = mean_ci(differences, level, pooled)
            t_statistic, p_t = _ttest(differences, pooled)
            row.update(
                mean_difference=mean,
                ci_low=mean - half_width,
                ci_high=mean + half_width,
                t_statistic=t_statistic,
                p_t=p_t,
                p_wilcoxon=_wilcoxon(differences) if overlap == 0 else math.nan,
            )
        rows.append(row)
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS).astype({"pairs": int, "targets": int})


def win_tie_loss(
    frame: pd.DataFrame,
    method: str = "hgprompt",
    baselines: Sequence[str] | None = None,
    protocol: str | None = None,
    alpha: float = 0.05,
    overlap: float = 0.0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per target, whether the method beats, ties or loses to each baseline (paired t-test over seeds).

    On each target the pairs are the (protocol, seed) both methods were run on (with ``protocol``
    given: the seeds). The outcome is "win" when p < ``alpha`` and the mean difference (method
    minus baseline) is positive, "loss" when p < ``alpha`` and it is negative, and "tie"
    otherwise. In particular a target with a single pair is a tie, and so is one where every
    difference is zero. Where all differences are equal and non-zero, the t-test is undefined and
    p is the exact sign test's, 2^(1 - n). With ``overlap`` > 0 the t-test is Nadeau and Bengio's
    corrected one (module docstring).

    Args:
        frame: the results (columns ``target, method, protocol, seed, test_accuracy``).
        method: the method under test; it must have runs in ``frame``.
        baselines: the methods to compare against; default: every other method in ``frame``,
            sorted by name.
        protocol: keep only runs of this protocol first; default: all.
        alpha: the significance level, strictly between 0 and 1 (no multiple-comparison correction).
        overlap: n_test / n_train of overlapping draws (module docstring); 0: independent pairs.

    Returns:
        ``(summary, detail)``. ``summary``: one row per baseline with ``baseline, wins, ties,
        losses, targets`` (targets = wins + ties + losses). ``detail``: one row per (baseline,
        target) with at least one pair: ``baseline, target, pairs, mean_difference, p_t, outcome``.
        Targets where the two methods share no (protocol, seed) are left out of both frames.

    Raises:
        InvalidValueError: as :func:`paired_differences`, or ``alpha`` is outside (0, 1).
    """
    _check_level("alpha", alpha)
    runs, names = _prepare(frame, method, baselines, protocol)
    summary, detail = [], []
    for baseline in names:
        counts = dict.fromkeys(("win", "tie", "loss"), 0)
        differences, pair_targets = _pair(runs, method, baseline)
        for target in sorted(pair_targets.unique()):
            on_target = differences[(pair_targets == target).to_numpy()]
            mean = float(on_target.mean())
            _, p_t = _ttest(on_target, _check_overlap(overlap))
            outcome = "tie"
            if p_t < alpha and mean > 0:  # NaN compares False: a tie
                outcome = "win"
            elif p_t < alpha and mean < 0:
                outcome = "loss"
            counts[outcome] += 1
            detail.append(
                {
                    "baseline": baseline,
                    "target": target,
                    "pairs": int(on_target.size),
                    "mean_difference": mean,
                    "p_t": p_t,
                    "outcome": outcome,
                }
            )
        summary.append(
            {
                "baseline": baseline,
                "wins": counts["win"],
                "ties": counts["tie"],
                "losses": counts["loss"],
                "targets": sum(counts.values()),
            }
        )
    summary_frame = pd.DataFrame(summary, columns=SUMMARY_COLUMNS)
    summary_frame = summary_frame.astype({c: int for c in SUMMARY_COLUMNS[1:]})
    detail_frame = pd.DataFrame(detail, columns=DETAIL_COLUMNS).astype({"pairs": int})
    return summary_frame, detail_frame


def _check_level(field: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < float(value) < 1:
        example = 0.95 if field == "level" else 0.05
        raise InvalidValueError(
            invalid_value(
                field, value, "must be a number strictly between 0 and 1", f"Pass e.g. {field}={example}."
            )
        )


def _finite_vector(field: str, values: Any) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InvalidValueError(
            invalid_value(
                field, values, "must be a sequence of numbers", "Pass a list, array or Series of floats."
            )
        ) from error
    if array.ndim != 1:
        raise InvalidValueError(
            invalid_value(
                field, f"shape {array.shape}", "must be one-dimensional", "Pass a flat sequence of numbers."
            )
        )
    if not np.isfinite(array).all():
        raise InvalidValueError(
            invalid_value(
                field,
                values,
                "must hold finite numbers only",
                "Drop NaN/inf entries (unfinished runs) first.",
            )
        )
    return array


def _check_frame(frame: Any) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise InvalidValueError(
            invalid_value(
                "frame", type(frame).__name__, "must be a pandas DataFrame", "Pass the results frame."
            )
        )
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise InvalidValueError(
            invalid_value(
                "frame.columns",
                list(frame.columns),
                f"must include {list(REQUIRED_COLUMNS)} (missing {missing})",
                "Pass one row per run, e.g. from report.results_table.",
            )
        )
    accuracy = pd.to_numeric(frame["test_accuracy"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~(np.isfinite(accuracy) & (accuracy >= 0) & (accuracy <= 1))
    if bad.any():
        raise InvalidValueError(
            invalid_value(
                "frame.test_accuracy",
                frame["test_accuracy"].to_numpy()[bad][:5].tolist(),
                "must be fractions in [0, 1]",
                "Divide percentages by 100 and drop unfinished (NaN) runs.",
            )
        )
    return frame.assign(test_accuracy=accuracy)


def _filter_protocol(frame: pd.DataFrame, protocol: str | None) -> pd.DataFrame:
    if protocol is None:
        return frame
    if protocol not in set(frame["protocol"]):
        raise InvalidValueError(
            invalid_value(
                "protocol",
                protocol,
                "must be a protocol present in the frame",
                f"Pass one of {sorted(map(str, frame['protocol'].unique()))} or None.",
            )
        )
    return frame[frame["protocol"] == protocol]


def _prepare(
    frame: pd.DataFrame, method: str, baselines: Sequence[str] | None, protocol: str | None
) -> tuple[pd.DataFrame, list[str]]:
    """The checked, protocol-filtered runs and the baselines to compare against."""
    runs = _filter_protocol(_check_frame(frame), protocol)
    present = sorted(map(str, runs["method"].unique()))
    if method not in set(runs["method"]):
        raise InvalidValueError(
            invalid_value(
                "method",
                method,
                "must have runs in the frame" + (f" (protocol {protocol!r})" if protocol else ""),
                f"Pass one of {present}.",
            )
        )
    keys = ["method", *PAIRING_KEYS]
    duplicated = runs.duplicated(subset=keys, keep=False)
    if duplicated.any():
        first = runs.loc[duplicated, keys].iloc[0].tolist()
        raise InvalidValueError(
            invalid_value(
                "frame",
                f"two runs of (method, target, protocol, seed) = {first}",
                "must hold one run per method, target, protocol and seed",
                "Drop the repeated run (or average repeats before pairing).",
            )
        )
    if baselines is None:
        names = [m for m in present if m != method]
    else:
        if isinstance(baselines, str):
            raise InvalidValueError(
                invalid_value(
                    "baselines", baselines, "must be a sequence of method names", f"Pass [{baselines!r}]."
                )
            )
        names = list(baselines)
        if method in names:
            raise InvalidValueError(
                invalid_value(
                    "baselines",
                    names,
                    f"must not contain the method under test ({method!r})",
                    f"Remove {method!r} from baselines.",
                )
            )
    return runs, names


def _pair(runs: pd.DataFrame, method: str, baseline: str) -> tuple[np.ndarray, pd.Series]:
    """Differences (method minus baseline) on the shared (target, protocol, seed), and their targets."""
    keys = list(PAIRING_KEYS)
    ours = runs.loc[runs["method"] == method, [*keys, "test_accuracy"]]
    theirs = runs.loc[runs["method"] == baseline, [*keys, "test_accuracy"]]
    merged = ours.merge(theirs, on=keys, how="inner", suffixes=("_method", "_baseline"))
    merged = merged.sort_values(keys, kind="stable").reset_index(drop=True)
    differences = (merged["test_accuracy_method"] - merged["test_accuracy_baseline"]).to_numpy(
        dtype=np.float64
    )
    differences = np.where(np.abs(differences) <= _TOLERANCE, 0.0, differences)
    return differences, merged["target"]


def _ttest(differences: np.ndarray, overlap: float = 0.0) -> tuple[float, float]:
    """``scipy.stats.ttest_rel`` of the differences against zero (with ``overlap`` > 0: the
    corrected resampled t, variance factor 1/n + overlap): NaN with fewer than 2 pairs or
    all differences zero. A constant non-zero gap has zero variance, where the t-test is undefined
    (its limit, p = 0, would call two equal gaps of discrete accuracies a certain win): the
    statistic is +-inf and p is the exact two-sided sign test's, 2^(1 - n) for n pairs of one sign
    (0.5 for 2 pairs, 0.0625 for 5, 6.1e-5 for 15)."""
    if differences.size < 2 or not differences.any():
        return math.nan, math.nan
    if np.ptp(differences) <= _TOLERANCE:
        return math.copysign(math.inf, float(differences.mean())), float(2.0 ** (1 - differences.size))
    if overlap > 0:
        scale = float(differences.std(ddof=1)) * math.sqrt(1.0 / differences.size + overlap)
        statistic = float(differences.mean()) / scale
        return statistic, float(2 * scipy.stats.t.sf(abs(statistic), differences.size - 1))
    result = scipy.stats.ttest_rel(differences, np.zeros_like(differences))
    return float(result.statistic), float(result.pvalue)


def _check_overlap(overlap: Any) -> float:
    if isinstance(overlap, bool) or not isinstance(overlap, numbers.Real) or not 0 <= float(overlap) < math.inf:
        raise InvalidValueError(invalid_value("overlap", overlap, "must be a finite number >= 0", "Pass e.g. 0.5."))
    return float(overlap)


def _wilcoxon(differences: np.ndarray) -> float:
    nonzero = differences[differences != 0]
    if nonzero.size < 2:
        return math.nan
    return float(scipy.stats.wilcoxon(nonzero).pvalue)

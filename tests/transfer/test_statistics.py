"""Tests for hgprompt_ray/transfer/statistics.py: checked against SciPy and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from hgprompt_ray.errors import InvalidValueError
from hgprompt_ray.transfer.statistics import format_ci, mean_ci, paired_differences, win_tie_loss
from hgprompt_ray.transfer.target_statistics import blocked_anova, one_way_anova, spearman_ci

TARGETS = ("cifar", "dtd", "pets")
SEEDS = (0, 1, 2, 3, 4)


def _frame(accuracies: dict[str, np.ndarray], protocol: str = "tuned", seeds=SEEDS) -> pd.DataFrame:
    """Rows for each method; ``accuracies[method]`` has shape (len(TARGETS), len(seeds))."""
    rows = [
        {"target": target, "method": method, "protocol": protocol, "seed": seed, "test_accuracy": float(values[i, j])}
        for method, values in accuracies.items()
        for i, target in enumerate(TARGETS)
        for j, seed in enumerate(seeds)
    ]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def runs() -> pd.DataFrame:
    """hgprompt = vpt + 0.05 + small noise; "strong" = hgprompt + 0.04 + noise; "copy" = hgprompt."""
    rng = np.random.default_rng(7)
    base = rng.uniform(0.4, 0.7, size=(len(TARGETS), len(SEEDS)))
    ours = base + 0.05 + rng.normal(0, 0.005, size=base.shape)
    strong = ours + 0.04 + rng.normal(0, 0.005, size=base.shape)
    return _frame({"hgprompt": ours, "vpt": base, "strong": strong, "copy": ours.copy()})


# ---------------------------------------------------------------------------------------------- mean_ci


def test_mean_ci_matches_a_t_interval_computed_by_hand():
    values = [0.5, 0.6, 0.55, 0.65]
    # mean 0.575; squared deviations sum to 0.0125, so sd = sqrt(0.0125 / 3)
    sd = math.sqrt(0.0125 / 3)
    for level in (0.95, 0.9):
        expected = scipy.stats.t.ppf((1 + level) / 2, 3) * sd / math.sqrt(4)
        mean, half_width = mean_ci(values, level=level)
        assert mean == pytest.approx(0.575)
        assert half_width == pytest.approx(expected, rel=1e-12)
    assert mean_ci(values)[1] == pytest.approx(3.182446305284263 * sd / 2, rel=1e-9)  # t_{0.975, 3}


def test_mean_ci_of_one_value_has_no_half_width():
    mean, half_width = mean_ci(np.array([0.42]))
    assert mean == 0.42
    assert math.isnan(half_width)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"values": []}, "values"),
        ({"values": [0.5, float("nan")]}, "values"),
        ({"values": [0.5, 0.6], "level": 0.0}, "level"),
        ({"values": [0.5, 0.6], "level": 1.0}, "level"),
        ({"values": [0.5, 0.6], "level": 95}, "level"),
        ({"values": [0.5, 0.6], "level": True}, "level"),
    ],
)
def test_mean_ci_rejects_bad_input(kwargs, field):
    with pytest.raises(InvalidValueError, match=field):
        mean_ci(**kwargs)


def test_format_ci_cells():
    assert format_ci([0.5, 0.6, 0.55, 0.65]) == f"57.5 ± {100 * mean_ci([0.5, 0.6, 0.55, 0.65])[1]:.1f} (n=4)"
    assert format_ci([0.5, 0.6, 0.55, 0.65]) == "57.5 ± 10.3 (n=4)"
    assert format_ci(pd.Series([0.561])) == "56.1 (n=1)"
    assert format_ci([]) == "-"
    assert format_ci([0.5, 0.5, 0.5], scale=1.0, digits=2) == "0.50 ± 0.00 (n=3)"
    with pytest.raises(InvalidValueError, match="digits"):
        format_ci([0.5], digits=-1)


# ---------------------------------------------------------------------------------------------- paired


def test_a_consistently_better_method_is_detected(runs):
    table = paired_differences(runs, baselines=["vpt"]).set_index("baseline")
    ours = runs[runs["method"] == "hgprompt"].sort_values(["target", "seed"])["test_accuracy"].to_numpy()
    base = runs[runs["method"] == "vpt"].sort_values(["target", "seed"])["test_accuracy"].to_numpy()
    d = ours - base
    sd = d.std(ddof=1)
    half_width = scipy.stats.t.ppf(0.975, d.size - 1) * sd / math.sqrt(d.size)
    row = table.loc["vpt"]
    assert row["pairs"] == 15 and row["targets"] == 3
    assert row["mean_difference"] == pytest.approx(d.mean())
    assert row["mean_difference"] == pytest.approx(0.05, abs=0.005)
    assert row["ci_low"] == pytest.approx(d.mean() - half_width)
    assert row["ci_high"] == pytest.approx(d.mean() + half_width)
    assert row["t_statistic"] == pytest.approx(d.mean() / (sd / math.sqrt(d.size)))
    assert row["p_t"] < 1e-10
    assert row["p_wilcoxon"] == pytest.approx(2 / 2**15)  # exact test, every difference positive

    summary, detail = win_tie_loss(runs, baselines=["vpt", "strong"])
    summary = summary.set_index("baseline")
    assert summary.loc["vpt", ["wins", "ties", "losses", "targets"]].tolist() == [3, 0, 0, 3]
    assert summary.loc["strong", ["wins", "ties", "losses", "targets"]].tolist() == [0, 0, 3, 3]
    vpt = detail[detail["baseline"] == "vpt"]
    assert vpt["target"].tolist() == list(TARGETS)
    assert (vpt["pairs"] == 5).all() and (vpt["p_t"] < 1e-3).all() and (vpt["outcome"] == "win").all()
    on_dtd = d[5:10]  # the pairs of the second target
    assert vpt.iloc[1]["p_t"] == pytest.approx(scipy.stats.ttest_1samp(on_dtd, 0.0).pvalue)


def test_identical_methods_tie_with_zero_difference(runs):
    row = paired_differences(runs, baselines=["copy"]).iloc[0]
    assert row["pairs"] == 15
    assert row["mean_difference"] == 0.0
    assert row["ci_low"] == 0.0 and row["ci_high"] == 0.0
    assert math.isnan(row["t_statistic"]) and math.isnan(row["p_t"]) and math.isnan(row["p_wilcoxon"])
    summary, detail = win_tie_loss(runs, baselines=["copy"])
    assert summary.iloc[0][["wins", "ties", "losses", "targets"]].tolist() == [0, 3, 0, 3]
    assert (detail["outcome"] == "tie").all() and (detail["mean_difference"] == 0).all()


def test_a_constant_nonzero_gap_gets_the_sign_test_without_float_residue_mattering():
    base = np.tile([0.5, 0.6, 0.7, 0.3, 0.2], (len(TARGETS), 1))
    ours = base + 0.1  # differences differ by ~1e-17: without the tolerance, t would be ~1e15
    assert np.ptp(ours - base) > 0
    frame = _frame({"hgprompt": ours, "vpt": base})
    row = paired_differences(frame).iloc[0]
    assert row["mean_difference"] == pytest.approx(0.1)
    assert row["t_statistic"] == math.inf  # zero variance: the t-test is undefined
    assert row["p_t"] == pytest.approx(2.0**-14)  # the exact sign test: 15 positive pairs
    assert row["p_wilcoxon"] < 1e-3  # the signed-rank test is defined: all 15 differences positive
    summary, detail = win_tie_loss(frame)  # 5 pairs per target: the sign test's p is 0.0625, no win
    assert summary.iloc[0][["wins", "ties", "losses"]].tolist() == [0, 3, 0]
    assert (detail["p_t"] == 0.0625).all()
    summary, _ = win_tie_loss(frame, alpha=0.1)
    assert summary.iloc[0]["wins"] == 3
    lower = paired_differences(_frame({"hgprompt": base, "vpt": ours})).iloc[0]
    assert lower["t_statistic"] == -math.inf
    assert win_tie_loss(_frame({"hgprompt": base, "vpt": ours}), alpha=0.1)[0].iloc[0]["losses"] == 3


def test_unpaired_runs_are_ignored():
    ours = _frame({"hgprompt": np.full((3, 5), 0.6)}, seeds=(0, 1, 2, 3, 4))
    theirs = _frame({"vpt": np.full((3, 5), 0.5)}, seeds=(3, 4, 5, 6, 7))
    theirs.loc[theirs["seed"] >= 5, "test_accuracy"] = 0.99  # unpaired: must not count
    other_protocol = _frame({"vpt": np.full((3, 5), 0.0)}, protocol="fixed", seeds=(0, 1, 2, 3, 4))
    frame = pd.concat([ours, theirs, other_protocol], ignore_index=True)
    row = paired_differences(frame, baselines=["vpt"]).iloc[0]
    assert row["pairs"] == 6 and row["targets"] == 3  # seeds 3 and 4 on three targets
    assert row["mean_difference"] == pytest.approx(0.1)
    summary, detail = win_tie_loss(frame)
    assert summary.iloc[0]["targets"] == 3
    assert (detail["pairs"] == 2).all()


def test_protocol_filter_and_baselines_without_pairs(runs):
    fixed = runs.assign(protocol="fixed", test_accuracy=runs["test_accuracy"] / 2)
    frame = pd.concat([runs, fixed.iloc[:3]], ignore_index=True)  # three "fixed" hgprompt runs only
    assert paired_differences(frame, baselines=["vpt"]).iloc[0]["pairs"] == 15
    table = paired_differences(frame, protocol="fixed")
    assert table["baseline"].tolist() == []  # only hgprompt ran the fixed protocol
    table = paired_differences(frame, baselines=["vpt", "never-ran"], protocol="fixed").set_index("baseline")
    assert (table["pairs"] == 0).all() and (table["targets"] == 0).all()
    assert table[["mean_difference", "ci_low", "ci_high", "t_statistic", "p_t", "p_wilcoxon"]].isna().all().all()
    summary, detail = win_tie_loss(frame, baselines=["never-ran"])
    assert summary.iloc[0][["wins", "ties", "losses", "targets"]].tolist() == [0, 0, 0, 0]
    assert detail.empty
    default = paired_differences(runs)
    assert default["baseline"].tolist() == ["copy", "strong", "vpt"]


def test_paired_inputs_are_checked(runs):
    cases = [
        (runs.drop(columns="seed"), {}, "frame.columns"),
        (runs.assign(test_accuracy=100 * runs["test_accuracy"]), {}, "frame.test_accuracy"),
        (runs.assign(test_accuracy=np.nan), {}, "frame.test_accuracy"),
        (pd.concat([runs, runs.iloc[:1]]), {}, "frame"),
        (runs, {"method": "HGPrompt"}, "method"),
        (runs, {"baselines": ["vpt", "hgprompt"]}, "baselines"),
        (runs, {"baselines": "vpt"}, "baselines"),
        (runs, {"protocol": "tunned"}, "protocol"),
    ]
    for frame, kwargs, field in cases:
        for function in (paired_differences, win_tie_loss):
            with pytest.raises(InvalidValueError, match=field):
                function(frame, **kwargs)
    with pytest.raises(InvalidValueError, match="level"):
        paired_differences(runs, level=1.5)
    with pytest.raises(InvalidValueError, match="alpha"):
        win_tie_loss(runs, alpha=0.0)


# ---------------------------------------------------------------------------------------------- spearman


def test_spearman_ci_of_a_monotone_vector_is_one():
    x = np.arange(10.0)
    rho, low, high = spearman_ci(x, x**3 + 1)
    assert rho == 1.0 and low == pytest.approx(1.0) and high == 1.0
    rho, low, high = spearman_ci(x, -np.exp(x))
    assert rho == -1.0 and low == -1.0 and high == pytest.approx(-1.0)


def test_spearman_ci_matches_a_loop_over_scipy():
    rng = np.random.default_rng(3)
    x = np.array([0.0, 0.0, 0.0, 1.0, 2.0])  # ties on purpose: some resamples have a constant x
    y = x + rng.normal(0, 1.0, size=5)
    rho, low, high = spearman_ci(x, y, n_boot=300, seed=11, level=0.9)
    assert rho == pytest.approx(scipy.stats.spearmanr(x, y).statistic)
    indices = np.random.default_rng(11).integers(0, 5, size=(300, 5))
    reference = [
        scipy.stats.spearmanr(x[i], y[i]).statistic for i in indices if np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0
    ]
    assert len(reference) < 300  # some resamples were constant and dropped
    assert (low, high) == pytest.approx(tuple(np.percentile(reference, [5, 95])))
    assert low <= rho <= high
    assert spearman_ci(x, y, n_boot=300, seed=11, level=0.9) == (rho, low, high)


def test_spearman_ci_edge_cases_and_bad_input():
    rho, low, high = spearman_ci([1.0, 2.0, 3.0], [0.5, 0.5, 0.5])
    assert math.isnan(rho) and math.isnan(low) and math.isnan(high)
    with pytest.raises(InvalidValueError, match="y"):
        spearman_ci([1, 2, 3], [1, 2])
    with pytest.raises(InvalidValueError, match="x"):
        spearman_ci([1, 2], [1, 2])
    with pytest.raises(InvalidValueError, match="n_boot"):
        spearman_ci([1, 2, 3], [1, 2, 3], n_boot=0)
    with pytest.raises(InvalidValueError, match="level"):
        spearman_ci([1, 2, 3], [1, 2, 3], level=2)


# ---------------------------------------------------------------------------------------------- ANOVA


def test_anova_separates_clearly_different_methods():
    rows = [
        {"target": "dtd", "method": m, "protocol": "tuned", "seed": s, "test_accuracy": mean + 0.01 * (s - 1.5)}
        for m, mean in (("vpt", 0.5), ("hgprompt", 0.7), ("average", 0.6))
        for s in range(4)
    ]
    rows.append({"target": "dtd", "method": "lonely", "protocol": "tuned", "seed": 0, "test_accuracy": 0.0})
    rows.append({"target": "pets", "method": "vpt", "protocol": "tuned", "seed": 0, "test_accuracy": 0.9})
    frame = pd.DataFrame(rows)
    statistic, p = one_way_anova(frame, "dtd")
    groups = [np.array([mean + 0.01 * (s - 1.5) for s in range(4)]) for mean in (0.7, 0.6, 0.5)]
    expected = scipy.stats.f_oneway(*groups)  # "lonely" (one run) is left out
    assert statistic == pytest.approx(expected.statistic) and p == pytest.approx(expected.pvalue)
    assert p < 0.01
    assert math.isnan(one_way_anova(frame, "pets")[1])  # one method left
    with pytest.raises(InvalidValueError, match="target"):
        one_way_anova(frame, "cars")
    with pytest.raises(InvalidValueError, match="protocol"):
        one_way_anova(frame, "dtd", protocol="fixed")


def test_anova_of_identical_methods_finds_nothing():
    noise = [0.61, 0.58, 0.6, 0.63]
    rows = [
        {"target": "dtd", "method": m, "protocol": "tuned", "seed": s, "test_accuracy": noise[s]}
        for m in ("vpt", "hgprompt")
        for s in range(4)
    ]
    statistic, p = one_way_anova(pd.DataFrame(rows), "dtd")
    assert statistic == pytest.approx(0.0, abs=1e-12) and p == pytest.approx(1.0)
    constant = pd.DataFrame(rows).assign(test_accuracy=0.5)
    statistic, p = one_way_anova(constant, "dtd")
    assert math.isnan(statistic) and math.isnan(p)
    separated = pd.DataFrame(rows).assign(test_accuracy=lambda f: np.where(f["method"] == "vpt", 0.5, 0.6))
    assert one_way_anova(separated, "dtd") == (math.inf, 0.0)


def _rss(design: np.ndarray, y: np.ndarray) -> float:
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
    return float(((y - design @ coef) ** 2).sum())


def test_blocked_anova_matches_the_nested_linear_models_and_ignores_each_seeds_shift():
    """F = ((RSS_blocks - RSS_full) / (M - 1)) / (RSS_full / ((M - 1)(B - 1))) from two least-squares
    fits with dummy variables; a shift shared by all methods of a seed changes the one-way ANOVA
    but not the blocked one. An incomplete seed and a one-run method are left out."""
    rng = np.random.default_rng(0)
    methods, seeds = ("average", "hgprompt", "vpt"), range(5)
    shift = rng.normal(0, 0.05, size=5)
    effect = {"average": 0.0, "hgprompt": 0.01, "vpt": -0.005}
    rows = [
        {"target": "dtd", "method": m, "protocol": "init-probe", "seed": s,
         "test_accuracy": 0.6 + effect[m] + rng.normal(0, 0.004)}
        for m in methods for s in seeds
    ]  # fmt: skip
    rows.append({"target": "dtd", "method": "average", "protocol": "init-probe", "seed": 9, "test_accuracy": 0.1})
    rows.append({"target": "dtd", "method": "lonely", "protocol": "init-probe", "seed": 0, "test_accuracy": 0.0})
    frame = pd.DataFrame(rows)
    statistic, p, blocks = blocked_anova(frame, "dtd")
    complete = frame[frame["seed"] < 5].query("method != 'lonely'")
    y = complete["test_accuracy"].to_numpy()
    method_dummies = pd.get_dummies(complete["method"]).to_numpy(dtype=float)
    seed_dummies = pd.get_dummies(complete["seed"]).to_numpy(dtype=float)[:, 1:]
    rss_full = _rss(np.hstack([method_dummies, seed_dummies]), y)
    rss_blocks = _rss(np.hstack([np.ones((y.size, 1)), seed_dummies]), y)
    expected = ((rss_blocks - rss_full) / 2) / (rss_full / 8)
    assert blocks == 5 and statistic == pytest.approx(expected, rel=1e-9)
    assert p == pytest.approx(scipy.stats.f.sf(expected, 2, 8), rel=1e-9)
    shifted = frame.assign(test_accuracy=frame["test_accuracy"] + np.where(frame["seed"] < 5, shift[frame["seed"] % 5], 0))
    again = blocked_anova(shifted, "dtd")
    assert again[0] == pytest.approx(statistic, rel=1e-9) and again[1] == pytest.approx(p, rel=1e-9)
    assert one_way_anova(shifted, "dtd")[1] > 0.05 > p  # the draws' shifts hide the effect from the one-way test
    identical = frame.assign(test_accuracy=lambda f: 0.5 + 0.01 * f["seed"])  # same on every method: no effect
    assert all(math.isnan(v) for v in blocked_anova(identical, "dtd")[:2])
    constant_gap = identical.assign(test_accuracy=lambda f: f["test_accuracy"] + np.where(f["method"] == "vpt", 0.02, 0))
    assert blocked_anova(constant_gap, "dtd")[:2] == (math.inf, 0.0)
    assert math.isnan(blocked_anova(frame[frame["seed"] == 0], "dtd")[1])  # one seed: no error term
    with pytest.raises(InvalidValueError, match="target"):
        blocked_anova(frame, "cars")


def test_overlapping_draws_get_the_nadeau_bengio_corrected_t():
    """Draws of one pool overlap: the variance factor is 1/n + n_test/n_train, not 1/n (per
    target), and 1/N + overlap * sum n_t^2 / N^2 pooled over targets; Wilcoxon has no correction."""
    rng = np.random.default_rng(3)
    base = rng.uniform(0.4, 0.7, size=(len(TARGETS), len(SEEDS)))
    ours = base + 0.01 + rng.normal(0, 0.01, size=base.shape)
    frame = _frame({"hgprompt": ours, "vpt": base})
    d = (ours - base).ravel()
    n, overlap = d.size, 0.5
    factor = 1 / n + overlap * 3 * 5**2 / n**2  # 3 targets of 5 pairs
    t = d.mean() / (d.std(ddof=1) * math.sqrt(factor))
    row = paired_differences(frame, overlap=overlap).iloc[0]
    assert row["t_statistic"] == pytest.approx(t)
    assert row["p_t"] == pytest.approx(2 * scipy.stats.t.sf(abs(t), n - 1))
    half = scipy.stats.t.ppf(0.975, n - 1) * d.std(ddof=1) * math.sqrt(factor)
    assert row["ci_high"] - row["ci_low"] == pytest.approx(2 * half)
    assert math.isnan(row["p_wilcoxon"])
    plain = paired_differences(frame).iloc[0]
    assert plain["p_t"] < row["p_t"] and plain["ci_high"] - plain["ci_low"] < 2 * half  # the plain test overstates
    _, detail = win_tie_loss(frame, overlap=overlap)
    first = d[:5]
    t_first = first.mean() / (first.std(ddof=1) * math.sqrt(1 / 5 + overlap))
    assert detail.iloc[0]["p_t"] == pytest.approx(2 * scipy.stats.t.sf(abs(t_first), 4))
    values = base[0]
    assert mean_ci(values, overlap=overlap)[1] == pytest.approx(
        scipy.stats.t.ppf(0.975, 4) * values.std(ddof=1) * math.sqrt(1 / 5 + overlap))
    with pytest.raises(InvalidValueError, match="overlap"):
        mean_ci(values, overlap=-1.0)

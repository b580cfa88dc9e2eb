"""The two forms of the search's feature statistics (all pairs, on demand) give trials the same
statistics, and ``choose_statistics`` picks all pairs for a small library and on demand where all
pairs would not fit (memory linear in K)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from hgprompt_ray.core import (
    OnDemandHStatistics,
    empty_gradient_moments,
    ensemble_statistics,
    update_gradient_moments,
)
from hgprompt_ray.errors import InvalidValueError
from hgprompt_ray.transfer.weights import alignment_only_weights, h_only_weights
from hgprompt_ray.tuning.trainable import (
    TrialInputs,
    choose_statistics,
    run_trial,
    search_statistics,
)
from search_spaces import hgprompt as space

K, N, N_VAL, D, P = 7, 48, 30, 6, 12


def _library(seed: int = 0):
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=(N + N_VAL, D))
    features = (
        shared[None] + rng.normal(size=(K, N + N_VAL, D)) * rng.uniform(0.3, 2.0, size=(K, 1, 1))
    ).astype(np.float32)
    labels = rng.integers(0, 3, size=N + N_VAL)
    moments = empty_gradient_moments(K, P)
    for _ in range(3):
        moments = update_gradient_moments(moments, torch.from_numpy(rng.normal(size=(8, K, P))))
    names = [f"p{k}" for k in range(K)]
    return names, features[:, :N], labels[:N], features[:, N:], labels[N:], moments


def _both_forms():
    names, train, y, val, y_val, moments = _library()
    all_pairs = search_statistics(names, list(train), y, list(val), y_val, moments)
    choice = choose_statistics(K, K, [N, N_VAL], D, trials=4, requested="on-demand")
    on_demand = search_statistics(names, list(train), y, list(val), y_val, moments, choice)
    return names, all_pairs, on_demand


def test_on_demand_subsets_equal_the_all_pairs_ones():
    _, train, y, _, _, _ = _library()
    full = ensemble_statistics(train, y)
    block = D * D * 8
    lazy = OnDemandHStatistics(train, y, cache_bytes=5 * block)
    rng = np.random.default_rng(1)
    for _ in range(12):
        subset = rng.choice(K, size=rng.integers(1, K + 1), replace=False)
        expected, got = full.subset(subset), lazy.subset(subset)
        for name in ("second_moment", "deviations", "fourth_moment"):
            a, b = getattr(expected, name), getattr(got, name)
            assert a.shape == b.shape
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12 * np.abs(a).max())
        assert got.num_samples == expected.num_samples
        np.testing.assert_array_equal(got.class_counts, expected.class_counts)
        assert len(lazy._blocks) * block <= lazy.cache_bytes  # bounded
    np.testing.assert_allclose(lazy.full().second_moment, full.second_moment, rtol=1e-12, atol=1e-12)


def test_the_block_cache_serves_repeated_subsets_and_stays_local():
    _, train, y, _, _, _ = _library()
    lazy = OnDemandHStatistics(train, y)
    lazy.subset([0, 2, 4])
    assert (lazy.hits, lazy.misses) == (0, 6)  # 3 diagonal + 3 off-diagonal blocks
    lazy.subset([2, 4, 5])
    assert (lazy.hits, lazy.misses) == (3, 9)  # (2,2), (2,4), (4,4) were cached
    shipped = pickle.loads(pickle.dumps(lazy))
    assert shipped._blocks == {} and shipped.hits == 0  # the cache is per process
    np.testing.assert_array_equal(shipped.subset([2, 4]).deviations, lazy.subset([2, 4]).deviations)
    nothing = OnDemandHStatistics(train, y, cache_bytes=0)
    nothing.subset([0, 1])
    nothing.subset([0, 1])
    assert nothing.hits == 0 and nothing._blocks == {}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cache_bytes": -1}, "cache_bytes"),
        ({"features": np.zeros((3, 5))}, r"features\.shape"),
    ],
)
def test_bad_on_demand_inputs(kwargs, match):
    _, train, y, _, _, _ = _library()
    arguments = {"features": train, "labels": y, **kwargs}
    with pytest.raises(InvalidValueError, match=match):
        OnDemandHStatistics(**arguments)


def test_bad_subsets_are_refused():
    _, train, y, _, _, _ = _library()
    lazy = OnDemandHStatistics(train, y)
    for bad in ([1, 1], [], [K]):
        with pytest.raises(InvalidValueError, match="indices"):
            lazy.subset(bad)


def test_trials_and_baselines_see_the_same_statistics_in_both_forms():
    names, all_pairs, on_demand = _both_forms()
    assert on_demand.choice["mode"] == "on-demand" and all_pairs.choice is None
    np.testing.assert_allclose(on_demand.source_h_scores, all_pairs.source_h_scores, rtol=1e-10)
    inputs = {"solver": space.SOLVER, "stages": (20, 40)}
    rng = np.random.default_rng(2)
    for _ in range(4):
        config = {"lambda": float(10 ** rng.uniform(-2, 1)), "num_prompts": int(rng.integers(2, K + 1))}
        config.update({f"{space.SCORE_PREFIX}{name}": float(rng.uniform()) for name in names})
        a = run_trial(config, TrialInputs(statistics=all_pairs, **inputs), lambda _: None)
        b = run_trial(config, TrialInputs(statistics=on_demand, **inputs), lambda _: None)
        assert a["subset"] == b["subset"]
        for key in [k for k in a if k.startswith(space.ALPHA_PREFIX)]:
            assert b[key] == pytest.approx(a[key], abs=1e-7)
        assert b[space.VAL_H] == pytest.approx(a[space.VAL_H], rel=1e-8)
        assert b["objective"] == pytest.approx(a["objective"], rel=1e-8)
    np.testing.assert_allclose(h_only_weights(on_demand), h_only_weights(all_pairs), atol=1e-7)
    np.testing.assert_allclose(
        alignment_only_weights(on_demand), alignment_only_weights(all_pairs), atol=1e-7
    )


def test_auto_keeps_a_small_library_on_all_pairs_and_a_large_one_linear():
    # the offline suite: 11 prompts, N = 256 + 200, d = 384, 32 trials of up to 11 prompts
    small = choose_statistics(11, 11, [256, 200], 384, trials=32)
    assert small.mode == "all-pairs" and "fit" in small.reason
    # 200 prompts: all pairs would take 2 x 200^2 x 384^2 float64 = 88 GB
    large = choose_statistics(200, 16, [500, 200], 384, trials=32)
    assert large.mode == "on-demand" and large.all_pairs_bytes > 80 * 2**30
    assert "budget" in large.reason
    # memory linear in K on demand, quadratic for all pairs
    double = choose_statistics(400, 16, [500, 200], 384, trials=32)
    assert double.on_demand_bytes == 2 * large.on_demand_bytes
    assert double.all_pairs_bytes > 3.9 * large.all_pairs_bytes
    # few trials over few prompts of a library that fits: building blocks per trial is cheaper
    cheap = choose_statistics(40, 2, [100, 100], 64, trials=4, budget_gb=100)
    assert cheap.mode == "on-demand" and "cost less" in cheap.reason
    forced = choose_statistics(11, 11, [256, 200], 384, trials=32, requested="on-demand")
    assert forced.mode == "on-demand" and "asked" in forced.reason


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"requested": "lazy"}, "--statistics"), ({"budget_gb": 0.0}, "--statistics-budget-gb")],
)
def test_bad_statistics_settings(kwargs, match):
    with pytest.raises(InvalidValueError, match=match):
        choose_statistics(3, 3, [10], 4, trials=1, **kwargs)

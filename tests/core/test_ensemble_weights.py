"""EnsembleWeights: the one form of alpha — checks, conversions, round trips."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from hgprompt_ray.core.ensemble_weights import EnsembleWeights
from hgprompt_ray.errors import InvalidValueError

NAMES = ("a", "b", "c")


def test_values_on_the_simplex_and_round_trips():
    weights = EnsembleWeights(NAMES, np.array([0.2, 0.0, 0.8]))
    assert weights.values == (0.2, 0.0, 0.8) and weights.support == ("a", "c")
    assert EnsembleWeights.from_json(weights.to_json()) == weights
    metrics = weights.to_metrics("alpha_")
    assert metrics == {"alpha_a": 0.2, "alpha_b": 0.0, "alpha_c": 0.8}
    assert EnsembleWeights.from_metrics(metrics, NAMES, "alpha_") == weights
    for clone in (copy.copy(weights), copy.deepcopy(weights), pickle.loads(pickle.dumps(weights))):
        assert clone == weights


def test_from_subset_places_the_solve_and_zeroes_the_rest():
    weights = EnsembleWeights.from_subset(NAMES, [0, 2], [0.25, 0.75])
    np.testing.assert_array_equal(weights.as_array(), [0.25, 0.0, 0.75])
    np.testing.assert_array_equal(weights.aligned(["c", "a", "z"]), [0.75, 0.25, 0.0])


def test_uniform_and_one_hot():
    assert EnsembleWeights.uniform(NAMES).values == pytest.approx((1 / 3,) * 3)
    assert EnsembleWeights.one_hot(NAMES, "b").values == (0.0, 1.0, 0.0)


@pytest.mark.parametrize(
    "names, values, message",
    [
        (NAMES, [0.5, 0.5], "one weight per name"),
        (NAMES, [0.5, 0.6, -0.1], "finite and >= 0"),
        (NAMES, [0.5, 0.2, 0.2], "must sum to 1"),
        (("a", "a", "c"), [0.5, 0.25, 0.25], "must not repeat"),
        ((), [], "at least one"),
        (NAMES, [np.nan, 0.5, 0.5], "finite"),
    ],
)
def test_bad_weights_name_the_rule(names, values, message):
    with pytest.raises(InvalidValueError, match=message):
        EnsembleWeights(names, values)


def test_aligned_refuses_to_drop_a_weighted_prompt():
    with pytest.raises(InvalidValueError, match="must include the weighted prompts"):
        EnsembleWeights(NAMES, [0.5, 0.5, 0.0]).aligned(["a", "c"])
    np.testing.assert_array_equal(EnsembleWeights(NAMES, [0.5, 0.0, 0.5]).aligned(["a", "c"]), [0.5, 0.5])

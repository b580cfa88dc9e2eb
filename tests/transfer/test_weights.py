"""Baseline and ablation weights, against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hgprompt_ray.core.alignment import alignment_loss
from hgprompt_ray.core.ensemble_hscore import ensemble_h_score, ensemble_statistics
from hgprompt_ray.errors import InvalidValueError
from hgprompt_ray.transfer.methods.h_ensemble import h_ensemble_weights
from hgprompt_ray.transfer.methods.inputs import WeightingInputs
from hgprompt_ray.transfer.methods.single_best import best_source_weights
from hgprompt_ray.transfer.weights import (
    alignment_only_weights,
    ensemble_prompt,
    h_only_weights,
    spot_similarities,
    spot_weights,
)
from hgprompt_ray.tuning.trainable import SearchStatistics


def test_ensemble_prompt_is_the_weighted_sum():
    prompts = torch.randn(3, 4, 8)
    alpha = np.array([0.2, 0.5, 0.3])
    expected = sum(a * p for a, p in zip(alpha, prompts))
    assert torch.allclose(ensemble_prompt(prompts, alpha), expected, atol=1e-6)
    with pytest.raises(InvalidValueError, match="simplex"):
        ensemble_prompt(prompts, [0.5, 0.5, 0.5])
    with pytest.raises(InvalidValueError, match="alpha.shape"):
        ensemble_prompt(prompts, [0.5, 0.5])


def test_single_best_and_spot():
    assert best_source_weights(["a", "b", "c"], {"a": 0.4, "b": 0.9, "c": 0.1}).tolist() == [0, 1, 0]
    with pytest.raises(InvalidValueError, match="zero-shot"):
        best_source_weights(["a", "z"], {"a": 0.4})
    generator = torch.Generator().manual_seed(0)
    sources = torch.randn(4, 5, 16, generator=generator)
    target = sources[2] + 0.05 * torch.randn(5, 16, generator=generator)
    similarities = spot_similarities(target, sources)
    pooled = sources.mean(1)
    manual = [float(torch.dot(p, target.mean(0)) / (p.norm() * target.mean(0).norm())) for p in pooled]
    assert np.allclose(similarities, manual, atol=1e-6)
    assert spot_weights(similarities, best=True).tolist() == [0, 0, 1, 0]
    weighted = spot_weights(np.array([0.5, -0.2, 0.25, 0.0]), best=False)
    assert np.allclose(weighted, [2 / 3, 0, 1 / 3, 0])
    assert np.allclose(spot_weights(np.array([-0.1, -0.3]), best=False), [0.5, 0.5])  # none positive: uniform
    with pytest.raises(InvalidValueError, match="target_prompt.shape"):
        spot_similarities(torch.zeros(3, 16), sources)


def _statistics(seed: int = 0) -> SearchStatistics:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), 40)
    features = rng.normal(size=(3, 120, 6))
    features[1] += 2.0 * np.eye(6)[labels]  # prompt 1 separates the classes
    stats = ensemble_statistics(features, labels)
    gradients = rng.normal(size=(50, 3, 10))
    gradients[:, 2] = gradients[:, 0] + 0.1 * rng.normal(size=(50, 10))  # prompts 0 and 2 align
    centred = gradients - gradients.mean(0)
    covariance = np.einsum("njc,nkc->cjk", centred, centred) / 49
    return SearchStatistics(("a", "b", "c"), stats, stats, covariance, np.zeros(3))


def test_ablation_weights_optimise_their_own_term():
    statistics = _statistics()
    uniform = np.full(3, 1 / 3)
    h_only = h_only_weights(statistics)
    align_only = alignment_only_weights(statistics)
    assert np.isclose(h_only.sum(), 1) and np.isclose(align_only.sum(), 1)
    assert ensemble_h_score(statistics.train, h_only) > ensemble_h_score(statistics.train, uniform)
    assert h_only[1] > 0.5  # the discriminative prompt dominates the H-only weights
    assert alignment_loss(statistics.covariance, align_only) < alignment_loss(statistics.covariance, uniform)
    assert alignment_loss(statistics.covariance, align_only) < alignment_loss(statistics.covariance, h_only)


def test_h_ensemble_maximises_h_of_the_weighted_feature_sum():
    """H-ensemble = argmax_alpha H(sum_i alpha_i f_i) on the simplex: no point of a fine simplex
    grid has a higher H, and it is not the normalised per-source H-scores."""
    statistics = _statistics(seed=3)
    inputs = WeightingInputs(statistics.prompts, torch.zeros(3, 1, 6), {}, statistics)
    alpha = h_ensemble_weights(inputs)
    best = ensemble_h_score(statistics.train, alpha)
    grid = [np.array([i, j, 40 - i - j]) / 40 for i in range(41) for j in range(41 - i)]
    assert max(ensemble_h_score(statistics.train, g) for g in grid) <= best + 1e-9
    assert np.isclose(alpha.sum(), 1) and (alpha >= 0).all()
    assert np.allclose(alpha, h_only_weights(statistics))  # one method: "H-ensemble (= H only)"


def test_the_ablation_solves_every_objective_on_the_search_subset():
    """The ablation's rows share the search's subset: zeros outside it, and on it the same solver
    as over every source restricted to those prompts."""
    from hgprompt_ray.transfer.methods import get_method

    statistics = _statistics(seed=3)
    inputs = WeightingInputs(statistics.prompts, torch.zeros(3, 1, 6), {}, statistics, search_subset=(0, 2))
    part = inputs.subset([0, 2], None)
    uniform = get_method("search-uniform").weights(inputs, 0)
    h_only = get_method("search-h-only").weights(inputs, 0)
    align = get_method("align-only").weights(inputs, 0)
    assert uniform.tolist() == [0.5, 0.0, 0.5]
    assert h_only[1] == 0 and np.allclose(h_only[[0, 2]], h_only_weights(part.statistics))
    assert align[1] == 0 and np.allclose(align[[0, 2]], alignment_only_weights(part.statistics))
    assert not np.allclose(h_only, h_ensemble_weights(inputs))  # over every source it is H-ensemble, another row
    fallback = WeightingInputs(statistics.prompts, torch.zeros(3, 1, 6), {}, statistics, np.array([0.6, 0.0, 0.4]))
    assert fallback.search_positions() == [0, 2]  # without the search's subset: its positive weights
    with pytest.raises(InvalidValueError, match="search_subset"):
        WeightingInputs(statistics.prompts, torch.zeros(3, 1, 6), {}, statistics).search_positions()


def test_statistics_follow_the_sources_by_name_not_by_position():
    """The search may hold its prompts in another order (ranked slots): H-ensemble's weights must
    land on the same prompts whatever that order, and a source the statistics lack is an error."""
    from hgprompt_ray.errors import IntegrityError
    from hgprompt_ray.transfer.methods.inputs import statistics_in_order

    statistics = _statistics(seed=3)
    alpha = h_ensemble_weights(WeightingInputs(statistics.prompts, torch.zeros(3, 1, 6), {}, statistics))
    shuffled = statistics_in_order(statistics, ["c", "a", "b"])  # the search's own order
    assert shuffled.prompts == ("c", "a", "b")
    assert np.allclose(shuffled.covariance[:, 0, 1], statistics.covariance[:, 2, 0])
    back = statistics_in_order(shuffled, ["a", "b", "c"])  # what method_weights does with it
    assert np.allclose(h_ensemble_weights(WeightingInputs(("a", "b", "c"), torch.zeros(3, 1, 6), {}, back)), alpha)
    assert statistics_in_order(statistics, ["a", "b", "c"]) is statistics  # already in order: untouched
    with pytest.raises(IntegrityError, match=r"lack the sources \['d'\]"):
        statistics_in_order(statistics, ["a", "d"])

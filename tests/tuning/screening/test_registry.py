"""The screening registry: its members, the ranking, and a new score plugged in."""

from __future__ import annotations

import numpy as np
import pytest

from hgprompt_ray.core import empty_gradient_moments, update_gradient_moments
from hgprompt_ray.errors import InvalidValueError
from hgprompt_ray.tuning.screening import SCREENING_SCORES, rank_prompts, register_screening_score
from hgprompt_ray.tuning.screening import registry as screening_registry
from hgprompt_ray.tuning.trainable import search_statistics

NAMES = ["noise", "strong", "weak", "copy"]


@pytest.fixture(scope="module")
def features():
    """Four prompts on a 3-class problem: pure noise, strong signal, weak signal, a tie of strong."""
    rng = np.random.default_rng(0)
    labels = np.arange(240) % 3
    centres = rng.normal(size=(3, 6))
    strong = 2.0 * centres[labels] + rng.normal(size=(240, 6))
    blocks = [
        rng.normal(size=(240, 6)),
        strong,
        0.4 * centres[labels] + rng.normal(size=(240, 6)),
        strong.copy(),
    ]
    return blocks, labels


def test_members_are_registered_with_help():
    assert list(SCREENING_SCORES)[:2] == ["h-score", "logme"]
    assert all(score.help for score in SCREENING_SCORES.values())


def test_h_score_screening_is_the_searchs_per_source_h_score(features):
    blocks, labels = features
    moments = update_gradient_moments(
        empty_gradient_moments(4, 5), np.random.default_rng(1).normal(size=(8, 4, 5))
    )
    statistics = search_statistics(NAMES, blocks, labels, blocks, labels, moments)
    screening = rank_prompts(NAMES, blocks, labels, "h-score")
    by_name = dict(zip(screening.prompts, screening.scores))
    np.testing.assert_allclose([by_name[n] for n in NAMES], statistics.source_h_scores, rtol=1e-8)


@pytest.mark.parametrize("metric", ["h-score", "logme"])
def test_ranking_best_first_ties_by_name_and_top(features, metric):
    blocks, labels = features
    screening = rank_prompts(NAMES, blocks, labels, metric, top=2)
    assert screening.prompts == ("copy", "strong", "weak", "noise")  # the tie: by name
    assert screening.scores[0] == screening.scores[1] > screening.scores[2] > screening.scores[3]
    assert screening.kept == ("copy", "strong")
    record = screening.to_json()
    assert record["metric"] == metric and record["kept"] == ["copy", "strong"] and len(record["ranking"]) == 4
    assert rank_prompts(NAMES, blocks, labels, metric).kept == screening.prompts


def test_bad_arguments_name_the_setting(features):
    blocks, labels = features
    with pytest.raises(InvalidValueError, match=r"--screen-metric must be one of \['h-score', 'logme'"):
        rank_prompts(NAMES, blocks, labels, "accuracy")
    with pytest.raises(InvalidValueError, match=r"--screen-top must be in \[1, 4\] or None, but got 5"):
        rank_prompts(NAMES, blocks, labels, top=5)
    with pytest.raises(InvalidValueError, match=r"features must hold one block per prompt \(4\), but got 3"):
        rank_prompts(NAMES, blocks[:3], labels)


def test_another_score_plugs_in(features, monkeypatch):
    monkeypatch.setattr(screening_registry, "SCREENING_SCORES", dict(SCREENING_SCORES))

    @register_screening_score("class-mean-spread", help="variance of the class means (a toy score)")
    def spread(features: np.ndarray, labels: np.ndarray) -> float:
        return float(np.var([features[labels == c].mean(axis=0) for c in np.unique(labels)]))

    blocks, labels = features
    assert rank_prompts(NAMES, blocks, labels, "class-mean-spread", top=1).kept == ("copy",)
    with pytest.raises(ValueError, match="registered twice"):
        register_screening_score("logme", help="again")(spread)

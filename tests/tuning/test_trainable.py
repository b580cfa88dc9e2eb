"""The trial logic without Tune: subset choice, staged solve, metrics; and the search space."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from hgprompt_ray.core import (
    SolverSettings,
    empty_gradient_moments,
    ensemble_h_score,
    solve_weights,
    update_gradient_moments,
)
from hgprompt_ray.errors import InvalidValueError
from hgprompt_ray.tuning.trainable import TrialInputs, run_trial, search_statistics, select_subset
from search_spaces import hgprompt as space

NAMES = ["a", "b", "c", "d"]


@pytest.fixture(scope="module")
def statistics():
    """Four prompts' features on a 3-class problem: 'b' informative, 'd' a noisy copy of 'b'."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    centres = rng.normal(size=(3, 6)) * 2
    informative = centres[labels] + rng.normal(size=(300, 6))
    features = [
        rng.normal(size=(300, 6)),
        informative,
        rng.normal(size=(300, 6)) + 0.3 * centres[labels],
        informative + rng.normal(size=(300, 6)) * 2,
    ]
    train = [f[:200] for f in features]
    val = [f[200:] for f in features]
    moments = update_gradient_moments(empty_gradient_moments(4, 5), rng.normal(size=(40, 4, 5)))
    return search_statistics(NAMES, train, labels[:200], val, labels[200:], moments)


def _config(lam, count, scores):
    return {"lambda": lam, "num_prompts": count, **{f"score_{n}": s for n, s in zip(NAMES, scores)}}


def test_subset_is_the_top_scores_in_library_order():
    assert select_subset(_config(1.0, 2, [0.1, 0.9, 0.5, 0.8]), NAMES) == [1, 3]
    assert select_subset(_config(1.0, 3, [0.5, 0.5, 0.5, 0.1]), NAMES) == [0, 1, 2]  # ties: by name
    assert select_subset(_config(1.0, 4, [0.0, 0.0, 0.0, 0.0]), NAMES) == [0, 1, 2, 3]
    with pytest.raises(InvalidValueError, match="num_prompts must be in"):
        select_subset(_config(1.0, 5, [0.1] * 4), NAMES)


def test_trial_reports_each_stage_and_matches_a_direct_solve(statistics):
    reports = []
    inputs = TrialInputs(statistics=statistics, solver=space.SOLVER, stages=(5, 10, 400), seed=0)
    final = run_trial(_config(0.5, 3, [0.9, 0.8, 0.7, 0.1]), inputs, reports.append)
    assert 1 <= len(reports) <= 3 and reports[-1] == final
    assert [r["stage"] for r in reports] == list(range(1, len(reports) + 1))
    assert final["subset"] == "a,b,c" and final["num_prompts"] == 3
    alpha = np.array([final[f"alpha_{n}"] for n in NAMES])
    assert alpha[3] == 0 and alpha.sum() == pytest.approx(1.0)
    # the staged solve reaches the optimum of a direct multi-start solve of the same subset
    subset = [0, 1, 2]
    direct = solve_weights(
        statistics.train.subset(subset),
        statistics.covariance[:, subset][:, :, subset],
        0.5,
        SolverSettings(max_iterations=2000, tolerance=1e-10, random_starts=4),
    )
    assert final["objective"] == pytest.approx(direct.objective, abs=1e-4)
    assert final["val_h_score"] == pytest.approx(
        ensemble_h_score(statistics.val.subset(subset), alpha[subset])
    )
    assert alpha[1] > alpha[0]  # the informative prompt outweighs pure noise


def test_space_is_accepted_by_optuna_with_fixed_domains():
    from ray.tune.search.optuna import OptunaSearch

    param_space = space.hgprompt_space(NAMES)
    converted = OptunaSearch.convert_search_space(param_space)
    kinds = {name: type(d).__name__ for name, d in converted.items()}
    assert kinds["lambda"] == "FloatDistribution" and converted["lambda"].log
    assert (converted["num_prompts"].low, converted["num_prompts"].high) == (2, 4)
    assert all(kinds[f"score_{n}"] == "FloatDistribution" for n in NAMES)
    study = optuna.create_study(direction="maximize", sampler=space.tpe_sampler(0))
    for _ in range(12):  # the same domains every trial: TPE never sees a changed distribution
        trial = study.ask(converted)
        study.tell(trial, trial.params["lambda"])
    assert len(study.trials) == 12


def test_asha_scheduler_covers_the_solver_stages():
    scheduler = space.asha_scheduler()
    assert scheduler._max_t == len(space.STAGES)


@pytest.mark.parametrize("objective", ["both", "h-only", "align-only"])
def test_objective_changes_only_the_terms_of_the_solve(statistics, objective):
    from hgprompt_ray.tuning.trainable import objective_terms

    inputs = TrialInputs(
        statistics=statistics, solver=space.SOLVER, stages=(400,), seed=0, objective=objective
    )
    metrics = run_trial(_config(0.5, 3, [0.9, 0.8, 0.7, 0.1]), inputs, lambda m: None)
    lam, h_weight = objective_terms(objective, 0.5)
    assert (lam, h_weight) == {"both": (0.5, 1.0), "h-only": (0.0, 1.0), "align-only": (1.0, 0.0)}[objective]
    subset = [0, 1, 2]
    settings = SolverSettings(**{**space.SOLVER, "max_iterations": 400, "seed": 0})
    direct = solve_weights(
        statistics.train.subset(subset),
        statistics.covariance[:, subset][:, :, subset],
        lam,
        settings,
        h_weight=h_weight,
    )
    got = np.array([metrics[f"alpha_{n}"] for n in NAMES[:3]])
    np.testing.assert_allclose(got, direct.alpha, atol=1e-9)
    assert metrics["lambda"] == 0.5  # the sampled value is reported as sampled
    with pytest.raises(InvalidValueError, match="--objective must be one of"):
        objective_terms("both-ish", 1.0)


def test_later_stages_continue_every_start_not_only_stage_ones_best(statistics):
    from hgprompt_ray.core import solver_starts

    inputs = TrialInputs(statistics=statistics, solver=space.SOLVER, stages=(3, 400), seed=0)
    final = run_trial(_config(0.5, 3, [0.9, 0.8, 0.7, 0.1]), inputs, lambda m: None)
    subset = [0, 1, 2]
    train, second = statistics.train.subset(subset), statistics.covariance[:, subset][:, :, subset]

    def settings(iterations):
        return SolverSettings(**{**space.SOLVER, "max_iterations": iterations, "seed": 0})

    first = solve_weights(train, second, 0.5, settings(3))
    assert first.points.shape == (len(solver_starts(3, settings(3))), 3)  # uniform, vertices, random
    second_stage = solve_weights(train, second, 0.5, settings(400), initial=np.maximum(first.points, 1e-12))
    assert second_stage.points.shape == first.points.shape
    got = np.array([final[f"alpha_{n}"] for n in NAMES[:3]])
    np.testing.assert_allclose(got, second_stage.alpha, atol=1e-12)

"""Subset decoding and the ranked-slot space: no duplicate, no empty subset, fixed domains."""

from __future__ import annotations

import optuna
import pytest
from ray.tune.search.optuna import OptunaSearch

from hgprompt_ray.errors import InvalidValueError
from hgprompt_ray.tuning.subsets import select_ranked_subset, select_subset
from search_spaces import hgprompt as space


def _slots(count, *ranks):
    return {"lambda": 1.0, "num_prompts": count, **{f"slot_{j}": r for j, r in enumerate(ranks)}}


def test_slot_takes_its_rank_or_the_nearest_free_one():
    assert select_ranked_subset(_slots(3, 4, 1, 9), 10) == [0, 3, 8]
    assert select_ranked_subset(_slots(3, 5, 5, 5), 10) == [3, 4, 5]  # 5 -> rank 4; then 3 (better) before 5
    assert select_ranked_subset(_slots(4, 1, 1, 1, 1), 4) == [0, 1, 2, 3]
    assert select_ranked_subset(_slots(3, 10, 10, 10), 10) == [7, 8, 9]
    assert select_ranked_subset(_slots(2, 3, 7, 1, 1), 10) == [2, 6]  # slots past M are ignored


def test_bad_slot_configs_name_the_key():
    with pytest.raises(InvalidValueError, match=r"slot_1 must be a rank in \[1, 10\], but got 11"):
        select_ranked_subset(_slots(2, 1, 11), 10)
    with pytest.raises(InvalidValueError, match=r"num_prompts must be in \[1, 3\], but got 4"):
        select_ranked_subset(_slots(4, 1, 2, 3, 1), 3)
    with pytest.raises(InvalidValueError, match=r"num_prompts must be in \[1, 3\], but got 0"):
        select_ranked_subset(_slots(0), 3)


def test_select_subset_dispatches_on_the_config_keys():
    names = ["a", "b", "c", "d"]
    assert select_subset(_slots(2, 4, 2), names) == [1, 3]
    scores = {"num_prompts": 2, "score_a": 0.1, "score_b": 0.9, "score_c": 0.5, "score_d": 0.8}
    assert select_subset(scores, names) == [1, 3]


def test_space_size_does_not_grow_with_the_number_of_prompts():
    small = space.ranked_slots_space(20, max_prompts=8)
    large = space.ranked_slots_space(200, max_prompts=8)
    assert (
        sorted(small) == sorted(large) == sorted(["lambda", "num_prompts", *[f"slot_{j}" for j in range(8)]])
    )
    assert len(space.hgprompt_space([f"p{i}" for i in range(200)], max_prompts=8)) == 202
    with pytest.raises(ValueError, match="resolve 'auto' first"):
        space.subset_search_space("auto", ["a", "b"])


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_a_real_optuna_study_at_k200_never_repeats_a_prompt_or_gets_an_empty_subset(sampler):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = [f"p{i:03d}" for i in range(200)]
    param_space = space.subset_search_space("ranked-slots", names, min_prompts=1, max_prompts=16)
    distributions = OptunaSearch.convert_search_space(param_space)
    assert distributions["slot_0"] == optuna.distributions.IntDistribution(1, 200, log=True)
    assert (distributions["num_prompts"].low, distributions["num_prompts"].high) == (1, 16)
    chosen = optuna.samplers.RandomSampler(seed=0) if sampler == "random" else space.tpe_sampler(0)
    study = optuna.create_study(direction="maximize", sampler=chosen)
    sizes, seen = set(), set()
    for _ in range(200):
        trial = study.ask(distributions)
        subset = select_subset(trial.params, names)
        assert len(subset) == trial.params["num_prompts"] >= 1
        assert len(set(subset)) == len(subset) and all(0 <= i < 200 for i in subset)
        sizes.add(len(subset))
        seen.update(subset)
        study.tell(trial, sum(1.0 - i / 200 for i in subset) / 16)  # prefers many well-ranked prompts
    assert all(t.distributions == distributions for t in study.trials)  # fixed per parameter name
    assert 16 in sizes and len(seen) > 100  # the largest M, and most of the ranking, are reached
    if sampler == "random":
        assert sizes == set(range(1, 17))

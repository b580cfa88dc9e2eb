"""SearchSpec and plan_search: value checks, pickling, and the one place configs are built."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest

from hgprompt_ray.errors import InvalidValueError
from hgprompt_ray.paths import DEFAULT_LIBRARY
from hgprompt_ray.tuning import SearchSpec, plan_search


def test_spec_round_trips_through_copy_deepcopy_and_pickle():
    spec = SearchSpec(
        target="count",
        sources=["digits", "textures"],
        lambda_range=[0.01, 10],
        screen_top=2,
        screen_metric="logme",
        subset_space="ranked-slots",
    )
    assert spec.sources == ("digits", "textures") and spec.lambda_range == (0.01, 10.0)
    for clone in (copy.copy(spec), copy.deepcopy(spec), pickle.loads(pickle.dumps(spec))):
        assert clone == spec
    assert spec.smoke() == dataclasses.replace(spec, samples=48, gradient_samples=12, num_samples=4)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"num_samples": 0}, "--num-samples must be a positive integer"),
        ({"workers": -1}, "--workers must be a positive integer"),
        ({"max_concurrent": 0}, "--max-concurrent must be a positive integer"),
        ({"lambda_range": (1.0, 0.5)}, "--lambda-range must be two numbers 0 < LOW < HIGH"),
        ({"lambda_range": (0.0, 1.0)}, "--lambda-range must be two numbers"),
        ({"scheduler": "hyperband"}, "--scheduler must be one of"),
        ({"seed": -1}, "--seed must be a non-negative integer"),
        ({"screen_top": 0}, "--screen-top must be a positive integer"),
        ({"screen_metric": "accuracy"}, r"--screen-metric must be one of \['h-score', 'logme'"),
        ({"subset_space": "binary"}, r"--subset-space must be one of \['auto', 'scores', 'ranked-slots'\]"),
    ],
)
def test_bad_values_name_the_flag(change, message):
    with pytest.raises(InvalidValueError, match=message):
        SearchSpec(target="count", **change)


def test_plan_resolves_the_target_once_and_builds_the_extraction_config(tmp_path):
    spec = SearchSpec(target="count", samples=64, gradient_samples=16, seed=3, output=str(tmp_path / "out"))
    plan = plan_search(spec)
    assert plan.target_name == "count" and plan.task.info.name == "count"
    assert "count" not in plan.prompts and len(plan.prompts) == 10  # its own prompt left out
    config = plan.extraction
    assert config.prompts == plan.prompts and config.num_samples == 64 and config.gradient_samples == 16
    assert config.sample_seed == 3 and config.library == str(plan.selection.library)
    assert plan.max_prompts == len(plan.prompts) and not (tmp_path / "out").exists()  # nothing written
    given = plan_search(spec, task=plan.task)  # an already resolved task is used as it is
    assert given.task is plan.task


def test_plan_refuses_out_of_range_m_and_a_busy_output(tmp_path):
    with pytest.raises(InvalidValueError, match=r"--max-prompts must be in \[2, 10\]"):
        plan_search(SearchSpec(target="count", max_prompts=11, output=str(tmp_path / "a")))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep")
    with pytest.raises(InvalidValueError, match="already holds other files"):
        plan_search(SearchSpec(target="count", output=str(busy)))
    assert (busy / "notes.txt").read_text() == "keep"
    assert DEFAULT_LIBRARY.endswith("prompt_zoo/offline")


def test_screening_bounds_m_and_auto_picks_the_subset_space(tmp_path):
    plan = plan_search(SearchSpec(target="count", output=str(tmp_path / "a")))
    assert plan.subset_space == "scores" and not plan.screens  # the default: as before, for 10 prompts
    screened = plan_search(SearchSpec(target="count", screen_top=4, output=str(tmp_path / "b")))
    assert screened.max_prompts == 4 and screened.screens and screened.subset_space == "scores"
    assert len(screened.prompts) == 10 and screened.extraction.prompts == screened.prompts  # all extracted
    slots = plan_search(SearchSpec(target="count", subset_space="ranked-slots", output=str(tmp_path / "c")))
    assert slots.screens and slots.max_prompts == 10  # ranked, not cut
    with pytest.raises(
        InvalidValueError, match=r"--max-prompts must be in \[2, 4\] \(M cannot exceed the 4 screened"
    ):
        plan_search(SearchSpec(target="count", screen_top=4, max_prompts=5, output=str(tmp_path / "d")))
    with pytest.raises(InvalidValueError, match=r"--screen-top must be in \[3, 10\] .* but got 11"):
        plan_search(SearchSpec(target="count", screen_top=11, min_prompts=3, output=str(tmp_path / "e")))
    with pytest.raises(InvalidValueError, match=r"--screen-top must be in \[2, 10\] .* but got 1"):
        plan_search(SearchSpec(target="count", screen_top=1, min_prompts=1, output=str(tmp_path / "f")))

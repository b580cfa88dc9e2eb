"""No leakage through relabelled images: every registered task records its image set, and a
target's sources never include a prompt trained on the same images under another labelling."""

from __future__ import annotations

import pytest

from hgprompt_ray.data import IMAGE_SETS, image_set, list_tasks, related_tasks
from hgprompt_ray.paths import DEFAULT_LIBRARY
from hgprompt_ray.prompts import PromptLibrary, select_sources


def test_every_registered_task_records_its_image_set():
    assert set(list_tasks()) == set(IMAGE_SETS)
    assert image_set("./my-folder") is None and related_tasks("./my-folder") == ()


def test_known_relabellings_are_related():
    assert related_tasks("digits-parity") == ("digits", "digits-high")
    assert set(related_tasks("dsprites-scale")) >= {"dsprites-location", "dsprites-orientation", "dsprites-shape"}
    assert "dsprites-loc" in related_tasks("dsprites-shape")  # the VTAB dSprites tasks are the same images
    assert related_tasks("textile-defect") == ("textile",)
    assert related_tasks("count") == ()


@pytest.mark.parametrize("target", list_tasks("offline"))
def test_no_offline_target_gets_a_source_on_its_own_images(target):
    library = PromptLibrary(DEFAULT_LIBRARY)
    try:
        selection = select_sources(library, target, related=related_tasks(target))
    except Exception as error:  # too few sources left is a clear refusal, never a leak
        assert "at least 2" in str(error)
        return
    targets_images = image_set(target)
    for record in selection.records:
        assert image_set(record.source_task) != targets_images, (target, record.name)
    dropped = {r.name for r in library.records() if image_set(r.source_task) == targets_images}
    assert dropped <= set(selection.left_out)


def test_the_search_plan_leaves_related_sources_out(tmp_path):
    from hgprompt_ray.tuning import SearchSpec, plan_search

    plan = plan_search(SearchSpec(target="digits-parity", output=str(tmp_path / "out")))
    sources = {r.source_task for r in plan.selection.records}
    assert not sources & {"digits", "digits-high", "digits-parity"}
    assert {"digits", "digits-high"} <= {r.source_task for r in PromptLibrary(DEFAULT_LIBRARY).records()}

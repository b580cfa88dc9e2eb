"""No leakage through relabelled images: every registered task records its image set, and a
target's sources never include a prompt trained on the same images under another labelling."""

from __future__ import annotations

import pytest
import torch

from hgprompt_ray.data import IMAGE_SETS, eligible_sources, image_set, list_tasks, related_tasks
from hgprompt_ray.paths import DEFAULT_LIBRARY
from hgprompt_ray.prompts import PromptLibrary, select_sources


def test_every_registered_task_records_its_image_set():
    assert set(list_tasks()) == set(IMAGE_SETS)
    assert image_set("./my-folder") is None and related_tasks("./my-folder") == ()


def test_known_relabellings_are_related():
    assert related_tasks("digits-parity") == ("digits", "digits-high", "digits-mirror")
    assert set(related_tasks("dsprites-scale")) >= {"dsprites-location", "dsprites-orientation", "dsprites-shape"}
    assert "dsprites-loc" in related_tasks("dsprites-shape")  # the VTAB dSprites tasks are the same images
    assert related_tasks("textile-defect") == ("textile",)
    assert related_tasks("count") == ()


def test_the_structured_targets_declare_their_image_sets():
    # digits-mirror is the digits images with half of them flipped: related both ways
    assert related_tasks("digits-mirror") == ("digits", "digits-high", "digits-parity")
    for name in ("digits", "digits-high", "digits-parity"):
        assert "digits-mirror" in related_tasks(name)
    # two labellings of the same rendered solids, and not VTAB's smallNORB photographs
    assert related_tasks("shape-azimuth") == ("shape-elevation",)
    assert related_tasks("shape-elevation") == ("shape-azimuth",)
    # new patches cut from the textures task's images
    assert related_tasks("texture-blur") == ("texture-contrast", "textures")
    assert related_tasks("texture-contrast") == ("texture-blur", "textures")
    assert {"texture-blur", "texture-contrast"} <= set(related_tasks("textures"))
    # new scenes: the count renderer's objects, not its images
    assert related_tasks("closest-distance") == ()


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


def test_no_offline_task_is_a_source_for_a_target_on_its_images(tmp_path):
    """Both directions, the new tasks included: a library with a prompt from every offline task."""
    library = PromptLibrary(tmp_path / "lib", create=True)
    for name in list_tasks("offline"):
        library.add(name, torch.zeros(2, 8), source_task=name, backbone="b", img_size=32)
    tasks = {record.name: record.source_task for record in library.records()}
    for target in list_tasks("offline"):
        selection = select_sources(library, target, related=related_tasks(target))
        chosen = {record.source_task for record in selection.records}
        assert not chosen & {name for name in IMAGE_SETS if image_set(name) == image_set(target)}, target
        assert set(selection.left_out) == {target, *related_tasks(target)} & set(library.names)
        # the search's select_sources and the screen's (and the leave-one-out order's)
        # eligible_sources restate one rule in two layers: the same prompts, in the library's order
        assert list(selection.names) == eligible_sources(target, tasks), target
    selection = select_sources(library, "digits", related=related_tasks("digits"))
    assert {"digits-mirror", "digits-parity"} <= set(selection.left_out)


def test_the_search_plan_leaves_related_sources_out(tmp_path):
    from hgprompt_ray.tuning import SearchSpec, plan_search

    plan = plan_search(SearchSpec(target="digits-parity", output=str(tmp_path / "out")))
    sources = {r.source_task for r in plan.selection.records}
    assert not sources & {"digits", "digits-high", "digits-parity"}
    assert {"digits", "digits-high"} <= {r.source_task for r in PromptLibrary(DEFAULT_LIBRARY).records()}


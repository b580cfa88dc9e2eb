"""sprites-count, sprites-distance, shape-lighting, scene-size, scene-spheres, scene-red: labels read back from the pixels,
seeded renders, balanced pools, and every prompt of the v2 zoo an eligible source."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage, stats

from hgprompt_ray.data import eligible_sources, pools, related_tasks, shapes3d
from hgprompt_ray.data.scenes import (
    CLEVR_COLOURS,
    render_scene_reds,
    render_scene_sizes,
    render_scene_spheres,
)
from hgprompt_ray.data.shapes3d import SHAPE_LIGHTINGS, render_shapes, sample_lighting_factors
from hgprompt_ray.data.synthetic import SPRITE_DISTANCE_EDGES, render_sprite_counts, render_sprite_pairs

NEW_TASKS = {  # task -> its pool builder and class count
    "sprites-count": (pools.sprite_counts, 6),
    "sprites-distance": (pools.sprite_distances, 4),
    "shape-lighting": (pools.shape_lightings, 5),
    "scene-size": (pools.scene_sizes, 4),
    "scene-spheres": (pools.scene_spheres, 4),
    "scene-red": (pools.scene_reds, 4),
}
_V2_MANIFEST = Path(__file__).resolve().parents[2] / "prompt_zoo" / "offline-v2" / "manifest.json"
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _renders(name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A few images of task ``name``'s renderer, every class three times."""
    rng = np.random.default_rng(seed)
    if name == "sprites-count":
        labels = np.repeat(np.arange(6), 3)
        return render_sprite_counts(labels + 1, rng).images, labels
    if name == "sprites-distance":
        labels = np.repeat(np.arange(4), 3)
        return render_sprite_pairs(labels, rng).images, labels
    if name == "shape-lighting":
        labels = np.repeat(np.arange(5), 3)
        return render_shapes(sample_lighting_factors(labels, rng), rng), labels
    labels = np.repeat(np.arange(4), 3)
    render = {"scene-spheres": render_scene_spheres, "scene-red": render_scene_reds}.get(
        name, render_scene_sizes
    )
    return render(labels, rng), labels


@pytest.mark.parametrize("name", NEW_TASKS)
def test_renders_are_seeded_uint8_64_px(name):
    first, labels = _renders(name, seed=4)
    again, _ = _renders(name, seed=4)
    other, _ = _renders(name, seed=5)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.dtype == np.uint8 and first.shape[:3] == (len(labels), 64, 64)
    assert first.shape[3:] in ((), (3,))  # sprites and solids grey (as dsprites, shapes3d), scenes RGB
    assert all(image.max() - image.min() > 60 for image in first)  # a bright object in every image


def test_each_sprite_is_one_component_inside_the_frame():
    counts = np.repeat(np.arange(1, 7), 3)
    scenes = render_sprite_counts(counts, np.random.default_rng(0))
    for image, count, centres in zip(scenes.images, counts, scenes.centres):
        labelled, found = ndimage.label(image > 0, structure=_EIGHT_CONNECTED)  # even 8-connected
        assert found == count
        assert not (image[0].any() or image[-1].any() or image[:, 0].any() or image[:, -1].any())
        assert np.isnan(centres[count:]).all() and not np.isnan(centres[:count]).any()
        # every stored centre lies on the sprite it names
        for x, y in centres[:count]:
            assert labelled[int(y), int(x)] > 0
    assert scenes.images.max() == 255


def test_sprite_pairs_stand_in_their_distance_bin():
    labels = np.repeat(np.arange(4), 4)
    scenes = render_sprite_pairs(labels, np.random.default_rng(1))
    distances = []
    for image, label, centres in zip(scenes.images, labels, scenes.centres):
        low, high = SPRITE_DISTANCE_EDGES[label], SPRITE_DISTANCE_EDGES[label + 1]
        assert low <= np.hypot(*(centres[0] - centres[1])) < high
        labelled, found = ndimage.label(image > 0, structure=_EIGHT_CONNECTED)
        assert found == 2
        (y0, x0), (y1, x1) = ndimage.center_of_mass(image.astype(np.float64), labelled, [1, 2])
        distance = np.hypot(x0 - x1, y0 - y1)
        assert low - 1.5 <= distance <= high + 1.5, (label, distance)  # (a heart's centroid is off-centre)
        distances.append(distance)
    assert np.all(np.diff(np.array(distances).reshape(4, 4).mean(axis=1)) > 5.0)


def test_scene_sizes_show_the_labelled_number_of_large_objects():
    labels = np.repeat(np.arange(4), 4)
    images = render_scene_sizes(labels, np.random.default_rng(2))
    for image, label in zip(images, labels):
        saturation = image.max(axis=2).astype(int) - image.min(axis=2).astype(int)  # the floor is grey
        labelled, found = ndimage.label(ndimage.binary_opening(saturation > 25))
        assert 3 <= found <= 8
        areas = ndimage.sum_labels(np.ones_like(labelled), labelled, np.arange(1, found + 1))
        # small objects (radius <= 4 px) cover at most ~50 px, large ones (>= 6 px) at least ~100
        assert not np.any((areas > 60) & (areas < 90)), areas
        assert int((areas >= 75).sum()) == label, (label, areas)


def test_scene_spheres_show_the_labelled_number_of_discs():
    labels = np.repeat(np.arange(4), 25)
    images = render_scene_spheres(labels, np.random.default_rng(2))
    found_spheres = []
    for image in images:
        saturation = image.max(axis=2).astype(int) - image.min(axis=2).astype(int)  # the floor is grey
        labelled, found = ndimage.label(ndimage.binary_opening(saturation > 25))
        assert 1 <= found <= 8  # touching corners may join two objects into one component, never split one
        # a disc fills pi/4 of its bounding box; a cube or a cylinder (rounded square) 0.9 or more
        fills = [np.mean(labelled[box] == k) for k, box in enumerate(ndimage.find_objects(labelled), start=1)]
        found_spheres.append(int(np.sum(np.array(fills) < 0.84)))
    found_spheres = np.array(found_spheres)
    assert np.mean(found_spheres == labels) >= 0.8  # pixel-level reading at 64 px: not every object
    means = [found_spheres[labels == label].mean() for label in range(4)]
    assert np.all(np.diff(means) > 0.5), means


def test_scene_reds_show_the_labelled_number_of_red_objects():
    labels = np.repeat(np.arange(4), 25)
    images = render_scene_reds(labels, np.random.default_rng(2)).astype(int)
    red, green, blue = images[..., 0], images[..., 1], images[..., 2]
    # shading scales a colour's channels together: red keeps green and blue at 0.2 of its red;
    # brown (0.57 and 0.19), purple and every other CLEVR colour fail one of the two ratios
    reddish = (red > 60) & (green < 0.35 * red) & (blue < 0.35 * red)
    found_reds = np.array([ndimage.label(ndimage.binary_opening(mask))[1] for mask in reddish])
    # a red cube's corner may touch another red object (centres are spaced by the radii): rare
    assert np.mean(found_reds == labels) >= 0.95 and np.all(found_reds <= labels), (found_reds, labels)
    palette = np.array(list(CLEVR_COLOURS.values()))
    others = palette[np.arange(len(palette)) != list(CLEVR_COLOURS).index("red")]
    assert not np.any((others[:, 1] < 0.35 * others[:, 0]) & (others[:, 2] < 0.35 * others[:, 0]))
    # the total count does not give the label away: 3-8 objects whatever the number of reds
    # (coloured objects stand out by saturation, gray ones by being darker than the floor, >= 104)
    labels = np.repeat(np.arange(4), 60)
    images = render_scene_reds(labels, np.random.default_rng(3)).astype(int)
    objects = (images.max(axis=3) - images.min(axis=3) > 25) | (images.max(axis=3) < 102)
    totals = np.array([ndimage.label(ndimage.binary_opening(mask))[1] for mask in objects])
    assert totals.min() >= 2 and totals.max() <= 8  # (two touching objects may read as one)
    assert abs(stats.spearmanr(labels, totals).statistic) < 0.15


def test_the_light_direction_shows_in_the_shading():
    labels = np.repeat(np.arange(len(SHAPE_LIGHTINGS)), 12)
    factors = sample_lighting_factors(labels, np.random.default_rng(3))
    across, down, brightness = (np.zeros(len(labels)) for _ in range(3))
    for i in range(len(labels)):
        shade, mask = shapes3d._render_one(
            shapes3d._PLANES[int(factors.shape[i])],
            np.deg2rad(factors.azimuth_deg[i]),
            np.deg2rad(factors.elevation_deg[i]),
            factors.stretch[i],
            factors.light[i],
            np.zeros(2),
            1.0,
        )
        rows, cols = np.nonzero(mask)
        values = shade[mask]
        with np.errstate(invalid="ignore", divide="ignore"):  # one visible face: no correlation
            across[i] = np.corrcoef(cols, values)[0, 1]
            down[i] = np.corrcoef(rows, values)[0, 1]
        brightness[i] = values.mean()

    def mean(values: np.ndarray, light: str) -> float:
        return float(np.nanmean(values[labels == SHAPE_LIGHTINGS.index(light)]))

    assert mean(across, "left") < -0.15 and mean(across, "right") > 0.15  # brighter towards the light
    assert mean(down, "above") < -0.2 and mean(down, "below") > 0.2
    others = [mean(brightness, light) for light in SHAPE_LIGHTINGS if light != "front"]
    assert mean(brightness, "front") > max(others)  # every visible face turned to the light
    directions = shapes3d._LIGHT_DIRECTIONS / np.linalg.norm(
        shapes3d._LIGHT_DIRECTIONS, axis=1, keepdims=True
    )
    assert np.all(np.sum(factors.light * directions[labels], axis=1) > 0.95)  # jitter stays small


def test_lighting_views_are_uniform_and_binned_like_shape_azimuth():
    factors = sample_lighting_factors(np.zeros(400, dtype=int), np.random.default_rng(0))
    assert factors.azimuth_deg.min() >= 0 and factors.azimuth_deg.max() < 360
    assert factors.elevation_deg.min() >= 20 and factors.elevation_deg.max() <= 70
    offset = (factors.azimuth_deg - 45.0 * factors.azimuth + 180.0) % 360.0 - 180.0
    assert np.all(np.abs(offset) <= 22.5 + 1e-9)
    assert np.all(np.abs(factors.elevation_deg - (20.0 + 10.0 * factors.elevation)) <= 5.0 + 1e-9)


@pytest.mark.parametrize("name", NEW_TASKS)
def test_registered_pool_is_class_balanced_and_labels_match_the_factors(name):
    build, classes = NEW_TASKS[name]
    stored = build()
    assert stored["images"].shape[:3] == (2000, 64, 64) and stored["images"].dtype == np.uint8
    counts = np.bincount(stored["labels"], minlength=classes)
    assert len(counts) == classes and counts.max() - counts.min() <= 1, counts
    if name == "sprites-count":
        np.testing.assert_array_equal(
            (~np.isnan(stored["centres"][:, :, 0])).sum(axis=1), stored["labels"] + 1
        )
        # sizes do not depend on crowding: six sprites are as large on average as one
        mean_radius = [np.nanmean(stored["radii"][stored["labels"] == label]) for label in range(classes)]
        assert max(mean_radius) - min(mean_radius) < 0.3, mean_radius
    if name == "sprites-distance":
        np.testing.assert_allclose(np.diff(SPRITE_DISTANCE_EDGES), 8.0)  # equal-width bins
        distances = np.hypot(*(stored["centres"][:, 0] - stored["centres"][:, 1]).T)
        np.testing.assert_array_equal(
            np.searchsorted(SPRITE_DISTANCE_EDGES, distances, side="right") - 1, stored["labels"]
        )
        # every bin is reachable by the two largest sprites (scale 1), not only by small ones
        largest = stored["radii"].min(axis=1) == stored["radii"].max()
        assert set(stored["labels"][largest]) == set(range(classes))


@pytest.mark.parametrize("name", NEW_TASKS)
def test_every_v2_zoo_prompt_is_an_eligible_source(name):
    prompts = json.loads(_V2_MANIFEST.read_text())["prompts"]
    sources = {prompt["name"]: prompt["source_task"] for prompt in prompts}
    assert len(sources) == 19
    assert eligible_sources(name, sources) == list(sources)
    assert related_tasks(name) == ()


@pytest.mark.parametrize("name", NEW_TASKS)
def test_the_v3_zoo_has_the_task_s_prompt_and_leaves_only_it_out(name):
    """offline-v3 = v2 + one prompt per new task: as a target, each new task loses its own prompt
    and nothing else (no other task shares its images)."""
    v3 = json.loads((_V2_MANIFEST.parents[1] / "offline-v3" / "manifest.json").read_text())["prompts"]
    sources = {prompt["name"]: prompt["source_task"] for prompt in v3}
    v2 = {prompt["name"] for prompt in json.loads(_V2_MANIFEST.read_text())["prompts"]}
    assert len(sources) == 19 + len(NEW_TASKS) and v2 | set(NEW_TASKS) == set(sources)
    assert sources[name] == name
    assert eligible_sources(name, sources) == [s for s in sources if s != name]

"""The offline suite: sizes, disjoint deterministic splits, caching, generators, Fashion-MNIST."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from hgprompt_ray.data import (
    TaskUnavailableError,
    backbone_transform,
    get_task,
    list_tasks,
    pools,
    readable_here,
)
from hgprompt_ray.data.offline import FASHION_MNIST_ENV, OFFLINE_TASKS, read_idx
from hgprompt_ray.data.scenes import closest_bin_rows, render_closest, render_counting
from hgprompt_ray.data.synthetic import render_dsprites, sample_dsprites_factors
from hgprompt_ray.paths import CACHE_ENV, cache_root

PIP_ONLY = [name for name in OFFLINE_TASKS if not name.startswith("fashion")]
STRUCTURED = {  # the VTAB-structured-style targets and their class counts
    "closest-distance": 6,
    "shape-azimuth": 8,
    "shape-elevation": 6,
    "digits-mirror": 2,
    "texture-blur": 4,
    "texture-contrast": 4,
    "sprites-count": 6,
    "sprites-distance": 4,
    "shape-lighting": 5,
    "scene-size": 4,
    "scene-spheres": 4,
    "scene-red": 4,
}


def test_suite_has_at_least_ten_pip_only_tasks():
    assert len(PIP_ONLY) >= 10
    assert set(PIP_ONLY) <= set(list_tasks("offline"))


@pytest.mark.parametrize("name", PIP_ONLY)
def test_splits_have_vtab_sizes_and_do_not_overlap(name):
    task = get_task(name)
    train, val, both, test = (task.split(s) for s in ("train800", "val200", "train800val200", "test"))
    assert (len(train), len(val), len(both)) == (800, 200, 1000)
    assert len(test) >= 500
    assert set(np.unique(train.labels)) <= set(range(task.info.num_classes))
    assert len(np.unique(train.labels)) == task.info.num_classes  # every class is seen in training
    train_pixels = {np.asarray(train.image(i)).tobytes() for i in range(0, 800, 7)}
    if name not in (
        "digits",
        "digits-parity",
        "digits-high",
        "digits-mirror",
        "dsprites-shape",
        "dsprites-scale",
    ):
        # (tiny 8 px digits and coarse sprites can repeat exactly; the others must not leak)
        assert not train_pixels & {np.asarray(test.image(i)).tobytes() for i in range(0, len(test), 5)}
    image, label = train[0]
    assert image.mode == "RGB" and isinstance(label, int)


@pytest.mark.parametrize("name", STRUCTURED)
def test_structured_tasks_have_every_class_in_every_split(name):
    task = get_task(name)
    assert task.info.num_classes == len(task.info.class_names) == STRUCTURED[name]
    assert task.info.description and task.info.source and task.info.native_size in ((64, 64), (8, 8))
    classes = np.arange(STRUCTURED[name])
    for split in ("train800", "val200", "test"):
        counts = np.bincount(task.split(split).labels, minlength=len(classes))
        assert len(counts) == len(classes) and counts.min() > 0, (split, counts)
        assert counts.min() >= 0.4 * counts.mean(), (split, counts)  # roughly balanced


_BUILDERS = {  # each generated image set once: name -> its images, built from pools.DATA_SEED
    "closest-distance": lambda: pools.closest()["images"],
    "shape-azimuth": lambda: pools.shapes()["images"],
    "digits-mirror": lambda: pools.digits_mirror()[0],
    "texture-blur": lambda: pools.texture_levels("blur")["train_images"],
    "texture-contrast": lambda: pools.texture_levels("contrast")["test_images"],
    "sprites-count": lambda: pools.sprite_counts()["images"],
    "sprites-distance": lambda: pools.sprite_distances()["images"],
    "shape-lighting": lambda: pools.shape_lightings()["images"],
    "scene-size": lambda: pools.scene_sizes()["images"],
    "scene-spheres": lambda: pools.scene_spheres()["images"],
    "scene-red": lambda: pools.scene_reds()["images"],
}


@pytest.mark.parametrize("name", _BUILDERS)
def test_structured_images_are_a_function_of_the_data_seed(name, tmp_path, monkeypatch):
    monkeypatch.setattr(pools, "POOL_SIZE", 60)  # small pools, built afresh in empty caches
    built = []
    for seed, cache in ((0, "a"), (0, "b"), (1, "c")):
        monkeypatch.setattr(pools, "DATA_SEED", seed)
        monkeypatch.setenv(CACHE_ENV, str(tmp_path / cache))
        built.append(_BUILDERS[name]())
    first, again, other = built
    assert first.dtype == np.uint8 and first.shape[1:3] in ((64, 64), (8, 8))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)  # (digits-mirror: another half is mirrored)


def test_digits_mirror_flips_exactly_the_mirrored_half():
    digits, _ = pools.digits()
    images, mirrored = pools.digits_mirror()
    assert abs(int(mirrored.sum()) - len(mirrored) // 2) <= 1
    np.testing.assert_array_equal(images[mirrored == 1], digits[mirrored == 1][:, :, ::-1])
    np.testing.assert_array_equal(images[mirrored == 0], digits[mirrored == 0])


def test_shape_azimuth_and_elevation_label_the_same_images():
    azimuth, elevation = get_task("shape-azimuth").split("test"), get_task("shape-elevation").split("test")
    np.testing.assert_array_equal(azimuth.images, elevation.images)
    stored = pools.shapes()
    assert np.all(np.abs(stored["azimuth_deg"] - 45.0 * stored["azimuth"]) <= 45.0 / 2)
    assert np.all(np.abs(stored["elevation_deg"] - (20.0 + 10.0 * stored["elevation"])) <= 5.0)


def test_closest_object_stands_in_its_distance_bin():
    labels = np.repeat(np.arange(6), 3)
    images = render_closest(labels, np.random.default_rng(3))
    assert images.shape == (18, 64, 64, 3) and images.dtype == np.uint8
    bottoms = []
    for image, label in zip(images, labels):
        saturated = image.max(axis=2).astype(int) - image.min(axis=2).astype(int) > 25  # the floor is grey
        bottom = np.flatnonzero(saturated.any(axis=1)).max() + 1  # lowest object pixel's lower edge
        low, high = closest_bin_rows(int(label))
        assert low - 2.5 <= bottom <= high + 1, (label, bottom, low, high)  # a cube ends 0.15 r above
        bottoms.append(bottom)
    assert np.all(np.diff(np.array(bottoms).reshape(6, 3).mean(axis=1)) < 0)  # nearer bins sit lower


def test_splits_are_deterministic_for_a_seed():
    task = get_task("count")
    first, again, other = (
        task.split("train800", seed=1),
        task.split("train800", seed=1),
        task.split("train800", seed=2),
    )
    np.testing.assert_array_equal(first.labels, again.labels)
    assert np.array_equal(np.asarray(first.image(5)), np.asarray(again.image(5)))
    assert not np.array_equal(first.labels, other.labels)


def test_generated_data_is_cached_and_reused():
    get_task("dsprites-shape").split("train800")
    cached = sorted((cache_root() / "data").glob("dsprites-*.npz"))
    assert len(cached) == 1
    before = cached[0].stat().st_mtime_ns
    get_task("dsprites-location").split("test")  # shares the same pool
    assert cached[0].stat().st_mtime_ns == before


def test_related_relabelings_share_images():
    digits, parity = get_task("digits").split("train800"), get_task("digits-parity").split("train800")
    np.testing.assert_array_equal(parity.labels, digits.labels % 2)
    high = get_task("digits-high").split("train800")
    np.testing.assert_array_equal(high.labels, (digits.labels >= 5).astype(int))


def test_backbone_transform_resizes_and_normalises():
    split = get_task("textile").split(
        "val200", transform=backbone_transform(56, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    )
    image, _ = split[0]
    assert isinstance(image, torch.Tensor) and image.shape == (3, 56, 56)
    assert image.min() >= -2.0 - 1e-6 and image.max() <= 2.0 + 1e-6


def test_dsprites_generator_is_faithful_to_the_factors():
    factors = sample_dsprites_factors(300, np.random.default_rng(0))
    assert factors.shape.max() == 2 and factors.scale.max() == 5 and factors.orientation.max() <= 39
    images = render_dsprites(factors)
    assert images.shape == (300, 64, 64) and images.dtype == np.uint8
    area = (images > 127).sum(axis=(1, 2))
    # Larger scale -> larger sprite, for every shape.
    for shape in range(3):
        small = area[(factors.shape == shape) & (factors.scale == 0)].mean()
        large = area[(factors.shape == shape) & (factors.scale == 5)].mean()
        assert large > 2.5 * small
    # The sprite's centre of mass follows the x factor.
    xs = np.array([np.argwhere(img > 127)[:, 1].mean() for img in images])
    assert np.corrcoef(xs, factors.x)[0, 1] > 0.99


def test_counting_scenes_hold_the_requested_number_of_objects():
    counts = np.array([3, 10, 6])
    images = render_counting(counts, np.random.default_rng(1))
    from scipy import ndimage

    for image, count in zip(images, counts):
        saturation = image.max(axis=2).astype(int) - image.min(axis=2).astype(int)
        _, found = ndimage.label(ndimage.binary_opening(saturation > 25))
        assert found == count


def _write_idx(path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_from_idx_files(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for part, count in (("train", 1200), ("t10k", 300)):
        labels = rng.integers(0, 10, count)
        _write_idx(
            tmp_path / f"{part}-images-idx3-ubyte.gz", np.repeat(labels * 20, 28 * 28).reshape(count, 28, 28)
        )
        _write_idx(tmp_path / f"{part}-labels-idx1-ubyte.gz", labels)
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path))
    fine, coarse = get_task("fashion-mnist"), get_task("fashion-coarse")
    train, test = fine.split("train800"), fine.split("test")
    assert (len(train), len(test)) == (800, 300)
    assert all(int(np.asarray(train.image(i))[0, 0, 0]) == 20 * train.labels[i] for i in range(0, 800, 37))
    grouped = coarse.split("train800")
    np.testing.assert_array_equal(grouped.labels, np.array([0, 1, 0, 1, 0, 2, 0, 2, 3, 2])[train.labels])
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(b"\x00\x00\x08\x01\x00\x00\x01\x2c" + b"\x01")
    )
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "t10k-labels-idx1-ubyte.gz")


def test_fashion_mnist_unavailable_names_the_apt_command(tmp_path, monkeypatch):
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path / "absent"))
    task = get_task("fashion-mnist")
    available, reason = task.availability()
    assert not available and "apt-get install dataset-fashion-mnist" in reason
    with pytest.raises(TaskUnavailableError, match="dataset-fashion-mnist"):
        task.split("train800")


def test_readable_here_keeps_the_order_and_gives_the_missing_tasks_fix(tmp_path, monkeypatch):
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path / "absent"))
    readable, unreadable = readable_here(["digits", "fashion-mnist", "count", "fashion-coarse"])
    assert readable == ["digits", "count"]
    assert list(unreadable) == ["fashion-mnist", "fashion-coarse"]
    assert all("apt-get install dataset-fashion-mnist" in reason for reason in unreadable.values())
    # a library's prompt from a folder on another machine, or from a task this version lacks
    readable, unreadable = readable_here(["digits", str(tmp_path / "their-folder"), "no-such-task"])
    assert readable == ["digits"] and "does not exist" in unreadable[str(tmp_path / "their-folder")]
    assert "must be a registered task" in unreadable["no-such-task"]

"""The offline suite's image pools, generated (seeded) or loaded from pip packages.

Each pool function returns one pool: a dict of arrays (``images`` and the labels or factors) or
an ``(images, labels)`` pair. Generated pools are built once from :data:`DATA_SEED` and cached
as ``.npz`` under ``$HGPROMPT_CACHE/data`` (:func:`cached_arrays`, written atomically), so their
images never change; the digits pools are re-read from scikit-learn. :func:`cached_arrays`,
:func:`data_rng` and :func:`balanced` are the helpers they share.
:mod:`hgprompt_ray.data.offline` draws each task's splits from them.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np

from hgprompt_ray.atomic import atomic_path
from hgprompt_ray.data.scenes import (
    CLOSEST_BINS,
    SCENE_LARGE_COUNTS,
    SCENE_RED_COUNTS,
    SCENE_SPHERE_COUNTS,
    render_closest,
    render_counting,
    render_scene_reds,
    render_scene_sizes,
    render_scene_spheres,
)
from hgprompt_ray.data.shapes3d import (
    SHAPE_LIGHTINGS,
    render_shapes,
    sample_lighting_factors,
    sample_shape_factors,
)
from hgprompt_ray.data.synthetic import (
    SPRITE_COUNT_MAX,
    SPRITE_DISTANCE_EDGES,
    SpriteScenes,
    render_dsprites,
    render_sprite_counts,
    render_sprite_pairs,
    sample_dsprites_factors,
)
from hgprompt_ray.data.texture_patches import cut_degraded_patches, cut_texture_patches
from hgprompt_ray.paths import cache_root

__all__ = [
    "DATA_SEED",
    "GENERATOR_VERSION",
    "POOL_SIZE",
    "balanced",
    "cached_arrays",
    "closest",
    "count_pool",
    "counting",
    "data_rng",
    "digits",
    "digits_mirror",
    "dsprites",
    "scene_reds",
    "scene_sizes",
    "scene_spheres",
    "shape_lightings",
    "shapes",
    "sprite_counts",
    "sprite_distances",
    "texture_levels",
    "textures",
]

POOL_SIZE = 2000
"""Images in each generated pool."""
DATA_SEED = 0
"""Seed of every generated pool: the images never change."""
GENERATOR_VERSION = 2
"""Part of each cached pool's file name: bump it when a renderer's images change."""


def cached_arrays(name: str, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Pool ``name``'s arrays from the cache, or ``build()`` them and cache them (atomically).

    The file name holds the data seed and :data:`GENERATOR_VERSION`.
    """
    path = cache_root() / "data" / f"{name}-seed{DATA_SEED}-v{GENERATOR_VERSION}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as stored:
            return {key: stored[key] for key in stored.files}
    arrays = build()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
    return arrays


def data_rng(name: str) -> np.random.Generator:
    """The generator of pool ``name``'s images: seeded by the data seed and the name.

    Never ``default_rng(DATA_SEED)`` alone: its first permutation is the split draw's at split
    seed 0, which would tie the labels to train800 (every mirrored digit in it, for one).
    """
    return np.random.default_rng([DATA_SEED, zlib.crc32(name.encode())])


def count_pool() -> tuple[np.ndarray, np.ndarray]:
    """The count scenes and their labels: the number of objects less 3 (classes 0-7)."""
    arrays = counting()
    return arrays["images"], arrays["counts"] - 3


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 handwritten digits as uint8 (N, 8, 8) and their digits (not cached)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return images, bunch.target.astype(np.int64)


def digits_mirror() -> tuple[np.ndarray, np.ndarray]:
    """The digits images, a fixed random half mirrored left-right; label 1 = mirrored."""
    images, _ = digits()
    order = data_rng("digits-mirror").permutation(len(images))
    mirrored = np.zeros(len(images), dtype=np.int64)
    mirrored[order[: len(images) // 2]] = 1
    images = np.where(mirrored[:, None, None] == 1, images[:, :, ::-1], images)
    return images, mirrored


def dsprites() -> dict[str, np.ndarray]:
    """The dSprites pool: ``images`` and the factor indices (``shape``, ``scale``, ``orientation``, ``x``, ``y``)."""

    def build() -> dict[str, np.ndarray]:
        factors = sample_dsprites_factors(POOL_SIZE, np.random.default_rng(DATA_SEED))
        return {"images": render_dsprites(factors), **factors._asdict()}

    return cached_arrays("dsprites", build)


def counting() -> dict[str, np.ndarray]:
    """The count pool: CLEVR-style ``images`` of 3-10 objects and their ``counts``."""

    def build() -> dict[str, np.ndarray]:
        rng = np.random.default_rng(DATA_SEED)
        counts = rng.integers(3, 11, POOL_SIZE)
        return {"images": render_counting(counts, rng), "counts": counts}

    return cached_arrays("count", build)


def balanced(
    name: str, classes: int, render: Callable[[np.ndarray, np.random.Generator], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Pool ``name``: ``POOL_SIZE`` labels, each of ``classes`` equally often in a seeded random order
    (``data_rng(name)``), rendered by ``render(labels, rng)`` (the images and any factors), cached."""

    def build() -> dict[str, np.ndarray]:
        rng = data_rng(name)
        labels = rng.permutation(np.arange(POOL_SIZE) % classes)
        return {"labels": labels, **render(labels, rng)}

    return cached_arrays(name, build)


def closest() -> dict[str, np.ndarray]:
    """The closest-distance pool: ``images`` and ``labels`` (distance bin of the closest object)."""
    return balanced(
        "closest-distance", CLOSEST_BINS, lambda labels, rng: {"images": render_closest(labels, rng)}
    )


def shapes() -> dict[str, np.ndarray]:
    """The smallNORB-style pool shared by shape-azimuth and shape-elevation: ``images`` and factors."""

    def build() -> dict[str, np.ndarray]:
        rng = data_rng("shapes3d")
        factors = sample_shape_factors(POOL_SIZE, rng)
        return {"images": render_shapes(factors, rng), **factors._asdict()}

    return cached_arrays("shapes3d", build)


def _sprite_arrays(scenes: SpriteScenes) -> dict[str, np.ndarray]:
    return {"images": scenes.images, "centres": scenes.centres, "radii": scenes.radii}


def sprite_counts() -> dict[str, np.ndarray]:
    """The sprites-count pool: ``images``, ``labels`` (count less 1), sprite ``centres`` and ``radii``."""
    return balanced(
        "sprites-count",
        SPRITE_COUNT_MAX,
        lambda labels, rng: _sprite_arrays(render_sprite_counts(labels + 1, rng)),
    )


def sprite_distances() -> dict[str, np.ndarray]:
    """The sprites-distance pool: ``images``, ``labels`` (distance bin), ``centres`` and ``radii``."""
    return balanced(
        "sprites-distance",
        len(SPRITE_DISTANCE_EDGES) - 1,
        lambda labels, rng: _sprite_arrays(render_sprite_pairs(labels, rng)),
    )


def shape_lightings() -> dict[str, np.ndarray]:
    """The shape-lighting pool: ``images``, ``labels`` (light direction) and the view factors."""

    def render(labels: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        factors = sample_lighting_factors(labels, rng)
        return {"images": render_shapes(factors, rng), **factors._asdict()}

    return balanced("shape-lighting", len(SHAPE_LIGHTINGS), render)


def scene_sizes() -> dict[str, np.ndarray]:
    """The scene-size pool: ``images`` and ``labels`` (how many objects are large)."""
    return balanced(
        "scene-size", SCENE_LARGE_COUNTS, lambda labels, rng: {"images": render_scene_sizes(labels, rng)}
    )


def scene_spheres() -> dict[str, np.ndarray]:
    """The scene-spheres pool: ``images`` and ``labels`` (how many objects are spheres)."""
    return balanced(
        "scene-spheres",
        SCENE_SPHERE_COUNTS,
        lambda labels, rng: {"images": render_scene_spheres(labels, rng)},
    )


def scene_reds() -> dict[str, np.ndarray]:
    """The scene-red pool: ``images`` and ``labels`` (how many objects are red)."""
    return balanced(
        "scene-red", SCENE_RED_COUNTS, lambda labels, rng: {"images": render_scene_reds(labels, rng)}
    )


def textures() -> dict[str, np.ndarray]:
    """The textures patches: ``train_images``/``train_labels`` and ``test_images``/``test_labels``."""
    return cached_arrays("textures", lambda: cut_texture_patches(np.random.default_rng(DATA_SEED)))


def texture_levels(kind: str) -> dict[str, np.ndarray]:
    """``POOL_SIZE`` new texture patches at 4 levels of ``kind`` (texture_patches.cut_degraded_patches)."""
    return cached_arrays(
        f"texture-{kind}", lambda: cut_degraded_patches(kind, POOL_SIZE, data_rng(f"texture-{kind}"))
    )

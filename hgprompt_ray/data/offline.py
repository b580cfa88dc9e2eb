"""The offline suite: tasks built from pip (and optionally Debian) packages, no network needed.

| task | data | classes |
| --- | --- | --- |
| digits | scikit-learn ``load_digits`` (1,797 real 8 x 8 handwritten digits) | 10 |
| digits-parity | the same images, label = digit mod 2 | 2 |
| digits-high | the same images, label = digit >= 5 | 2 |
| textile | ``conformal-clip-data`` simulated textiles: nominal / local / global defect | 3 |
| textile-defect | the same images, nominal vs defective | 2 |
| textures | scikit-image's brick, grass, gravel, moon, Hubble deep field and IHC images, cut into 64 px grey patches (train/val from the top 2/3, test from the bottom 1/3 of each image) | 6 |
| dsprites-location | generated dSprites, x position in 16 bins (VTAB's dsprites location) | 16 |
| dsprites-orientation | generated dSprites, orientation in 16 bins (VTAB's dsprites orientation) | 16 |
| dsprites-shape | generated dSprites, shape | 3 |
| dsprites-scale | generated dSprites, scale | 6 |
| count | generated CLEVR-style scenes, 3-10 objects (VTAB's CLEVR count) | 8 |
| closest-distance | generated CLEVR-style scenes in perspective, distance bin of the closest object (VTAB's CLEVR closest-object distance) | 6 |
| shape-azimuth | generated smallNORB-style 3-D solids, azimuth in 8 bins of 45 degrees (VTAB's smallNORB azimuth) | 8 |
| shape-elevation | the same images, elevation in 6 bins of 10 degrees, 20-70 degrees (VTAB's smallNORB elevation) | 6 |
| digits-mirror | the digits images, a fixed half of them mirrored left-right: upright or mirrored | 2 |
| texture-blur | new patches of the textures images, Gaussian blur sigma 0, 1, 2 or 4 px (train/val and test regions as in textures) | 4 |
| texture-contrast | new patches of the textures images, contrast scaled by 1, 1/2, 1/4 or 1/8 about the patch mean | 4 |
| sprites-count | generated dSprites-style sprites, 1-6 apart in one image: how many | 6 |
| sprites-distance | generated pairs of dSprites-style sprites, distance between their centres in 4 bins of 8 px, 19-51 px | 4 |
| shape-lighting | generated smallNORB-style 3-D solids lit from the left, right, above, below or front (smallNORB has 6 lightings) | 5 |
| scene-size | generated CLEVR-style scenes of 3-8 objects in CLEVR's two sizes: how many are large (0-3) | 4 |
| scene-spheres | generated CLEVR-style scenes of 3-8 spheres, cubes and cylinders: how many are spheres (0-3) | 4 |
| scene-red | generated CLEVR-style scenes of 3-8 objects in CLEVR's eight colours: how many are red (0-3) | 4 |
| fashion-mnist | Debian ``dataset-fashion-mnist`` (60k + 10k), when installed | 10 |
| fashion-coarse | the same, grouped into tops / trousers-dresses / footwear / bags | 4 |

Generated pools hold 2,000 images (data seed fixed at 0, so the images never change), cached as
``.npz`` under ``$HGPROMPT_CACHE/data`` (written atomically; :mod:`hgprompt_ray.data.pools`).
train800 and val200 are drawn from the pool by the split seed; test is the rest of the pool (at least 500 images), or the official
test split for Fashion-MNIST. The texture-blur and texture-contrast pools, like textures, keep
their test patches (600 of the 2,000) apart: they are cut from the bottom third of each image.
Tasks that relabel or re-cut the same images share an image set (``registry.IMAGE_SETS``), so
none is ever a source for another. sprites-count, sprites-distance, shape-lighting, scene-size,
scene-spheres and scene-red each render new images (their own image set) in the style of the
dsprites, shape and count tasks, so every prompt trained on those is an eligible source for them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import partial

import numpy as np

from hgprompt_ray.data import pools
from hgprompt_ray.data.base import (
    ArraySplit,
    ImageSplit,
    Task,
    TaskInfo,
    pool_split_indices,
    vtab_split_indices,
)
from hgprompt_ray.data.packaged import FASHION_MNIST_ENV, FashionTask, TextileTask, read_idx
from hgprompt_ray.data.scenes import CLOSEST_BINS, SCENE_LARGE_COUNTS, SCENE_RED_COUNTS, SCENE_SPHERE_COUNTS
from hgprompt_ray.data.shapes3d import SHAPE_LIGHTINGS
from hgprompt_ray.data.synthetic import SPRITE_COUNT_MAX, SPRITE_DISTANCE_EDGES
from hgprompt_ray.data.texture_patches import TEXTURE_LEVELS, TEXTURE_SOURCES

__all__ = ["FASHION_MNIST_ENV", "OFFLINE_TASKS", "offline_task", "read_idx"]


class _PoolTask(Task):
    """A task whose splits are drawn from one in-memory pool (test = the rest of the pool)."""

    def __init__(self, info: TaskInfo, pool: Callable[[], tuple[np.ndarray, np.ndarray]]) -> None:
        self.info = info
        self._pool = pool

    def _split(self, split: str, seed: int) -> ImageSplit:
        images, labels = self._pool()
        index = pool_split_indices(len(labels), split, seed)
        return ArraySplit(images[index], labels[index])


def _relabelled(
    pool: Callable[[], tuple[np.ndarray, np.ndarray]], relabel: Callable[[np.ndarray], np.ndarray]
) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    """A pool with the same images and new labels; the source pool is loaded once per call."""

    def build() -> tuple[np.ndarray, np.ndarray]:
        images, labels = pool()
        return images, relabel(labels).astype(np.int64)

    return build


def _array_pool(
    arrays: Callable[[], dict[str, np.ndarray]], key: str
) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    """A pool of a cached generator's images, labelled by its array ``key``."""

    def pool() -> tuple[np.ndarray, np.ndarray]:
        stored = arrays()
        return stored["images"], stored[key].astype(np.int64)

    return pool


class _HeldOutTask(Task):
    """A task with a training pool (train800 / val200 drawn from it) and a separate test set."""

    def __init__(self, info: TaskInfo, arrays: Callable[[], dict[str, np.ndarray]]) -> None:
        self.info = info
        self._arrays = arrays

    def _split(self, split: str, seed: int) -> ImageSplit:
        arrays = self._arrays()
        if split == "test":
            return ArraySplit(arrays["test_images"], arrays["test_labels"])
        index = vtab_split_indices(len(arrays["train_labels"]), split, seed)
        return ArraySplit(arrays["train_images"][index], arrays["train_labels"][index])


def _pool_task(
    name: str,
    classes: tuple[str, ...],
    size: tuple[int, int],
    description: str,
    source: str,
    pool: Callable[[], tuple[np.ndarray, np.ndarray]],
) -> Task:
    info = TaskInfo(name, "offline", len(classes), classes, size, description, source)
    return _PoolTask(info, pool)


def _dsprites_pool(
    label: Callable[[dict[str, np.ndarray]], np.ndarray],
) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    def pool() -> tuple[np.ndarray, np.ndarray]:
        arrays = pools.dsprites()
        return arrays["images"], label(arrays).astype(np.int64)

    return pool


def _texture_task(name: str, kind: str, description: str) -> Task:
    classes = tuple(f"{kind}{level:g}" for level in TEXTURE_LEVELS[kind])
    source = "scikit-image data (bundled images): new patches of the textures task's images"
    info = TaskInfo(name, "offline", len(classes), classes, (64, 64), description, source)
    return _HeldOutTask(info, partial(pools.texture_levels, kind))


def _scene_count_task(
    name: str,
    label: str,
    counted: str,
    objects: str,
    attribute: str,
    classes: int,
    pool: Callable[[], dict[str, np.ndarray]],
) -> Task:
    """A CLEVR-style task that counts a scene's objects of one attribute value (``classes`` counts)."""
    return _pool_task(
        name,
        tuple(f"{i} {label}" for i in range(classes)),
        (64, 64),
        f"number of {counted} (0-{classes - 1}) in a CLEVR-style scene of 3-8 {objects}",
        f"generated (CLEVR-style scenes, {attribute})",
        _array_pool(pool, "labels"),
    )


_DSPRITES_SOURCE = "generated (dSprites factors: 3 shapes, 6 scales, 40 orientations, 32 x 32 positions)"
_SHAPES_SOURCE = "generated (smallNORB-style: 5 solids, per-axis stretch, azimuth, elevation, lighting)"
_SPRITE_SCENES_SOURCE = "generated (dSprites-style sprites: 3 shapes, 6 scales, 40 orientations, apart)"
_DIGIT_NAMES = tuple(str(i) for i in range(10))

OFFLINE_TASKS: dict[str, Callable[[], Task]] = {
    "digits": lambda: _pool_task(
        "digits", _DIGIT_NAMES, (8, 8), "handwritten digit", "scikit-learn load_digits", pools.digits
    ),
    "digits-parity": lambda: _pool_task(
        "digits-parity",
        ("even", "odd"),
        (8, 8),
        "parity of a handwritten digit",
        "scikit-learn load_digits",
        _relabelled(pools.digits, lambda y: y % 2),
    ),
    "digits-high": lambda: _pool_task(
        "digits-high",
        ("0-4", "5-9"),
        (8, 8),
        "is a handwritten digit >= 5",
        "scikit-learn load_digits",
        _relabelled(pools.digits, lambda y: y >= 5),
    ),
    "textile": lambda: TextileTask("textile", coarse=False),
    "textile-defect": lambda: TextileTask("textile-defect", coarse=True),
    "textures": lambda: _HeldOutTask(
        TaskInfo(
            "textures",
            "offline",
            len(TEXTURE_SOURCES),
            TEXTURE_SOURCES,
            (64, 64),
            "which scikit-image texture a 64 px grey patch comes from",
            "scikit-image data (bundled images)",
        ),
        pools.textures,
    ),
    "dsprites-location": lambda: _pool_task(
        "dsprites-location",
        tuple(f"x{i}" for i in range(16)),
        (64, 64),
        "sprite x position (16 bins)",
        _DSPRITES_SOURCE,
        _dsprites_pool(lambda a: a["x"] // 2),
    ),
    "dsprites-orientation": lambda: _pool_task(
        "dsprites-orientation",
        tuple(f"o{i}" for i in range(16)),
        (64, 64),
        "sprite orientation (16 bins)",
        _DSPRITES_SOURCE,
        _dsprites_pool(lambda a: (a["orientation"] * 16) // 40),
    ),
    "dsprites-shape": lambda: _pool_task(
        "dsprites-shape",
        ("square", "ellipse", "heart"),
        (64, 64),
        "sprite shape",
        _DSPRITES_SOURCE,
        _dsprites_pool(lambda a: a["shape"]),
    ),
    "dsprites-scale": lambda: _pool_task(
        "dsprites-scale",
        tuple(f"s{i}" for i in range(6)),
        (64, 64),
        "sprite scale",
        _DSPRITES_SOURCE,
        _dsprites_pool(lambda a: a["scale"]),
    ),
    "count": lambda: _pool_task(
        "count",
        tuple(str(i) for i in range(3, 11)),
        (64, 64),
        "number of objects in a CLEVR-style scene (3-10)",
        "generated (CLEVR-style scenes)",
        pools.count_pool,
    ),
    "closest-distance": lambda: _pool_task(
        "closest-distance",
        tuple(f"d{i}" for i in range(CLOSEST_BINS)),
        (64, 64),
        "distance bin of the closest object in a CLEVR-style scene (0 = nearest)",
        "generated (CLEVR-style scenes in perspective, 3-10 objects)",
        _array_pool(pools.closest, "labels"),
    ),
    "shape-azimuth": lambda: _pool_task(
        "shape-azimuth",
        tuple(f"az{45 * i}" for i in range(8)),
        (64, 64),
        "azimuth of a shaded 3-D solid (8 bins of 45 degrees)",
        _SHAPES_SOURCE,
        _array_pool(pools.shapes, "azimuth"),
    ),
    "shape-elevation": lambda: _pool_task(
        "shape-elevation",
        tuple(f"el{20 + 10 * i}" for i in range(6)),
        (64, 64),
        "camera elevation over a shaded 3-D solid (6 bins of 10 degrees, 20-70)",
        _SHAPES_SOURCE,
        _array_pool(pools.shapes, "elevation"),
    ),
    "digits-mirror": lambda: _pool_task(
        "digits-mirror",
        ("upright", "mirrored"),
        (8, 8),
        "is a handwritten digit mirrored left-right",
        "scikit-learn load_digits (a fixed half mirrored)",
        pools.digits_mirror,
    ),
    "texture-blur": lambda: _texture_task(
        "texture-blur", "blur", "Gaussian blur of a texture patch (sigma 0, 1, 2, 4 px)"
    ),
    "texture-contrast": lambda: _texture_task(
        "texture-contrast", "contrast", "contrast of a texture patch (x1, 1/2, 1/4, 1/8 about its mean)"
    ),
    "sprites-count": lambda: _pool_task(
        "sprites-count",
        tuple(str(i) for i in range(1, SPRITE_COUNT_MAX + 1)),
        (64, 64),
        "number of dSprites-style sprites in an image (1-6)",
        _SPRITE_SCENES_SOURCE,
        _array_pool(pools.sprite_counts, "labels"),
    ),
    "sprites-distance": lambda: _pool_task(
        "sprites-distance",
        tuple(f"d{low:g}-{high:g}" for low, high in itertools.pairwise(SPRITE_DISTANCE_EDGES)),
        (64, 64),
        "distance between two dSprites-style sprites' centres (4 bins of 8 px, 19-51 px)",
        _SPRITE_SCENES_SOURCE,
        _array_pool(pools.sprite_distances, "labels"),
    ),
    "shape-lighting": lambda: _pool_task(
        "shape-lighting",
        SHAPE_LIGHTINGS,
        (64, 64),
        "where the light on a shaded 3-D solid comes from (left, right, above, below, front)",
        "generated (smallNORB-style: 5 solids, per-axis stretch, random azimuth and elevation, 5 lights)",
        _array_pool(pools.shape_lightings, "labels"),
    ),
    "scene-size": lambda: _scene_count_task(
        "scene-size",
        "large",
        "large objects",
        "small and large objects",
        "CLEVR's two object sizes",
        SCENE_LARGE_COUNTS,
        pools.scene_sizes,
    ),
    "scene-spheres": lambda: _scene_count_task(
        "scene-spheres",
        "spheres",
        "spheres",
        "spheres, cubes and cylinders",
        "CLEVR's three shapes",
        SCENE_SPHERE_COUNTS,
        pools.scene_spheres,
    ),
    "scene-red": lambda: _scene_count_task(
        "scene-red",
        "red",
        "red objects",
        "objects in CLEVR's eight colours",
        "CLEVR's eight colours",
        SCENE_RED_COUNTS,
        pools.scene_reds,
    ),
    "fashion-mnist": lambda: FashionTask("fashion-mnist", coarse=False),
    "fashion-coarse": lambda: FashionTask("fashion-coarse", coarse=True),
}


def offline_task(name: str) -> Task:
    """Build the offline task ``name`` (see the module table)."""
    return OFFLINE_TASKS[name]()

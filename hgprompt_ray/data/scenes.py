"""CLEVR-style scenes for the offline suite, at 64 x 64 RGB.

:func:`render_counting` draws 3 to 10 objects (spheres, cubes, cylinders seen from above:
shaded discs, squares, rounded squares; centres 1.5 px beyond the sum of their radii apart, so
only a cube's corners may touch another object) of random colour and size on a grey floor with
a light gradient. Colours are saturated (HSV s >= 0.45) so every object stands out from the
floor. :func:`render_closest` puts the same objects in perspective, for VTAB's closest-object
distance (see its docstring). Three renderers count objects by one of CLEVR's attributes, 0 to 3
of 3-8 objects: :func:`render_scene_sizes` by size (CLEVR's two), :func:`render_scene_spheres`
by shape, :func:`render_scene_reds` by colour (CLEVR's eight).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import NamedTuple

import numpy as np

from hgprompt_ray.data.synthetic import IMAGE_SIZE, place_apart

__all__ = [
    "CLEVR_COLOURS",
    "CLOSEST_BINS",
    "SCENE_LARGE_COUNTS",
    "SCENE_RED_COUNTS",
    "SCENE_SPHERE_COUNTS",
    "SceneLayout",
    "closest_bin_rows",
    "render_closest",
    "render_counting",
    "render_scene_reds",
    "render_scene_sizes",
    "render_scene_spheres",
]


def _saturated_colour(rng: np.random.Generator) -> np.ndarray:
    """An RGB colour (0-255) with HSV saturation >= 0.45, so objects never blend into the floor."""
    import colorsys

    hue, saturation, value = rng.uniform(0, 1), rng.uniform(0.45, 1.0), rng.uniform(0.45, 0.95)
    return np.array(colorsys.hsv_to_rgb(hue, saturation, value)) * 255


def _draw_object(
    canvas: np.ndarray,
    grid: tuple[np.ndarray, np.ndarray],
    centre: tuple[float, float],
    radius: float,
    kind: int,
    colour: np.ndarray,
) -> None:
    """Paint one CLEVR-style object (0 sphere, 1 cube, 2 cylinder, seen from above) onto ``canvas``."""
    yy, xx = grid
    dx, dy = (xx - centre[0]) / radius, (yy - centre[1]) / radius
    if kind == 0:  # sphere: shaded disc
        mask = dx * dx + dy * dy <= 1.0
        shade = 1.15 - 0.45 * np.clip((dx + 0.4) ** 2 + (dy + 0.4) ** 2, 0, 1)
    elif kind == 1:  # cube seen from above
        mask = np.maximum(np.abs(dx), np.abs(dy)) <= 0.85
        shade = 1.0 - 0.2 * (dy > 0)
    else:  # cylinder: rounded square
        mask = np.abs(dx) ** 4 + np.abs(dy) ** 4 <= 0.7
        shade = 1.05 - 0.25 * np.clip(dy, 0, 1)
    canvas[mask] = np.clip(colour[None, :] * shade[mask][:, None], 0, 255)


_COUNTING_RADII = (3.5, 6.0)  # pixels: render_counting's object sizes (and render_scene_reds')


def render_counting(counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """CLEVR-style scenes with ``counts[i]`` objects each, as uint8 RGB (N, 64, 64, 3).

    Objects' bounding discs do not overlap (rejection sampling of centres 1.5 px beyond the radii).
    """
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float64) + 0.5
    images = np.empty((len(counts), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for i, count in enumerate(counts):
        floor = 110 + 25 * (yy / IMAGE_SIZE) + rng.normal(0, 2, size=(IMAGE_SIZE, IMAGE_SIZE))
        canvas = np.repeat(floor[:, :, None], 3, axis=2)
        placed: list[tuple[float, float, float]] = []
        attempts = 0
        while len(placed) < count:
            attempts += 1
            radius = rng.uniform(*_COUNTING_RADII) if attempts < 2000 else 3.0
            cx, cy = rng.uniform(radius + 1, IMAGE_SIZE - radius - 1, size=2)
            if all((cx - px) ** 2 + (cy - py) ** 2 > (radius + pr + 1.5) ** 2 for px, py, pr in placed):
                placed.append((cx, cy, radius))
                kind = int(rng.integers(0, 3))
                _draw_object(canvas, (yy, xx), (cx, cy), radius, kind, _saturated_colour(rng))
        images[i] = np.clip(canvas, 0, 255).astype(np.uint8)
    return images


class SceneLayout(NamedTuple):
    """One scene's objects: their radii, and their kinds and colours where a task fixes them.

    A field left None is drawn as each object is painted: the kind uniform over the three, the
    colour by ``_saturated_colour``.
    """

    radii: np.ndarray  # (K,)
    kinds: np.ndarray | None = None  # (K,) 0 sphere, 1 cube, 2 cylinder
    colours: np.ndarray | None = None  # (K, 3), 0-255


def _render_scenes(
    labels: np.ndarray,
    layout: Callable[[int], SceneLayout],
    rng: np.random.Generator,
) -> np.ndarray:
    """One scene per label on :func:`render_counting`'s floor, its objects placed 1.5 px apart.

    ``layout(label)`` gives each scene's objects (:class:`SceneLayout`).
    The order of the draws from ``rng`` is part of each task's images (their pools are cached by
    seed): floor, layout, placement, then per object its kind and its colour (each only if not
    given).
    """
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float64) + 0.5
    images = np.empty((len(labels), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        floor = 110 + 25 * (yy / IMAGE_SIZE) + rng.normal(0, 2, size=(IMAGE_SIZE, IMAGE_SIZE))
        canvas = np.repeat(floor[:, :, None], 3, axis=2)
        radii, kinds, colours = layout(int(label))
        for k, ((cx, cy), radius) in enumerate(zip(place_apart(radii, 1.5, rng), radii)):
            kind = int(rng.integers(0, 3)) if kinds is None else int(kinds[k])
            colour = _saturated_colour(rng) if colours is None else colours[k]
            _draw_object(canvas, (yy, xx), (cx, cy), radius, kind, colour)
        images[i] = np.clip(canvas, 0, 255).astype(np.uint8)
    return images


SCENE_LARGE_COUNTS = 4  # labels 0-3: how many of a scene's objects are large
_SMALL_RADII, _LARGE_RADII = (3.0, 4.0), (6.0, 7.0)  # pixels; CLEVR's two sizes, never confused


def render_scene_sizes(large_counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """CLEVR-style scenes of 3 to 8 objects of which ``large_counts[i]`` (0-3) are large.

    CLEVR objects come in two sizes; here small objects have radius 3-4 px and large ones 6-7 px,
    so a large one covers at least twice the area of any small one. The total count is uniform
    over 3-8 whatever the label, the rest of the objects are small, and objects are placed
    1.5 px apart as :func:`render_counting`'s, with its objects, colours and floor.

    Shape:
        large_counts: (N,) ints in [0, 4). returns: (N, 64, 64, 3) uint8.
    """

    def layout(large: int) -> SceneLayout:
        total = int(rng.integers(3, 9))
        large_radii = rng.uniform(*_LARGE_RADII, large)
        return SceneLayout(np.concatenate([large_radii, rng.uniform(*_SMALL_RADII, total - large)]))

    return _render_scenes(large_counts, layout, rng)


SCENE_SPHERE_COUNTS = 4  # labels 0-3: how many of a scene's objects are spheres
_SHAPE_RADII = (5.0, 7.0)  # pixels: large enough that a disc, a square and a rounded square differ


def render_scene_spheres(sphere_counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """CLEVR-style scenes of 3 to 8 objects of which ``sphere_counts[i]`` (0-3) are spheres.

    CLEVR counts objects by attribute; here by shape. The other objects are cubes or cylinders
    (even odds), every object has radius 5-7 px whatever its shape, so size gives the shape
    away no more than it does in CLEVR, the total count is uniform over 3-8 whatever the label,
    and objects are placed 1.5 px apart with :func:`render_counting`'s colours and floor.

    Shape:
        sphere_counts: (N,) ints in [0, 4). returns: (N, 64, 64, 3) uint8.
    """

    def layout(spheres: int) -> SceneLayout:
        total = int(rng.integers(3, 9))
        kinds = np.concatenate([np.zeros(spheres, dtype=int), rng.integers(1, 3, total - spheres)])
        return SceneLayout(rng.uniform(*_SHAPE_RADII, total), kinds)

    return _render_scenes(sphere_counts, layout, rng)


SCENE_RED_COUNTS = 4  # labels 0-3: how many of a scene's objects are red
CLEVR_COLOURS: Mapping[str, tuple[int, int, int]] = MappingProxyType(
    {
        "gray": (87, 87, 87),
        "red": (173, 35, 35),
        "blue": (42, 75, 215),
        "green": (29, 105, 20),
        "brown": (129, 74, 25),
        "purple": (129, 38, 192),
        "cyan": (41, 208, 208),
        "yellow": (255, 238, 51),
    }
)
"""CLEVR's eight colours (RGB, from its generator's ``properties.json``)."""


def render_scene_reds(red_counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """CLEVR-style scenes of 3 to 8 objects in CLEVR's colours, ``red_counts[i]`` (0-3) of them red.

    CLEVR counts objects by attribute; here by colour. Every object takes one of CLEVR's eight
    colours (:data:`CLEVR_COLOURS`): the red ones red, each other one of the seven others with
    even odds (gray too, darker than the floor). Kinds are uniform over sphere, cube and cylinder
    and radii uniform over :func:`render_counting`'s 3.5-6 px whatever the colour, the total count
    is uniform over 3-8 whatever the label, and objects are placed 1.5 px apart on its floor.
    Shading scales a colour's channels together (up to clipping at 255, which only yellow
    reaches), so a red object stays red and brown, the nearest colour, stays brown: its green
    is 0.57 of its red, red's 0.20.

    Shape:
        red_counts: (N,) ints in [0, 4). returns: (N, 64, 64, 3) uint8.
    """
    palette = np.array(list(CLEVR_COLOURS.values()), dtype=np.float64)
    red = list(CLEVR_COLOURS).index("red")
    others = np.array([i for i in range(len(palette)) if i != red])

    def layout(reds: int) -> SceneLayout:
        total = int(rng.integers(3, 9))
        colours = np.concatenate([np.full(reds, red), rng.choice(others, total - reds)])
        return SceneLayout(rng.uniform(*_COUNTING_RADII, total), None, palette[colours])

    return _render_scenes(red_counts, layout, rng)


CLOSEST_BINS = 6
_HORIZON = -10.0  # image row of the horizon (above the image: the camera looks down at the floor)
_FOCAL = 64.0  # px; world units are the camera height: a floor point at depth Z is at row H + f / Z
_NEAREST_ROW, _FARTHEST_ROW = 62.0, 30.0  # the closest object's floor-contact row spans the bins
_MIN_ROW = 10.0  # the farthest any object stands


def closest_bin_rows(label: int) -> tuple[float, float]:
    """The floor-contact rows (low, high) of distance bin ``label`` (0 = nearest); equal-width bands."""
    width = (_NEAREST_ROW - _FARTHEST_ROW) / CLOSEST_BINS
    return _NEAREST_ROW - (label + 1) * width, _NEAREST_ROW - label * width


def render_closest(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """CLEVR-style scenes in perspective whose closest object lies in distance bin ``labels[i]``.

    A pinhole camera one unit above the floor sees 3 to 10 objects (radius 0.10-0.16) standing
    on it: an object at depth Z touches the floor at row ``horizon + f / Z`` and its image shrinks
    as 1 / Z. The bins split the closest object's floor-contact row into 6 equal bands, bin 0 the
    nearest (VTAB's CLEVR closest-object distance has 6 classes). Every other object stands
    deeper by more than the two radii, so none touches it, and objects are painted far to near,
    so the closest one is never hidden. The objects are the counting scenes' (:func:`render_counting`).

    Shape:
        labels: (N,) ints in [0, 6). returns: (N, 64, 64, 3) uint8.
    """
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float64) + 0.5
    deepest = _FOCAL / (_MIN_ROW - _HORIZON)
    images = np.empty((len(labels), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        floor = 110 + 25 * (yy / IMAGE_SIZE) + rng.normal(0, 2, size=(IMAGE_SIZE, IMAGE_SIZE))
        canvas = np.repeat(floor[:, :, None], 3, axis=2)
        low, high = closest_bin_rows(int(label))
        count = int(rng.integers(3, 11))
        radii = rng.uniform(0.10, 0.16, count)
        depths = np.empty(count)
        depths[0] = _FOCAL / (rng.uniform(low, high) - _HORIZON)
        for k in range(1, count):
            nearest = depths[0] + radii[0] + radii[k]
            depths[k] = rng.uniform(nearest, max(deepest, nearest + 0.1))
        for k in np.argsort(-depths, kind="stable"):  # far to near
            radius = radii[k] * _FOCAL / depths[k]
            row = _HORIZON + _FOCAL / depths[k]
            cx = rng.uniform(radius + 1, IMAGE_SIZE - radius - 1)
            kind = int(rng.integers(0, 3))
            _draw_object(canvas, (yy, xx), (cx, row - radius), radius, kind, _saturated_colour(rng))
        images[i] = np.clip(canvas, 0, 255).astype(np.uint8)
    return images

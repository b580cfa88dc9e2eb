"""Procedural image generators for the offline suite: dSprites-style sprites, CLEVR-style scenes.

dSprites (Matthey et al., 2017) has five factors: shape (square, ellipse, heart), scale
(6 values in [0.5, 1]), orientation (40 values in [0, 2 pi)), and x / y position (32 values each
in [0, 1]), rendered white on black at 64 x 64. :func:`render_dsprites` draws the same factors
with implicit shape equations evaluated at each pixel centre (anti-aliased by 2 x 2
supersampling). Factors are drawn uniformly and independently, as in dSprites.
:func:`render_sprite_counts` and :func:`render_sprite_pairs` draw several such sprites apart in
one image (1 to 6 of them; or two at a binned distance).

:func:`render_counting` draws CLEVR-style scenes: 3 to 10 non-overlapping objects (spheres,
cubes, cylinders seen from above: shaded discs, squares, rounded squares) of random colour and
size on a grey floor with a light gradient, at 64 x 64. Colours are saturated (HSV s >= 0.45)
so every object stands out from the floor. :func:`render_closest` puts the same objects in
perspective, for VTAB's closest-object distance (see its docstring); :func:`render_scene_sizes`
draws them in CLEVR's two sizes, 0 to 3 of them large, and :func:`render_scene_spheres` at one
size, 0 to 3 of them spheres.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

__all__ = [
    "CLOSEST_BINS",
    "DSPRITES_ORIENTATIONS",
    "DSPRITES_POSITIONS",
    "DSPRITES_SCALES",
    "DSPRITES_SHAPES",
    "SCENE_LARGE_COUNTS",
    "SCENE_SPHERE_COUNTS",
    "SPRITE_COUNT_MAX",
    "SPRITE_DISTANCE_EDGES",
    "DspritesFactors",
    "SpriteScenes",
    "closest_bin_rows",
    "render_closest",
    "render_counting",
    "render_dsprites",
    "render_scene_sizes",
    "render_scene_spheres",
    "render_sprite_counts",
    "render_sprite_pairs",
    "sample_dsprites_factors",
]

DSPRITES_SHAPES = ("square", "ellipse", "heart")
DSPRITES_SCALES = np.linspace(0.5, 1.0, 6)
DSPRITES_ORIENTATIONS = np.linspace(0.0, 2.0 * np.pi, 40, endpoint=False)
DSPRITES_POSITIONS = np.linspace(0.0, 1.0, 32)
_SIZE = 64
_SPRITE_RADIUS = 11.0  # pixels at scale 1
_MARGIN = 12.0  # position 0 maps to 12 px, position 1 to 52 px


class DspritesFactors(NamedTuple):
    """Factor indices of N sprites: shape (0-2), scale (0-5), orientation (0-39), x, y (0-31)."""

    shape: np.ndarray
    scale: np.ndarray
    orientation: np.ndarray
    x: np.ndarray
    y: np.ndarray


def sample_dsprites_factors(count: int, rng: np.random.Generator) -> DspritesFactors:
    """Independent uniform factor indices, as dSprites' full factorial design."""
    return DspritesFactors(
        shape=rng.integers(0, 3, count),
        scale=rng.integers(0, 6, count),
        orientation=rng.integers(0, 40, count),
        x=rng.integers(0, 32, count),
        y=rng.integers(0, 32, count),
    )


def _inside(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Is the point (u, v) of the unit sprite frame inside the shape?"""
    if shape == 0:  # square
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if shape == 1:  # ellipse, 2:1
        return (u / 1.0) ** 2 + (v / 0.5) ** 2 <= 1.0
    # heart: (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0, scaled to fit the unit frame, pointing down
    x, y = u * 1.25, -v * 1.25 + 0.15
    return (x * x + y * y - 1.0) ** 3 - x * x * y**3 <= 0.0


def render_dsprites(factors: DspritesFactors) -> np.ndarray:
    """Render sprites as uint8 images (N, 64, 64), 0 background, 255 sprite.

    Shape:
        returns: (N, 64, 64) uint8.
    """
    count = len(factors.shape)
    images = np.zeros((count, _SIZE, _SIZE), dtype=np.float64)
    for i in range(count):
        cx = _MARGIN + DSPRITES_POSITIONS[factors.x[i]] * (_SIZE - 2 * _MARGIN)
        cy = _MARGIN + DSPRITES_POSITIONS[factors.y[i]] * (_SIZE - 2 * _MARGIN)
        radius = _SPRITE_RADIUS * DSPRITES_SCALES[factors.scale[i]]
        angle = DSPRITES_ORIENTATIONS[factors.orientation[i]]
        images[i] = _sprite_coverage(int(factors.shape[i]), (cx, cy), radius, angle)
    return np.round(images * 255).astype(np.uint8)


def _sprite_coverage(shape: int, centre: tuple[float, float], radius: float, angle: float) -> np.ndarray:
    """The fraction (0-1) of each pixel of a 64 x 64 frame that one sprite covers.

    The sprite's unit frame is centred on ``centre`` (x, y in pixels), scaled by ``radius`` pixels
    and turned by ``angle``; 2 x 2 supersampling anti-aliases the edges.

    Shape:
        returns: (64, 64) float64.
    """
    offsets = (np.arange(2) + 0.5) / 2.0 - 0.5  # 2 x 2 supersampling
    grid = np.arange(_SIZE, dtype=np.float64) + 0.5
    cos, sin = np.cos(angle), np.sin(angle)
    coverage = np.zeros((_SIZE, _SIZE))
    for dy in offsets:
        for dx in offsets:
            px = (grid[None, :] + dx - centre[0]) / radius
            py = (grid[:, None] + dy - centre[1]) / radius
            u, v = cos * px + sin * py, -sin * px + cos * py
            coverage += _inside(shape, u, v)
    return coverage / offsets.size**2


SPRITE_COUNT_MAX = 6
SPRITE_DISTANCE_EDGES = np.array([19.0, 27.0, 35.0, 43.0, 51.0])
"""Pixel distances between the two sprites' centres that bound the 4 bins of sprite pairs."""
_SCENE_SPRITE_RADIUS = 7.0  # pixels at scale 1 in multi-sprite scenes: six dSprites-sized ones crowd 64 px
_SPRITE_EXTENT = 1.14  # every shape lies within this radius of its unit frame's centre (square: 0.8 sqrt 2)
_SPRITE_GAP = 3.0  # pixels between two sprites' bounding circles: never touching, even diagonally
_PLACEMENT_TRIES, _PLACEMENT_RESTARTS = 200, 100


class SpriteScenes(NamedTuple):
    """N images of several sprites and each sprite's factors; rows are padded with NaN (or -1)."""

    images: np.ndarray  # (N, 64, 64) uint8
    shapes: np.ndarray  # (N, K) shape index 0-2, -1 where an image has fewer sprites
    radii: np.ndarray  # (N, K) pixels
    angles: np.ndarray  # (N, K) radians
    centres: np.ndarray  # (N, K, 2) x, y in pixels


def _place_apart(extents: np.ndarray, gap: float, rng: np.random.Generator) -> np.ndarray:
    """Centres (x, y) of discs of radii ``extents`` inside the frame (1 px margin), ``gap`` apart.

    Rejection sampling in the given order; a placement that gets stuck starts again, so the
    discs' sizes never depend on how crowded a scene is.

    Shape:
        extents: (K,). returns: (K, 2).
    """
    for _ in range(_PLACEMENT_RESTARTS):
        centres: list[np.ndarray] = []
        for extent in extents:
            for _ in range(_PLACEMENT_TRIES):
                centre = rng.uniform(extent + 1, _SIZE - extent - 1, size=2)
                if all(np.hypot(*(centre - c)) >= extent + e + gap for c, e in zip(centres, extents)):
                    centres.append(centre)
                    break
            else:
                break  # stuck: start this scene's placement again
        else:
            return np.array(centres).reshape(len(extents), 2)
    raise RuntimeError(f"could not place discs of radii {extents.tolist()} {gap} px apart in {_SIZE} px")


def _random_sprites(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shapes, radii (px) and angles of ``count`` sprites, dSprites' factors drawn uniformly."""
    shapes = rng.integers(0, len(DSPRITES_SHAPES), count)
    radii = _SCENE_SPRITE_RADIUS * DSPRITES_SCALES[rng.integers(0, len(DSPRITES_SCALES), count)]
    angles = DSPRITES_ORIENTATIONS[rng.integers(0, len(DSPRITES_ORIENTATIONS), count)]
    return shapes, radii, angles


def _sprite_scenes(scenes: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> SpriteScenes:
    """Paint (shapes, radii, angles, centres) scenes white on black, rows padded to the largest."""
    width = max(len(shapes) for shapes, *_ in scenes)
    out = SpriteScenes(
        images=np.zeros((len(scenes), _SIZE, _SIZE), dtype=np.uint8),
        shapes=np.full((len(scenes), width), -1, dtype=np.int64),
        radii=np.full((len(scenes), width), np.nan),
        angles=np.full((len(scenes), width), np.nan),
        centres=np.full((len(scenes), width, 2), np.nan),
    )
    for i, (shapes, radii, angles, centres) in enumerate(scenes):
        coverage = np.zeros((_SIZE, _SIZE))
        for shape, radius, angle, centre in zip(shapes, radii, angles, centres):
            sprite = _sprite_coverage(int(shape), (centre[0], centre[1]), radius, angle)
            np.maximum(coverage, sprite, out=coverage)
        out.images[i] = np.round(coverage * 255).astype(np.uint8)
        count = len(shapes)
        out.shapes[i, :count], out.radii[i, :count], out.angles[i, :count] = shapes, radii, angles
        out.centres[i, :count] = centres
    return out


def render_sprite_counts(counts: np.ndarray, rng: np.random.Generator) -> SpriteScenes:
    """``counts[i]`` (1-6) dSprites-style sprites per image, apart and wholly inside the frame.

    Each sprite's shape, scale and orientation are drawn as dSprites' (uniform over its 3 shapes,
    6 scales and 40 orientations) at 7 px per unit scale instead of 11, so six fit; centres are
    uniform, every two sprites' bounding circles 3 px apart, so each sprite is one connected
    component of the image.

    Shape:
        counts: (N,) ints in [1, 6]. returns: images (N, 64, 64) uint8, factors (N, max count).
    """
    scenes = []
    for count in counts:
        shapes, radii, angles = _random_sprites(int(count), rng)
        scenes.append((shapes, radii, angles, _place_apart(radii * _SPRITE_EXTENT, _SPRITE_GAP, rng)))
    return _sprite_scenes(scenes)


def render_sprite_pairs(labels: np.ndarray, rng: np.random.Generator) -> SpriteScenes:
    """Two dSprites-style sprites per image whose centres lie ``SPRITE_DISTANCE_EDGES`` bin apart.

    Bin ``labels[i]`` spans ``SPRITE_DISTANCE_EDGES[label]`` to ``[label + 1]`` px (4 equal-width
    bins, 19-51 px); the distance is uniform within the bin and the direction uniform. The
    sprites are drawn as :func:`render_sprite_counts`'s; 19 px keeps the two largest 3 px apart,
    and 51 px still fits them inside the frame along a diagonal, so every bin is reachable.

    Shape:
        labels: (N,) ints in [0, 4). returns: images (N, 64, 64) uint8, factors (N, 2).
    """
    scenes = []
    for label in labels:
        shapes, radii, angles = _random_sprites(2, rng)
        extents = radii * _SPRITE_EXTENT
        low, high = SPRITE_DISTANCE_EDGES[label], SPRITE_DISTANCE_EDGES[label + 1]
        for _ in range(_PLACEMENT_TRIES * _PLACEMENT_RESTARTS):
            first = rng.uniform(extents[0] + 1, _SIZE - extents[0] - 1, size=2)
            distance, direction = rng.uniform(low, high), rng.uniform(0.0, 2.0 * np.pi)
            second = first + distance * np.array([np.cos(direction), np.sin(direction)])
            inside = np.all((second >= extents[1] + 1) & (second <= _SIZE - extents[1] - 1))
            if inside and distance >= extents.sum() + _SPRITE_GAP:
                break
        else:
            raise RuntimeError(f"could not place sprites of radii {radii.tolist()} in distance bin {label}")
        scenes.append((shapes, radii, angles, np.stack([first, second])))
    return _sprite_scenes(scenes)


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


def render_counting(counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """CLEVR-style scenes with ``counts[i]`` objects each, as uint8 RGB (N, 64, 64, 3).

    Objects do not overlap (rejection sampling of centres with a minimum distance).
    """
    yy, xx = np.mgrid[0:_SIZE, 0:_SIZE].astype(np.float64) + 0.5
    images = np.empty((len(counts), _SIZE, _SIZE, 3), dtype=np.uint8)
    for i, count in enumerate(counts):
        floor = 110 + 25 * (yy / _SIZE) + rng.normal(0, 2, size=(_SIZE, _SIZE))
        canvas = np.repeat(floor[:, :, None], 3, axis=2)
        placed: list[tuple[float, float, float]] = []
        attempts = 0
        while len(placed) < count:
            attempts += 1
            radius = rng.uniform(3.5, 6.0) if attempts < 2000 else 3.0
            cx, cy = rng.uniform(radius + 1, _SIZE - radius - 1, size=2)
            if all((cx - px) ** 2 + (cy - py) ** 2 > (radius + pr + 1.5) ** 2 for px, py, pr in placed):
                placed.append((cx, cy, radius))
                kind = int(rng.integers(0, 3))
                _draw_object(canvas, (yy, xx), (cx, cy), radius, kind, _saturated_colour(rng))
        images[i] = np.clip(canvas, 0, 255).astype(np.uint8)
    return images


def _render_scenes(
    labels: np.ndarray,
    layout: Callable[[int], tuple[np.ndarray, np.ndarray | None]],
    rng: np.random.Generator,
) -> np.ndarray:
    """One scene per label on :func:`render_counting`'s floor: ``layout(label)`` gives the objects'
    radii and kinds (None: each kind drawn as its object is painted), placed 1.5 px apart.

    The order of the draws from ``rng`` is part of each task's images (their pools are cached by
    seed): floor, layout, placement, then per object its kind (if not given) and its colour.
    """
    yy, xx = np.mgrid[0:_SIZE, 0:_SIZE].astype(np.float64) + 0.5
    images = np.empty((len(labels), _SIZE, _SIZE, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        floor = 110 + 25 * (yy / _SIZE) + rng.normal(0, 2, size=(_SIZE, _SIZE))
        canvas = np.repeat(floor[:, :, None], 3, axis=2)
        radii, kinds = layout(int(label))
        for k, ((cx, cy), radius) in enumerate(zip(_place_apart(radii, 1.5, rng), radii)):
            kind = int(rng.integers(0, 3)) if kinds is None else int(kinds[k])
            _draw_object(canvas, (yy, xx), (cx, cy), radius, kind, _saturated_colour(rng))
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

    def layout(large: int) -> tuple[np.ndarray, None]:
        total = int(rng.integers(3, 9))
        large_radii = rng.uniform(*_LARGE_RADII, large)
        return np.concatenate([large_radii, rng.uniform(*_SMALL_RADII, total - large)]), None

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

    def layout(spheres: int) -> tuple[np.ndarray, np.ndarray]:
        total = int(rng.integers(3, 9))
        kinds = np.concatenate([np.zeros(spheres, dtype=int), rng.integers(1, 3, total - spheres)])
        return rng.uniform(*_SHAPE_RADII, total), kinds

    return _render_scenes(sphere_counts, layout, rng)


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
    yy, xx = np.mgrid[0:_SIZE, 0:_SIZE].astype(np.float64) + 0.5
    deepest = _FOCAL / (_MIN_ROW - _HORIZON)
    images = np.empty((len(labels), _SIZE, _SIZE, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        floor = 110 + 25 * (yy / _SIZE) + rng.normal(0, 2, size=(_SIZE, _SIZE))
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
            cx = rng.uniform(radius + 1, _SIZE - radius - 1)
            kind = int(rng.integers(0, 3))
            _draw_object(canvas, (yy, xx), (cx, row - radius), radius, kind, _saturated_colour(rng))
        images[i] = np.clip(canvas, 0, 255).astype(np.uint8)
    return images

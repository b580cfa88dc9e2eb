"""Procedural image generators for the offline suite: dSprites and dSprites-style sprite scenes.

dSprites (Matthey et al., 2017) has five factors: shape (square, ellipse, heart), scale
(6 values in [0.5, 1]), orientation (40 values in [0, 2 pi)), and x / y position (32 values each
in [0, 1]), rendered white on black at 64 x 64. :func:`render_dsprites` draws the same factors
with implicit shape equations evaluated at each pixel centre (anti-aliased by 2 x 2
supersampling). Factors are drawn uniformly and independently, as in dSprites.
:func:`render_sprite_counts` and :func:`render_sprite_pairs` draw several such sprites apart in
one image (1 to 6 of them; or two at a binned distance).

The CLEVR-style scenes are in :mod:`hgprompt_ray.data.scenes`; those that count objects by an
attribute place them with :func:`place_apart`, as the sprite scenes here do.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "DSPRITES_ORIENTATIONS",
    "DSPRITES_POSITIONS",
    "DSPRITES_SCALES",
    "DSPRITES_SHAPES",
    "IMAGE_SIZE",
    "SPRITE_COUNT_MAX",
    "SPRITE_DISTANCE_EDGES",
    "DspritesFactors",
    "SpriteScenes",
    "place_apart",
    "render_dsprites",
    "render_sprite_counts",
    "render_sprite_pairs",
    "sample_dsprites_factors",
]

DSPRITES_SHAPES = ("square", "ellipse", "heart")
DSPRITES_SCALES = np.linspace(0.5, 1.0, 6)
DSPRITES_ORIENTATIONS = np.linspace(0.0, 2.0 * np.pi, 40, endpoint=False)
DSPRITES_POSITIONS = np.linspace(0.0, 1.0, 32)
IMAGE_SIZE = 64
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
    images = np.zeros((count, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float64)
    for i in range(count):
        cx = _MARGIN + DSPRITES_POSITIONS[factors.x[i]] * (IMAGE_SIZE - 2 * _MARGIN)
        cy = _MARGIN + DSPRITES_POSITIONS[factors.y[i]] * (IMAGE_SIZE - 2 * _MARGIN)
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
    grid = np.arange(IMAGE_SIZE, dtype=np.float64) + 0.5
    cos, sin = np.cos(angle), np.sin(angle)
    coverage = np.zeros((IMAGE_SIZE, IMAGE_SIZE))
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


def place_apart(extents: np.ndarray, gap: float, rng: np.random.Generator) -> np.ndarray:
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
                centre = rng.uniform(extent + 1, IMAGE_SIZE - extent - 1, size=2)
                if all(np.hypot(*(centre - c)) >= extent + e + gap for c, e in zip(centres, extents)):
                    centres.append(centre)
                    break
            else:
                break  # stuck: start this scene's placement again
        else:
            return np.array(centres).reshape(len(extents), 2)
    raise RuntimeError(f"could not place discs of radii {extents.tolist()} {gap} px apart in {IMAGE_SIZE} px")


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
        images=np.zeros((len(scenes), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8),
        shapes=np.full((len(scenes), width), -1, dtype=np.int64),
        radii=np.full((len(scenes), width), np.nan),
        angles=np.full((len(scenes), width), np.nan),
        centres=np.full((len(scenes), width, 2), np.nan),
    )
    for i, (shapes, radii, angles, centres) in enumerate(scenes):
        coverage = np.zeros((IMAGE_SIZE, IMAGE_SIZE))
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
        scenes.append((shapes, radii, angles, place_apart(radii * _SPRITE_EXTENT, _SPRITE_GAP, rng)))
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
            first = rng.uniform(extents[0] + 1, IMAGE_SIZE - extents[0] - 1, size=2)
            distance, direction = rng.uniform(low, high), rng.uniform(0.0, 2.0 * np.pi)
            second = first + distance * np.array([np.cos(direction), np.sin(direction)])
            inside = np.all((second >= extents[1] + 1) & (second <= IMAGE_SIZE - extents[1] - 1))
            if inside and distance >= extents.sum() + _SPRITE_GAP:
                break
        else:
            raise RuntimeError(f"could not place sprites of radii {radii.tolist()} in distance bin {label}")
        scenes.append((shapes, radii, angles, np.stack([first, second])))
    return _sprite_scenes(scenes)

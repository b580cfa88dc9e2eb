"""Procedural image generators for the offline suite: dSprites-style sprites, CLEVR-style scenes.

dSprites (Matthey et al., 2017) has five factors: shape (square, ellipse, heart), scale
(6 values in [0.5, 1]), orientation (40 values in [0, 2 pi)), and x / y position (32 values each
in [0, 1]), rendered white on black at 64 x 64. :func:`render_dsprites` draws the same factors
with implicit shape equations evaluated at each pixel centre (anti-aliased by 2 x 2
supersampling). Factors are drawn uniformly and independently, as in dSprites.

:func:`render_counting` draws CLEVR-style scenes: 3 to 10 non-overlapping objects (spheres,
cubes, cylinders seen from above: shaded discs, squares, rounded squares) of random colour and
size on a grey floor with a light gradient, at 64 x 64. Colours are saturated (HSV s >= 0.45)
so every object stands out from the floor. :func:`render_closest` puts the same objects in
perspective, for VTAB's closest-object distance (see its docstring).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "CLOSEST_BINS",
    "DSPRITES_ORIENTATIONS",
    "DSPRITES_POSITIONS",
    "DSPRITES_SCALES",
    "DSPRITES_SHAPES",
    "DspritesFactors",
    "closest_bin_rows",
    "render_closest",
    "render_counting",
    "render_dsprites",
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
    offsets = (np.arange(2) + 0.5) / 2.0 - 0.5  # 2 x 2 supersampling
    grid = np.arange(_SIZE, dtype=np.float64) + 0.5
    images = np.zeros((count, _SIZE, _SIZE), dtype=np.float64)
    for i in range(count):
        cx = _MARGIN + DSPRITES_POSITIONS[factors.x[i]] * (_SIZE - 2 * _MARGIN)
        cy = _MARGIN + DSPRITES_POSITIONS[factors.y[i]] * (_SIZE - 2 * _MARGIN)
        radius = _SPRITE_RADIUS * DSPRITES_SCALES[factors.scale[i]]
        angle = DSPRITES_ORIENTATIONS[factors.orientation[i]]
        cos, sin = np.cos(angle), np.sin(angle)
        coverage = np.zeros((_SIZE, _SIZE))
        for dy in offsets:
            for dx in offsets:
                px = (grid[None, :] + dx - cx) / radius
                py = (grid[:, None] + dy - cy) / radius
                u, v = cos * px + sin * py, -sin * px + cos * py
                coverage += _inside(int(factors.shape[i]), u, v)
        images[i] = coverage / offsets.size**2
    return np.round(images * 255).astype(np.uint8)


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

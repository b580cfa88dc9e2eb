"""smallNORB-style renders for the offline suite: a shaded 3-D toy seen at an azimuth and elevation.

smallNORB (LeCun et al., 2004) photographs 50 toys of 5 categories on a turntable at 18 azimuths,
9 elevations and 6 lightings; VTAB asks for the azimuth or the elevation. :func:`render_shapes`
draws the same factors with numpy alone: one of five solids built from convex parts (a car, a
ramp, an L-block, a plane, a tower with an off-centre spire; none looks the same after any turn
about its vertical axis, so every azimuth is identifiable), stretched per image along its three
axes (the "instance"), turned to the azimuth, and seen from the elevation by an orthographic
camera. Each pixel's ray is intersected with every part (a convex part is an intersection of
half-spaces), the nearest hit is shaded Lambertian under a light that moves a little per image,
and 2 x 2 supersampling anti-aliases the 64 x 64 grey image. Backgrounds are flat grey with
noise, as smallNORB's. :func:`sample_lighting_factors` draws views lit from one of 5 directions,
for a lighting task (smallNORB has 6 lightings).
"""

from __future__ import annotations

from itertools import combinations
from typing import NamedTuple

import numpy as np

__all__ = [
    "SHAPE_AZIMUTHS",
    "SHAPE_ELEVATIONS",
    "SHAPE_LIGHTINGS",
    "SHAPE_NAMES",
    "ShapeFactors",
    "render_shapes",
    "sample_lighting_factors",
    "sample_shape_factors",
]

SHAPE_NAMES = ("car", "ramp", "l-block", "plane", "tower")
SHAPE_AZIMUTHS = 8  # bins of 45 degrees; bin k is centred on k * 45 degrees
SHAPE_ELEVATIONS = 6  # bins of 10 degrees; bin k is centred on 20 + k * 10 degrees
SHAPE_LIGHTINGS = ("left", "right", "above", "below", "front")
_LIGHT_DIRECTIONS = np.array(  # camera coordinates (right, up, towards the camera), before normalising
    [[-0.85, 0.25, 0.45], [0.85, 0.25, 0.45], [0.0, 0.9, 0.4], [0.0, -0.6, 0.8], [0.0, 0.0, 1.0]]
)
_LIGHT_JITTER = 0.05  # standard deviation of each component's jitter, before normalising
_SIZE = 64
_SUPER = 2
_PX_PER_UNIT = 17.0  # the solids span about [-1, 1] x [-1, 1] x [0, 1.2]
_CENTRE_HEIGHT = 0.45  # the point (0, 0, 0.45) is drawn at the image centre


def _box(x0: float, x1: float, y0: float, y1: float, z0: float, z1: float) -> np.ndarray:
    return np.array([[x, y, z] for x in (x0, x1) for y in (y0, y1) for z in (z0, z1)], dtype=np.float64)


_PARTS: tuple[tuple[np.ndarray, ...], ...] = (
    (  # car: body with a long bonnet in front (+x) and the cabin towards the back
        _box(-1.0, 1.0, -0.45, 0.45, 0.1, 0.5),
        _box(-0.8, 0.05, -0.4, 0.4, 0.5, 0.9),
    ),
    (  # ramp: a wedge rising towards +x
        np.array(
            [[-1, -0.6, 0], [-1, 0.6, 0], [1, -0.6, 0], [1, 0.6, 0], [1, -0.6, 0.9], [1, 0.6, 0.9]],
            dtype=np.float64,
        ),
    ),
    (  # l-block: a long bar and a short one at its front, to the left (+y)
        _box(-1.0, 1.0, -0.6, -0.1, 0.0, 0.55),
        _box(0.45, 1.0, -0.1, 0.8, 0.0, 0.55),
    ),
    (  # plane: fuselage, wings ahead of the middle, a tail fin at the back
        _box(-1.0, 1.0, -0.15, 0.15, 0.3, 0.6),
        _box(0.0, 0.45, -1.0, 1.0, 0.42, 0.5),
        _box(-1.0, -0.7, -0.05, 0.05, 0.6, 1.05),
    ),
    (  # tower: a low plinth and a spire whose tip leans forward-left
        _box(-0.75, 0.75, -0.75, 0.75, 0.0, 0.3),
        np.array(
            [[-0.5, -0.5, 0.3], [-0.5, 0.5, 0.3], [0.5, -0.5, 0.3], [0.5, 0.5, 0.3], [0.45, 0.35, 1.3]],
            dtype=np.float64,
        ),
    ),
)


def _convex_planes(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Half-spaces ``normals @ x <= offsets`` whose intersection is the hull of ``points``.

    Brute force over point triples (parts have at most 8 corners): a triple spans a face plane
    when every point lies on one side of it.
    """
    normals: list[np.ndarray] = []
    offsets: list[float] = []
    for a, b, c in combinations(range(len(points)), 3):
        normal = np.cross(points[b] - points[a], points[c] - points[a])
        length = np.linalg.norm(normal)
        if length < 1e-9:
            continue
        normal = normal / length
        side = (points - points[a]) @ normal
        if side.max() > 1e-9:
            if side.min() < -1e-9:
                continue  # points on both sides: not a face
            normal = -normal
        offset = float(normal @ points[a])
        if not any(np.allclose(normal, n) and abs(offset - o) < 1e-9 for n, o in zip(normals, offsets)):
            normals.append(normal)
            offsets.append(offset)
    return np.array(normals), np.array(offsets)


_PLANES = tuple(tuple(_convex_planes(part) for part in parts) for parts in _PARTS)


class ShapeFactors(NamedTuple):
    """Factors of N renders: shape (0-4), azimuth and elevation bins, and the nuisance factors."""

    shape: np.ndarray
    azimuth: np.ndarray  # bin, 0-7
    elevation: np.ndarray  # bin, 0-5
    azimuth_deg: np.ndarray
    elevation_deg: np.ndarray
    stretch: np.ndarray  # (N, 3) per-axis scale of the solid (the instance)
    light: np.ndarray  # (N, 3) light direction in camera coordinates (right, up, towards camera)


def sample_shape_factors(count: int, rng: np.random.Generator) -> ShapeFactors:
    """Balanced azimuth and elevation bins (independent), uniform shapes, jitter within each bin."""
    azimuth = rng.permutation(np.arange(count) % SHAPE_AZIMUTHS)
    elevation = rng.permutation(np.arange(count) % SHAPE_ELEVATIONS)
    light = np.column_stack(
        [rng.uniform(-0.6, 0.1, count), rng.uniform(0.3, 0.9, count), rng.uniform(0.5, 1.0, count)]
    )
    return ShapeFactors(
        shape=rng.integers(0, len(SHAPE_NAMES), count),
        azimuth=azimuth,
        elevation=elevation,
        azimuth_deg=(azimuth + rng.uniform(-0.25, 0.25, count)) * (360.0 / SHAPE_AZIMUTHS),
        elevation_deg=20.0 + 10.0 * elevation + rng.uniform(-3.0, 3.0, count),
        stretch=rng.uniform(0.85, 1.15, (count, 3)),
        light=light / np.linalg.norm(light, axis=1, keepdims=True),
    )


def sample_lighting_factors(lightings: np.ndarray, rng: np.random.Generator) -> ShapeFactors:
    """Factors of renders lit from ``SHAPE_LIGHTINGS[lightings[i]]``; the other factors random.

    smallNORB lights each view in 6 conditions; here 5 lights come from the camera's left,
    right, above, below and front (flat: every visible face alike), each jittered a little. (A
    light from behind leaves the solid at the ambient 0.25 of its albedo, often no brighter than
    the background: a blank image, not a shading.) The shape is uniform, the azimuth uniform
    over 0-360 degrees and the elevation over 20-70 degrees (their bins recorded as
    :func:`sample_shape_factors`' are), the stretch as there.

    Shape:
        lightings: (N,) ints in [0, 5).
    """
    count = len(lightings)
    shape = rng.integers(0, len(SHAPE_NAMES), count)
    azimuth_deg = rng.uniform(0.0, 360.0, count)
    elevation_deg = rng.uniform(20.0, 70.0, count)
    light = _LIGHT_DIRECTIONS[lightings] + rng.normal(0.0, _LIGHT_JITTER, (count, 3))
    return ShapeFactors(
        shape=shape,
        azimuth=np.round(azimuth_deg / (360.0 / SHAPE_AZIMUTHS)).astype(np.int64) % SHAPE_AZIMUTHS,
        elevation=np.clip(np.round((elevation_deg - 20.0) / 10.0), 0, SHAPE_ELEVATIONS - 1).astype(np.int64),
        azimuth_deg=azimuth_deg,
        elevation_deg=elevation_deg,
        stretch=rng.uniform(0.85, 1.15, (count, 3)),
        light=light / np.linalg.norm(light, axis=1, keepdims=True),
    )


def _render_one(
    planes: tuple[tuple[np.ndarray, np.ndarray], ...],
    azimuth: float,
    elevation: float,
    stretch: np.ndarray,
    light_camera: np.ndarray,
    shift: np.ndarray,
    zoom: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Shading (0-1) and coverage mask of one solid on the supersampled grid."""
    size = _SIZE * _SUPER
    sin_e, cos_e = np.sin(elevation), np.cos(elevation)
    towards = np.array([cos_e, 0.0, sin_e])  # from the object towards the camera
    up = np.array([-sin_e, 0.0, cos_e])
    right = np.array([0.0, 1.0, 0.0])
    coords = (np.arange(size) + 0.5 - size / 2) / (_SUPER * _PX_PER_UNIT * zoom)
    screen_u = coords[None, :] - shift[0] / (_PX_PER_UNIT * zoom)
    screen_v = -coords[:, None] + shift[1] / (_PX_PER_UNIT * zoom) + _CENTRE_HEIGHT * cos_e
    origins = (  # (3, size, size) world points on a plane in front of the object
        screen_u[None] * right[:, None, None]
        + screen_v[None] * up[:, None, None]
        + 5.0 * towards[:, None, None]
    ).reshape(3, -1)
    sin_a, cos_a = np.sin(azimuth), np.cos(azimuth)
    turn = np.array([[cos_a, -sin_a, 0.0], [sin_a, cos_a, 0.0], [0.0, 0.0, 1.0]])
    to_object = np.diag(1.0 / stretch) @ turn.T  # world -> the solid's own (unstretched) frame
    origin, direction = to_object @ origins, to_object @ -towards
    light_world = light_camera[0] * right + light_camera[1] * up + light_camera[2] * towards
    best = np.full(origin.shape[1], np.inf)
    shade = np.zeros(origin.shape[1])
    for normals, offsets in planes:
        room = offsets[:, None] - normals @ origin  # (P, pixels): n.(o + t d) <= c  <=>  t d.n <= room
        slope = normals @ direction  # (P,)
        with np.errstate(divide="ignore", invalid="ignore"):
            bound = room / slope[:, None]
        entering, leaving = slope < -1e-12, slope > 1e-12
        parallel_ok = np.all(room[~(entering | leaving)] >= 0, axis=0)
        t_in = bound[entering].max(axis=0)
        t_out = bound[leaving].min(axis=0) if leaving.any() else np.full_like(t_in, np.inf)
        hit = (t_in <= t_out) & parallel_ok & (t_in < best)
        if not hit.any():
            continue
        face = np.flatnonzero(entering)[bound[entering].argmax(axis=0)]
        world_normals = turn @ (normals / stretch).T  # normals transform by the inverse transpose
        world_normals /= np.linalg.norm(world_normals, axis=0, keepdims=True)
        brightness = 0.25 + 0.75 * np.clip(light_world @ world_normals, 0.0, None)
        best[hit] = t_in[hit]
        shade[hit] = brightness[face[hit]]
    return shade.reshape(size, size), np.isfinite(best).reshape(size, size)


def render_shapes(factors: ShapeFactors, rng: np.random.Generator) -> np.ndarray:
    """Render the solids as uint8 grey images (N, 64, 64); ``rng`` draws albedo, background, noise.

    Shape:
        returns: (N, 64, 64) uint8.
    """
    count = len(factors.shape)
    images = np.empty((count, _SIZE, _SIZE), dtype=np.uint8)
    for i in range(count):
        albedo, background = rng.uniform(150, 235), rng.uniform(25, 75)
        shift, zoom = rng.uniform(-2.5, 2.5, 2), rng.uniform(0.9, 1.1)
        shade, mask = _render_one(
            _PLANES[int(factors.shape[i])],
            np.deg2rad(factors.azimuth_deg[i]),
            np.deg2rad(factors.elevation_deg[i]),
            factors.stretch[i],
            factors.light[i],
            shift,
            zoom,
        )
        fine = np.where(mask, albedo * shade, background)
        image = fine.reshape(_SIZE, _SUPER, _SIZE, _SUPER).mean(axis=(1, 3))
        image += rng.normal(0, 3, size=image.shape)
        images[i] = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return images

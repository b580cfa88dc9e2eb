"""Grey 64 px patches of scikit-image's bundled textures, as drawn, blurred or contrast-scaled.

The textures task asks which image a patch comes from; texture-blur and texture-contrast cut new
patches from the same images and ask how much they were blurred (Gaussian sigma 0, 1, 2 or
4 px) or how much their contrast about the patch mean was scaled (by 1, 1/2, 1/4 or 1/8). In
every case train/val patches lie in the top 2/3 of an image and test patches in the bottom 1/3,
so no test pixel was ever seen in training.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

__all__ = [
    "BLUR_SIGMAS",
    "CONTRAST_FACTORS",
    "TEXTURE_LEVELS",
    "TEXTURE_SOURCES",
    "cut_degraded_patches",
    "cut_texture_patches",
    "degrade",
    "texture_image",
]

TEXTURE_SOURCES = ("brick", "grass", "gravel", "moon", "hubble_deep_field", "immunohistochemistry")
BLUR_SIGMAS = (0.0, 1.0, 2.0, 4.0)
CONTRAST_FACTORS = (1.0, 0.5, 0.25, 0.125)
TEXTURE_LEVELS = {"blur": BLUR_SIGMAS, "contrast": CONTRAST_FACTORS}
_PATCH = 64
_PAD = 12  # a blurred patch is cut with this margin, so the blur never reads a border (3 sigma)


def texture_image(source: str) -> np.ndarray:
    """A scikit-image texture (``skimage.data.<source>``) as a uint8 grey image."""
    import skimage.data
    from skimage.color import rgb2gray

    image = getattr(skimage.data, source)()
    if image.ndim == 3:
        image = np.round(rgb2gray(image[..., :3]) * 255).astype(np.uint8)
    return image


def cut_texture_patches(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The textures task: 180 train and 100 test patches per image, labelled by the image."""
    out: dict[str, list[np.ndarray]] = {
        "train_images": [],
        "train_labels": [],
        "test_images": [],
        "test_labels": [],
    }
    for label, source in enumerate(TEXTURE_SOURCES):
        image = texture_image(source)
        height, width = image.shape
        cut = (2 * height) // 3  # train/val patches above, test patches below: no overlap
        for part, (low, high, count) in {
            "train": (0, cut - _PATCH, 180),
            "test": (cut, height - _PATCH, 100),
        }.items():
            rows = rng.integers(low, high + 1, count)
            cols = rng.integers(0, width - _PATCH + 1, count)
            for r, c in zip(rows, cols):
                out[f"{part}_images"].append(image[r : r + _PATCH, c : c + _PATCH])
                out[f"{part}_labels"].append(label)
    return {key: np.asarray(value) for key, value in out.items()}


def degrade(cut: np.ndarray, kind: str, level: int) -> np.ndarray:
    """The central 64 px of a padded 88 px uint8 cut, blurred or contrast-scaled at ``level``.

    Shape:
        cut: (88, 88) uint8. returns: (64, 64) uint8.
    """
    if kind == "blur" and BLUR_SIGMAS[level] > 0:
        cut = np.asarray(Image.fromarray(cut).filter(ImageFilter.GaussianBlur(BLUR_SIGMAS[level])))
    centre = cut[_PAD : _PAD + _PATCH, _PAD : _PAD + _PATCH]
    if kind == "blur":
        return centre
    mean = centre.mean()
    scaled = mean + CONTRAST_FACTORS[level] * (centre.astype(np.float64) - mean)
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def cut_degraded_patches(kind: str, count: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``count`` new patches at 4 levels of ``kind`` (``"blur"`` or ``"contrast"``), labelled by level.

    Levels and source images are balanced in each part. 7/10 form the train pool (from the top
    2/3 of each image), 3/10 the test set (from the bottom 1/3).

    Returns:
        ``{train,test}_images`` (n, 64, 64) uint8, ``{train,test}_labels`` (the level) and
        ``{train,test}_sources`` (the index into :data:`TEXTURE_SOURCES`).
    """
    levels_of_kind = TEXTURE_LEVELS[kind]
    images = [texture_image(source) for source in TEXTURE_SOURCES]
    size = _PATCH + 2 * _PAD
    out: dict[str, np.ndarray] = {}
    test_count = (3 * count) // 10
    for part, part_count in (("train", count - test_count), ("test", test_count)):
        levels = rng.permutation(np.arange(part_count) % len(levels_of_kind))
        sources = rng.permutation(np.arange(part_count) % len(images))
        patches = []
        for level, source in zip(levels, sources):
            image = images[source]
            cut = (2 * image.shape[0]) // 3
            low, high = (0, cut - size) if part == "train" else (cut, image.shape[0] - size)
            row, col = int(rng.integers(low, high + 1)), int(rng.integers(0, image.shape[1] - size + 1))
            patches.append(degrade(image[row : row + size, col : col + size], kind, int(level)))
        out[f"{part}_images"], out[f"{part}_labels"], out[f"{part}_sources"] = (
            np.asarray(patches),
            levels,
            sources,
        )
    return out

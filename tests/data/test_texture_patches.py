"""Texture patches: the blur and contrast levels do what they say, in balanced, separate parts."""

from __future__ import annotations

import numpy as np
import pytest

from hgprompt_ray.data.texture_patches import (
    CONTRAST_FACTORS,
    TEXTURE_SOURCES,
    cut_degraded_patches,
    degrade,
    texture_image,
)


@pytest.fixture(scope="module")
def cuts() -> list[np.ndarray]:
    """One padded 88 px cut from the middle of every texture."""
    out = []
    for source in TEXTURE_SOURCES:
        image = texture_image(source)
        row, col = image.shape[0] // 2, image.shape[1] // 2
        out.append(image[row : row + 88, col : col + 88])
    return out


def test_blur_smooths_monotonically_and_level_zero_is_the_patch(cuts):
    for source, cut in zip(TEXTURE_SOURCES, cuts):
        np.testing.assert_array_equal(degrade(cut, "blur", 0), cut[12:76, 12:76])
        sharpness = [
            np.mean(np.diff(degrade(cut, "blur", level).astype(float), axis=1) ** 2) for level in range(4)
        ]
        assert np.all(np.diff(sharpness) < 0), (source, sharpness)


def test_contrast_scales_the_spread_about_the_patch_mean(cuts):
    for source, cut in zip(TEXTURE_SOURCES, cuts):
        centre = cut[12:76, 12:76].astype(float)
        for level, factor in enumerate(CONTRAST_FACTORS):
            scaled = degrade(cut, "contrast", level).astype(float)
            assert abs(scaled.mean() - centre.mean()) < 0.6, source  # rounding only
            np.testing.assert_allclose(scaled - scaled.mean(), factor * (centre - centre.mean()), atol=1.0)


def test_degraded_patches_are_balanced_in_both_parts():
    arrays = cut_degraded_patches("blur", 240, np.random.default_rng(0))
    assert arrays["train_images"].shape == (168, 64, 64) and arrays["test_images"].shape == (72, 64, 64)
    for part in ("train", "test"):
        levels, sources = np.bincount(arrays[f"{part}_labels"]), np.bincount(arrays[f"{part}_sources"])
        assert len(levels) == 4 and levels.max() - levels.min() <= 1
        assert len(sources) == len(TEXTURE_SOURCES) and sources.max() - sources.min() <= 1

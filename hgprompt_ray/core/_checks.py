"""Input checks shared by the core modules: shapes, finiteness, labels."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hgprompt_ray.errors import InvalidValueError, invalid_value

__all__ = ["check_features_labels", "encode_labels", "to_numpy"]


def to_numpy(array: Any, name: str) -> np.ndarray:
    """A numpy view/copy of a numpy array or torch tensor (detached, on the CPU)."""
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    if isinstance(array, np.ndarray):
        return array
    try:
        return np.asarray(array)
    except (TypeError, ValueError) as error:
        raise TypeError(
            invalid_value(name, type(array).__name__, "must be a numpy array or torch tensor", "")
        ) from error


def encode_labels(labels: np.ndarray, name: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """Map any integer labels to 0..C-1 in sorted order of their values.

    Absent label values create no empty class: only values that occur become classes.

    Returns:
        (codes, counts): codes (N,) int64 in 0..C-1, counts (C,) samples per class.
    """
    if labels.ndim != 1:
        raise InvalidValueError(invalid_value(f"{name}.shape", labels.shape, "must be (N,)", ""))
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            raise InvalidValueError(
                invalid_value(name, "non-integer values", "must be integers", "Pass class indices.")
            )
    elif labels.dtype.kind not in "iub":
        raise InvalidValueError(
            invalid_value(
                f"{name}.dtype", str(labels.dtype), "must be an integer dtype", "Pass class indices."
            )
        )
    _, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return codes.reshape(-1).astype(np.int64), counts.astype(np.int64)


def check_features_labels(
    features: Any, labels: Any, *, features_name: str = "features"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate (N, d) features and (N,) labels.

    Returns:
        (features float64 (N, d), codes (N,) in 0..C-1, counts (C,)).

    Raises:
        InvalidValueError: shape mismatch, N < 2, NaN/inf, fewer than 2 classes.
    """
    f = to_numpy(features, features_name)
    y = to_numpy(labels, "labels")
    if f.ndim != 2:
        raise InvalidValueError(
            invalid_value(
                f"{features_name}.shape", f.shape, "must be (N, d)", "Flatten each sample's feature."
            )
        )
    if y.shape != (f.shape[0],):
        raise InvalidValueError(
            invalid_value(
                "labels.shape",
                y.shape,
                f"must be ({f.shape[0]},) to match {features_name} of shape {f.shape}",
                "Give one label per feature row.",
            )
        )
    if f.shape[0] < 2:
        raise InvalidValueError(
            invalid_value(f"{features_name} rows N", f.shape[0], "must be at least 2", "Use more samples.")
        )
    f = f.astype(np.float64, copy=False)
    if not np.all(np.isfinite(f)):
        raise InvalidValueError(
            invalid_value(
                features_name,
                f"{int(np.size(f) - np.isfinite(f).sum())} NaN/inf entries",
                "must be finite",
                "Check the feature extractor's output.",
            )
        )
    codes, counts = encode_labels(y)
    if counts.size < 2:
        raise InvalidValueError(
            invalid_value(
                "labels",
                f"{counts.size} distinct class",
                "must contain at least 2 classes (the H-score measures class separation)",
                "Sample from at least two classes.",
            )
        )
    return f, codes, counts

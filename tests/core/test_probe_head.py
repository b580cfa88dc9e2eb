"""The probe head that defines the per-sample gradient loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hgprompt_ray.core import fit_probe_head
from hgprompt_ray.core.probe_head import SHARED_HEAD_FOLDS, cross_fit_folds
from hgprompt_ray.errors import InvalidValueError


def _data(seed=0, n=120, d=5, classes=3):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    centres = rng.normal(size=(classes, d)) * 3
    return centres[labels] * 10 + 50 + rng.normal(size=(n, d)), labels


def test_fits_separable_data_deterministically_at_any_feature_scale():
    features, labels = _data()
    head = fit_probe_head(features, labels, 3)
    assert head.train_accuracy > 0.95
    again = fit_probe_head(features, labels, 3)
    np.testing.assert_array_equal(head.weight, again.weight)
    scaled = fit_probe_head(features * 1000, labels, 3)  # standardisation: the same head
    np.testing.assert_allclose(scaled.weight, head.weight, rtol=1e-5, atol=1e-7)


def test_folded_logits_equal_the_standardised_ones():
    features, labels = _data(1)
    head = fit_probe_head(features, labels, 4)  # a class absent from the labels is allowed
    weight, bias = head.folded(torch.float64)
    logits = torch.from_numpy(features) @ weight.T + bias
    expected = ((features - head.shift) / head.scale) @ head.weight.T + head.bias
    np.testing.assert_allclose(logits.numpy(), expected, rtol=1e-10, atol=1e-9)
    assert logits.shape == (120, 4)


def test_stronger_penalty_gives_smaller_weights():
    features, labels = _data(2)
    small = np.abs(fit_probe_head(features, labels, 3, l2=10.0).weight).sum()
    large = np.abs(fit_probe_head(features, labels, 3, l2=1e-3).weight).sum()
    assert small < large


@pytest.mark.parametrize(
    ("features", "labels", "classes", "kwargs", "match"),
    [
        (np.zeros((4, 2)), np.array([0, 1, 2, 3]), 3, {}, r"labels must lie in \[0, 3\)"),
        (np.zeros((4,)), np.array([0, 1, 0, 1]), 2, {}, r"must be \(N, d\) and \(N,\)"),
        (np.zeros((4, 2)), np.array([0, 1, 0, 1]), 2, {"l2": 0.0}, r"l2 must be positive"),
    ],
)
def test_bad_inputs(features, labels, classes, kwargs, match):
    with pytest.raises(InvalidValueError, match=match):
        fit_probe_head(features, labels, classes, **kwargs)


def test_cross_fit_folds_partition_the_gradient_samples():
    positions = np.array([3, 7, 8, 20, 21])
    folds = cross_fit_folds(positions)
    assert len(folds) == SHARED_HEAD_FOLDS == 2
    np.testing.assert_array_equal(np.sort(np.concatenate(folds)), positions)  # every sample, once
    assert not set(folds[0]) & set(folds[1])
    assert [f.tolist() for f in cross_fit_folds(positions, 3)] == [[3, 20], [7, 21], [8]]


def test_cross_fit_folds_reject_bad_input():
    with pytest.raises(InvalidValueError, match="distinct"):
        cross_fit_folds([1, 1, 2])
    with pytest.raises(InvalidValueError, match="num_folds"):
        cross_fit_folds([1], 2)

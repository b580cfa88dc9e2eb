"""Streaming, mergeable gradient statistics give the exact alignment loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hgprompt_ray.core import (
    alignment_loss,
    alignment_loss_torch,
    alignment_scale,
    empty_gradient_moments,
    gradient_covariance,
    merge_gradient_moments,
    update_gradient_moments,
)
from hgprompt_ray.errors import InvalidValueError
from tests.core.references import direct_alignment


def _gradients(seed=0, n=50, m=3, p=12):
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=(n, 1, p))
    return shared + rng.normal(size=(n, m, p)) * rng.uniform(0.2, 2.0, size=(1, m, 1))


def _stream(gradients, batch):
    moments = empty_gradient_moments(gradients.shape[1], gradients.shape[2])
    for start in range(0, gradients.shape[0], batch):
        moments = update_gradient_moments(moments, gradients[start : start + batch])
    return moments


@pytest.mark.parametrize("batch", [1, 7, 50])
def test_streamed_covariance_equals_direct(batch):
    gradients = _gradients()
    moments = _stream(gradients, batch)
    assert moments.num_samples == 50 and moments.m2.shape == (12, 3, 3)
    expected = np.stack([np.cov(gradients[:, :, c], rowvar=False) for c in range(12)])
    np.testing.assert_allclose(gradient_covariance(moments), expected, rtol=1e-10, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), cuts=st.lists(st.integers(1, 39), max_size=4, unique=True))
def test_merging_shards_equals_one_pass(seed, cuts):
    gradients = _gradients(seed, n=40)
    bounds = [0, *sorted(cuts), 40]
    merged = empty_gradient_moments(3, 12)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        merged = merge_gradient_moments(merged, _stream(gradients[lo:hi], batch=5))
    single = _stream(gradients, batch=40)
    assert merged.num_samples == single.num_samples
    np.testing.assert_allclose(merged.mean, single.mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(merged.m2, single.m2, rtol=1e-10, atol=1e-10)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), m=st.integers(1, 5))
def test_loss_equals_direct_definition_and_is_non_negative(seed, m):
    gradients = _gradients(seed, n=30, m=m, p=8)
    alpha = np.random.default_rng(seed).dirichlet(np.ones(m))
    covariance = gradient_covariance(_stream(gradients, batch=9))
    got = alignment_loss(covariance, alpha)
    assert got == pytest.approx(direct_alignment(gradients, alpha), rel=1e-9, abs=1e-14)
    assert got >= 0.0


def test_zero_when_all_prompts_have_identical_gradients():
    one = np.random.default_rng(1).normal(size=(25, 1, 10))
    gradients = np.repeat(one, 4, axis=1)
    covariance = gradient_covariance(_stream(gradients, batch=10))
    for alpha in (np.full(4, 0.25), np.array([0.7, 0.1, 0.1, 0.1])):
        assert alignment_loss(covariance, alpha) == pytest.approx(0.0, abs=1e-20)


def test_batched_loss_gradient_and_scale_invariance():
    gradients = _gradients(2, n=40, m=4, p=6)
    covariance = torch.from_numpy(gradient_covariance(_stream(gradients, batch=40)))
    alphas = torch.from_numpy(np.random.default_rng(0).dirichlet(np.ones(4), size=3))
    batched = alignment_loss_torch(covariance, alphas)
    torch.testing.assert_close(batched, torch.stack([alignment_loss_torch(covariance, a) for a in alphas]))
    alpha = alphas[0].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a: alignment_loss_torch(covariance, a), (alpha,), eps=1e-6, atol=1e-8
    )
    scaled = gradient_covariance(_stream(gradients * 1e-3, batch=40))
    ratio = alignment_loss(covariance, alphas[0]) / alignment_scale(covariance)
    assert alignment_loss(scaled, alphas[0]) / alignment_scale(scaled) == pytest.approx(ratio, rel=1e-9)


def test_accepts_torch_float32_batches():
    gradients = _gradients(3)
    moments = update_gradient_moments(empty_gradient_moments(3, 12), torch.from_numpy(gradients).float())
    np.testing.assert_allclose(moments.mean, gradients.mean(axis=0).T, rtol=1e-5, atol=1e-6)


def test_subset_selects_prompts():
    gradients = _gradients(4, m=4)
    full = _stream(gradients, batch=10).subset([2, 0])
    direct = _stream(gradients[:, [2, 0]], batch=10)
    np.testing.assert_allclose(full.m2, direct.m2, rtol=1e-10, atol=1e-12)


def test_bad_inputs():
    moments = empty_gradient_moments(3, 12)
    with pytest.raises(InvalidValueError, match=r"gradients.shape must be \(B, 3, 12\)"):
        update_gradient_moments(moments, np.zeros((4, 2, 12)))
    with pytest.raises(InvalidValueError, match="gradients must be finite"):
        update_gradient_moments(moments, np.full((4, 3, 12), np.inf))
    with pytest.raises(InvalidValueError, match="moments.num_samples must be at least 2"):
        gradient_covariance(update_gradient_moments(moments, np.zeros((1, 3, 12))))
    with pytest.raises(InvalidValueError, match="same prompt set"):
        merge_gradient_moments(moments, empty_gradient_moments(2, 12))
    with pytest.raises(InvalidValueError, match="num_prompts must be a positive integer"):
        empty_gradient_moments(0, 12)

"""Streaming, mergeable gradient statistics give the paper's (uncentred) alignment loss exactly."""

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
    gradient_second_moment,
    merge_gradient_moments,
    update_gradient_moments,
)
from hgprompt_ray.core.alignment import _CHUNK, _outer_sums
from hgprompt_ray.errors import InvalidValueError
from tests.core.references import direct_alignment


def _gradients(seed=0, n=50, m=3, p=12):
    """Per-sample gradients (N, M, p) whose prompts have clearly different mean gradients."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=(n, 1, p))
    means = rng.normal(size=(1, m, p)) * 1.5
    return means + shared + rng.normal(size=(n, m, p)) * rng.uniform(0.2, 2.0, size=(1, m, 1))


def _stream(gradients, batch):
    moments = empty_gradient_moments(gradients.shape[1], gradients.shape[2])
    for start in range(0, gradients.shape[0], batch):
        moments = update_gradient_moments(moments, gradients[start : start + batch])
    return moments


def _stream_uneven(gradients, cuts):
    """Shards at ``cuts``, each streamed in uneven batches, then merged."""
    bounds = [0, *sorted(cuts), gradients.shape[0]]
    merged = empty_gradient_moments(gradients.shape[1], gradients.shape[2])
    for index, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        merged = merge_gradient_moments(merged, _stream(gradients[lo:hi], batch=3 + index))
    return merged


@pytest.mark.parametrize("batch", [1, 7, 50])
def test_streamed_second_moment_and_covariance_equal_direct(batch):
    gradients = _gradients()
    moments = _stream(gradients, batch)
    assert moments.num_samples == 50 and moments.m2.shape == (12, 3, 3)
    uncentred = np.stack([gradients[:, :, c].T @ gradients[:, :, c] / 49 for c in range(12)])
    np.testing.assert_allclose(gradient_second_moment(moments), uncentred, rtol=1e-10, atol=1e-12)
    covariance = np.stack([np.cov(gradients[:, :, c], rowvar=False) for c in range(12)])
    np.testing.assert_allclose(gradient_covariance(moments), covariance, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(gradient_second_moment(moments, centred=True), gradient_covariance(moments))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), cuts=st.lists(st.integers(1, 39), max_size=4, unique=True))
def test_merging_shards_equals_one_pass(seed, cuts):
    gradients = _gradients(seed, n=40)
    merged = _stream_uneven(gradients, cuts)
    single = _stream(gradients, batch=40)
    assert merged.num_samples == single.num_samples
    np.testing.assert_allclose(merged.mean, single.mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(merged.m2, single.m2, rtol=1e-10, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    m=st.integers(1, 5),
    cuts=st.lists(st.integers(1, 29), max_size=3, unique=True),
)
def test_loss_equals_the_papers_formula_and_not_the_centred_one(seed, m, cuts):
    gradients = _gradients(seed, n=30, m=m, p=8)
    alpha = np.random.default_rng(seed).dirichlet(np.ones(m))
    moments = _stream_uneven(gradients, cuts)
    expected = direct_alignment(gradients, alpha)
    got = alignment_loss(moments, alpha)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-14)
    assert got >= 0.0
    # the precomputed matrix gives the same value (the solver's path)
    assert alignment_loss(gradient_second_moment(moments), alpha) == pytest.approx(got, rel=1e-12, abs=1e-15)
    # the centred option is the variance form, an option only
    centred = alignment_loss(moments, alpha, centred=True)
    assert centred == pytest.approx(direct_alignment(gradients, alpha, centred=True), rel=1e-9, abs=1e-14)
    if m > 1:  # the prompts' mean gradients differ, so dropping them changes the value
        assert abs(centred - expected) > 1e-3 * expected


def test_a_centred_implementation_misses_a_constant_gradient_difference():
    """Prompts whose gradients differ by a constant are aligned for the variance, not the paper."""
    rng = np.random.default_rng(11)
    base = rng.normal(size=(40, 1, 6))
    offset = np.zeros((1, 3, 6))
    offset[0, 2] = 3.0  # prompt 2 is prompt 0 shifted by a constant on every sample
    gradients = np.repeat(base, 3, axis=1) + offset
    moments = _stream(gradients, batch=9)
    alpha = np.array([0.5, 0.3, 0.2])
    assert alignment_loss(moments, alpha, centred=True) == pytest.approx(0.0, abs=1e-20)
    expected = direct_alignment(gradients, alpha)
    assert expected > 1.0
    assert alignment_loss(moments, alpha) == pytest.approx(expected, rel=1e-10)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), a=st.floats(0.0, 1.0))
def test_two_prompts_vanish_only_at_the_average(seed, a):
    """M = 2: L_align(a) = (1 - 2a)^2 ((1 - a)^2 + a^2) ||q||^2 / 2 for any gradients."""
    gradients = _gradients(seed, n=20, m=2, p=5)
    moments = _stream(gradients, batch=6)
    q = ((gradients[:, 0] - gradients[:, 1]) ** 2).sum(axis=0) / 19
    closed_form = (1 - 2 * a) ** 2 * ((1 - a) ** 2 + a**2) * float(q @ q) / 2
    got = alignment_loss(moments, np.array([a, 1 - a]))
    assert got == pytest.approx(closed_form, rel=1e-9, abs=1e-12 * float(q @ q))
    assert alignment_loss(moments, np.array([0.5, 0.5])) == pytest.approx(0.0, abs=1e-12 * float(q @ q))
    if abs(a - 0.5) > 1e-3:
        assert got > 0.0


def test_zero_when_all_prompts_have_identical_gradients():
    one = np.random.default_rng(1).normal(size=(25, 1, 10)) + 2.0
    gradients = np.repeat(one, 4, axis=1)
    moments = _stream(gradients, batch=10)
    for alpha in (np.full(4, 0.25), np.array([0.7, 0.1, 0.1, 0.1])):
        assert alignment_loss(moments, alpha) == pytest.approx(0.0, abs=1e-20)


def test_batched_torch_loss_gradient_and_scale_invariance():
    gradients = _gradients(2, n=40, m=4, p=6)
    moments = _stream(gradients, batch=13)
    matrix = torch.from_numpy(gradient_second_moment(moments))
    alphas = torch.from_numpy(np.random.default_rng(0).dirichlet(np.ones(4), size=3))
    batched = alignment_loss_torch(matrix, alphas)
    torch.testing.assert_close(batched, torch.stack([alignment_loss_torch(matrix, a) for a in alphas]))
    torch.testing.assert_close(alignment_loss_torch(moments, alphas), batched)
    expected = [direct_alignment(gradients, a.numpy()) for a in alphas]
    np.testing.assert_allclose(batched.numpy(), expected, rtol=1e-9)
    alpha = alphas[0].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: alignment_loss_torch(matrix, a), (alpha,), eps=1e-6, atol=1e-8)
    scaled = _stream(gradients * 1e-3, batch=40)
    ratio = alignment_loss(moments, alphas[0]) / alignment_scale(moments)
    assert alignment_loss(scaled, alphas[0]) / alignment_scale(scaled) == pytest.approx(ratio, rel=1e-9)
    # the scale is computed from the same uncentred R as the loss
    r = gradient_second_moment(moments)
    expected_scale = float(sum((np.trace(r[c]) / 4) ** 2 for c in range(6)))
    assert alignment_scale(moments) == pytest.approx(expected_scale, rel=1e-12)
    assert alignment_scale(r) == pytest.approx(expected_scale, rel=1e-12)


def test_many_coordinates_stream_in_threaded_blocks_equal_to_the_direct_formula():
    """p spanning several coordinate blocks, split unevenly between threads."""
    gradients = _gradients(5, n=9, m=3, p=2 * _CHUNK + 123)
    moments = _stream(gradients, batch=4)
    centred = gradients - gradients.mean(axis=0)
    direct = np.einsum("bip,bjp->pij", centred, centred)
    np.testing.assert_allclose(moments.m2, direct, rtol=1e-10, atol=1e-12)
    assert np.array_equal(moments.m2, moments.m2.transpose(0, 2, 1))
    batch = centred[:4] - centred[:4].mean(axis=0)
    np.testing.assert_array_equal(_outer_sums(batch), np.einsum("bip,bjp->pij", batch, batch))


def test_accepts_torch_float32_batches():
    gradients = _gradients(3)
    moments = update_gradient_moments(empty_gradient_moments(3, 12), torch.from_numpy(gradients).float())
    np.testing.assert_allclose(moments.mean, gradients.mean(axis=0).T, rtol=1e-5, atol=1e-6)


def test_subset_selects_prompts():
    gradients = _gradients(4, m=4)
    full = _stream(gradients, batch=10).subset([2, 0])
    direct = _stream(gradients[:, [2, 0]], batch=10)
    np.testing.assert_allclose(full.m2, direct.m2, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gradient_second_moment(full), gradient_second_moment(direct), rtol=1e-10)


def test_bad_inputs():
    moments = empty_gradient_moments(3, 12)
    with pytest.raises(InvalidValueError, match=r"gradients.shape must be \(B, 3, 12\)"):
        update_gradient_moments(moments, np.zeros((4, 2, 12)))
    with pytest.raises(InvalidValueError, match="gradients must be finite"):
        update_gradient_moments(moments, np.full((4, 3, 12), np.inf))
    with pytest.raises(InvalidValueError, match="moments.num_samples must be at least 2"):
        gradient_second_moment(update_gradient_moments(moments, np.zeros((1, 3, 12))))
    with pytest.raises(InvalidValueError, match="moments.num_samples must be at least 2"):
        gradient_covariance(update_gradient_moments(moments, np.zeros((1, 3, 12))))
    with pytest.raises(InvalidValueError, match="same prompt set"):
        merge_gradient_moments(moments, empty_gradient_moments(2, 12))
    with pytest.raises(InvalidValueError, match="num_prompts must be a positive integer"):
        empty_gradient_moments(0, 12)
    with pytest.raises(InvalidValueError, match=r"statistics.shape must be \(p, M, M\)"):
        alignment_loss(np.zeros((4, 3)), np.full(3, 1 / 3))
    with pytest.raises(InvalidValueError, match="centred applies only when statistics is GradientMoments"):
        alignment_loss(np.zeros((4, 3, 3)), np.full(3, 1 / 3), centred=True)
    with pytest.raises(InvalidValueError, match=r"alpha.shape must be \(M,\) or \(S, M\) with M=3"):
        alignment_loss(np.zeros((4, 3, 3)), np.full(2, 0.5))

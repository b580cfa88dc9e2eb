"""lambda as given, on statistics extracted for real (tiny timm ViT, Ray Train, Parquet cache):
as lambda grows the solution moves from the H-only one to the alignment-only one."""

from __future__ import annotations

import numpy as np
import pytest

from hgprompt_ray.core import SolverSettings, alignment_loss, alignment_scale, solve_weights
from hgprompt_ray.workers.extract import extract

ray = pytest.importorskip("ray")

LAMBDAS = (1e-5, 1e-3, 1e-1, 10.0, 1e3)


@pytest.fixture(scope="module")
def statistics(ray_cluster, extraction_setup, tmp_path_factory):
    from hgprompt_ray.tuning.search import prepare_statistics

    extraction = extract(extraction_setup, storage_path=tmp_path_factory.mktemp("runs"), progress=False)
    return ray.get(prepare_statistics(extraction))


def test_lambda_moves_alpha_from_h_only_to_alignment_only(statistics):
    settings = SolverSettings(max_iterations=5000, tolerance=1e-9, seed=0)
    train, second_moment = statistics.train, statistics.covariance
    h_only = solve_weights(train, second_moment, 0.0, settings)
    align_only = solve_weights(train, second_moment, 1.0, settings, h_weight=0.0)
    path = [solve_weights(train, second_moment, lam, settings) for lam in LAMBDAS]
    assert all(r.converged for r in [h_only, align_only, *path]), [r.kkt_gap for r in path]
    h_values = [h_only.h_score] + [r.h_score for r in path]
    h_only_alignment = alignment_loss(second_moment, h_only.alpha) / alignment_scale(second_moment)
    alignments = [h_only_alignment] + [r.alignment for r in path]
    # exact minimisers of -H + lambda L: H and L_align never increase as lambda grows
    assert all(b <= a + 1e-7 * max(1.0, abs(a)) for a, b in zip(h_values, h_values[1:])), h_values
    assert all(b <= a + 1e-7 * max(1.0, abs(a)) for a, b in zip(alignments, alignments[1:])), alignments
    ends = np.abs(h_only.alpha - align_only.alpha).sum()
    assert ends > 0.05, (h_only.alpha, align_only.alpha)  # the two ends differ
    to_h = [np.abs(r.alpha - h_only.alpha).sum() for r in path]
    to_align = [np.abs(r.alpha - align_only.alpha).sum() for r in path]
    assert to_h[0] < to_align[0] and to_align[-1] < to_h[-1], (to_h, to_align)
    assert to_h[0] < 0.25 * ends and to_align[-1] < 0.25 * ends, (to_h, to_align, ends)
    assert path[-1].alignment == pytest.approx(align_only.alignment, rel=1e-3, abs=1e-9)

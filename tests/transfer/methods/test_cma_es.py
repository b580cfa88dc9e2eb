"""The black-box weighting: Optuna's CMA-ES over softmax logits, the search's budget and metric."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hgprompt_ray.errors import InvalidValueError
from hgprompt_ray.transfer.methods.cma_es import cma_es_search, cma_es_weights, softmax
from hgprompt_ray.transfer.methods.inputs import WeightingInputs
from hgprompt_ray.tuning.probe_metric import ProbeData, probe_accuracy
from tests.workers.conftest import EMBED_DIM


def test_cma_es_spends_the_budget_starts_uniform_and_improves():
    target = np.array([0.7, 0.2, 0.1])
    calls = []

    def objective(alpha):
        calls.append(alpha)
        return -float(np.sum((alpha - target) ** 2))

    alpha, scores = cma_es_search(objective, 3, evaluations=60, seed=0)
    assert len(scores) == len(calls) == 60  # exactly the search's number of evaluations
    assert np.allclose(calls[0], 1 / 3)  # the first evaluation is the uniform ensemble
    assert np.isclose(alpha.sum(), 1) and (alpha > 0).all()
    assert objective(alpha) == max(scores) > scores[0]  # it found better than uniform, and keeps the best
    again, _ = cma_es_search(lambda a: -float(np.sum((a - target) ** 2)), 3, evaluations=60, seed=0)
    assert np.allclose(again, alpha)  # seeded
    assert np.allclose(softmax(np.array([0.0, np.log(3.0)])), [0.25, 0.75])
    with pytest.raises(InvalidValueError, match="evaluations must be a positive integer"):
        cma_es_search(objective, 3, evaluations=0)
    with pytest.raises(InvalidValueError, match="num_sources must be at least 2"):
        cma_es_search(objective, 1, evaluations=3)


def test_cma_es_weights_score_the_search_probe_metric(extraction_setup):
    rng = np.random.default_rng(0)
    prompts = rng.normal(size=(3, 4, EMBED_DIM)).astype(np.float32) * 0.5
    labels = np.repeat([0, 1], 16)
    images = (rng.normal(size=(32, 3, 32, 32)) + labels[:, None, None, None]).astype(np.float32)
    data = ProbeData(extraction_setup.backbone, 32, 2, prompts, images, labels, images[::2], labels[::2])
    inputs = WeightingInputs(("p0", "p1", "p2"), torch.from_numpy(prompts), {}, probe=data,
                             probe_positions=(0, 1, 2), evaluations=4)  # fmt: skip
    alpha = cma_es_weights(inputs, seed=0)
    assert alpha.shape == (3,) and np.isclose(alpha.sum(), 1)
    uniform = probe_accuracy(data, [0, 1, 2], np.full(3, 1 / 3))
    assert probe_accuracy(data, [0, 1, 2], alpha) >= uniform  # never worse than its uniform start
    with pytest.raises(InvalidValueError, match="probe"):
        cma_es_weights(inputs._replace(probe=None))

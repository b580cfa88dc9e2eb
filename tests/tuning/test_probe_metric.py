"""The val-probe trial metric: a probe on the features of the combined prompt P0."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from hgprompt_ray.core import fit_probe_head
from hgprompt_ray.data import resolve_target
from hgprompt_ray.models import PromptedViT, load_backbone
from hgprompt_ray.transfer.weights import ensemble_prompt
from hgprompt_ray.tuning.probe_metric import PROBE_L2, _cache_path, probe_accuracy, probe_data_task
from tests.workers.conftest import EMBED_DIM


@pytest.fixture(scope="module")
def probe_data(extraction_setup):  # no result cache: every call here runs the forward
    return probe_data_task(extraction_setup, resolve_target(extraction_setup.target))._replace(cache_dir=None)


def test_probe_data_holds_the_extractions_samples_and_prompts(probe_data, extraction_setup):
    assert probe_data.prompts.shape == (3, 4, EMBED_DIM)
    assert probe_data.train_images.shape == (48, 3, 32, 32) and probe_data.train_labels.shape == (48,)
    assert probe_data.val_images.shape[0] == probe_data.val_labels.shape[0] <= 48
    assert set(np.unique(probe_data.train_labels)) == {0, 1}


def test_probe_accuracy_is_a_probe_on_the_ensemble_prompts_features(probe_data, extraction_setup):
    subset, alpha = [0, 2], [0.25, 0.75]
    got = probe_accuracy(probe_data, subset, alpha)
    # independently: P0 from transfer's ensemble_prompt, features through PromptedViT, the probe
    combined = ensemble_prompt(torch.from_numpy(probe_data.prompts[subset]), alpha)
    model = PromptedViT(load_backbone(extraction_setup.backbone, 32), 4).eval()
    with torch.no_grad():
        train = model.forward_features(torch.from_numpy(probe_data.train_images), combined[None])[0].double()
        val = model.forward_features(torch.from_numpy(probe_data.val_images), combined[None])[0].double()
    head = fit_probe_head(train.numpy(), probe_data.train_labels, 2, l2=PROBE_L2)
    weight, bias = head.folded(torch.float64)
    expected = float(((val @ weight.T + bias).argmax(1).numpy() == probe_data.val_labels).mean())
    assert got == pytest.approx(expected)
    assert got > 0.8  # a two-colour task: far above chance
    assert probe_accuracy(probe_data, [2, 0], [0.75, 0.25]) == got  # order of the subset is irrelevant


def test_read_only_images_from_the_object_store_raise_no_warning(probe_data):
    """Trials get the images as read-only zero-copy views; the probe reads them quietly."""
    import warnings

    frozen = probe_data._replace(
        train_images=probe_data.train_images.copy(), val_images=probe_data.val_images.copy()
    )
    frozen.train_images.setflags(write=False)
    frozen.val_images.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert probe_accuracy(frozen, [0, 1], [0.5, 0.5]) == probe_accuracy(probe_data, [0, 1], [0.5, 0.5])


def test_the_metric_is_kept_by_p0_and_data_and_read_back(probe_data, extraction_setup, tmp_path):
    """A second call with the same P0 on the same data reads the kept result (a marker written into
    the file comes back: no forward ran); another P0, the test diagnostic or another split draw's
    data get their own entries; a hand-built ProbeData (no fingerprint) keeps nothing."""
    config = dataclasses.replace(extraction_setup, cache_dir=str(tmp_path))
    data = probe_data_task(config, resolve_target(config.target))
    assert data.cache_dir == str(tmp_path / "probe_metric") and len(data.fingerprint) == 64
    assert data.fingerprint == probe_data.fingerprint  # the same draw: the same identity
    first = probe_accuracy(data, [0, 2], [0.25, 0.75])
    assert first == probe_accuracy(probe_data, [0, 2], [0.25, 0.75])  # the uncached computation
    (kept,) = (tmp_path / "probe_metric").glob("*.json")
    kept.write_text(json.dumps({"val": 0.123}))
    assert probe_accuracy(data, [0, 2], [0.25, 0.75]) == 0.123  # read back, not recomputed
    assert probe_accuracy(data, [0, 2], [0.5, 0.5]) != 0.123
    with_test = probe_data_task(config, resolve_target(config.target), test_samples=20)
    assert with_test.fingerprint != data.fingerprint  # the test images are part of the identity
    val, test = probe_accuracy(with_test, [0, 2], [0.25, 0.75], test=True)
    assert val == first and 0 <= test <= 1  # its own entry: computed, not the marker
    assert len(list((tmp_path / "probe_metric").glob("*.json"))) == 3
    kept.write_text("{not json")  # an unreadable entry is recomputed and rewritten
    assert probe_accuracy(data, [0, 2], [0.25, 0.75]) == first
    assert json.loads(kept.read_text()) == {"val": first}
    combined = torch.einsum("k,kmd->md", torch.tensor([0.25, 0.75]), torch.from_numpy(data.prompts[[0, 2]]))
    keys = {_cache_path(data._replace(precision=p), combined, False) for p in ("fp32", "bf16")}
    assert len(keys) == 2  # the resolved precision is in the key
    other = probe_data_task(dataclasses.replace(config, split_seed=config.split_seed + 1), resolve_target(config.target))
    assert other.fingerprint != data.fingerprint
    assert probe_accuracy(other, [0, 2], [0.25, 0.75]) != 0.123
    assert len(list((tmp_path / "probe_metric").glob("*.json"))) == 4
    assert probe_accuracy(data._replace(fingerprint=""), [0, 2], [0.25, 0.75]) == first  # no cache
    assert len(list((tmp_path / "probe_metric").glob("*.json"))) == 4

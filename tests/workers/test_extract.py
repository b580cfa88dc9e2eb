"""Distributed extraction on a real local Ray cluster: features, gradient moments, cache, kills."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from hgprompt_ray.config import ExtractionConfig
from hgprompt_ray.core import gradient_covariance
from hgprompt_ray.core.probe_head import fit_probe_head
from hgprompt_ray.data import backbone_transform, resolve_target
from hgprompt_ray.errors import InvalidValueError
from hgprompt_ray.models import PromptedViT, load_backbone
from hgprompt_ray.models.gradients import prompt_gradients
from hgprompt_ray.prompts import PromptLibrary
from hgprompt_ray.workers.extract import ExtractionCache, extract, sample_indices
from hgprompt_ray.workers.feature_store import FeatureStore, table_metadata
from tests.workers.conftest import EMBED_DIM, NAMES

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def first_run(ray_cluster, extraction_setup, tmp_path_factory):
    return extract(
        extraction_setup, num_workers=1, storage_path=tmp_path_factory.mktemp("runs"), progress=False
    )


def _reference(config: ExtractionConfig):
    """Features and gradient covariance computed directly, without Ray, one sample at a time.

    The gradient loss, written out independently of the worker: ``shared`` — one head per fold
    of the gradient samples (every 2nd sample), fitted on the bare backbone's CLS features of the
    drawn samples outside that fold; ``per-prompt`` — a head per prompt on its own features.
    """
    backbone = load_backbone(config.backbone, config.img_size)
    model = PromptedViT(backbone, 4, num_classes=0).eval()
    library = PromptLibrary(config.library)
    prompts = library.load_many(NAMES)
    task = resolve_target(config.target)
    transform = backbone_transform(32, backbone.pretrained_cfg["mean"], backbone.pretrained_cfg["std"])
    split = task.split("train800", transform=transform)
    chosen = sample_indices(len(split), config.num_samples, config.sample_seed, "train800")
    images = torch.stack([split[int(i)][0] for i in chosen])
    labels = torch.as_tensor(split.labels[chosen])
    with torch.no_grad():
        features = model.forward_features(images, prompts).numpy()  # (3, N, d)
        bare = backbone.forward_head(backbone.forward_features(images), pre_logits=True).numpy()
    positions = sample_indices(len(chosen), config.gradient_samples, config.sample_seed, "gradients")
    if config.gradient_head == "shared":
        groups = []
        for fold in (positions[0::2], positions[1::2]):
            outside = np.array([i for i in range(len(chosen)) if i not in set(fold.tolist())])
            head = fit_probe_head(bare[outside], labels.numpy()[outside], 2, l2=config.head_l2)
            groups.append((fold, [head] * 3))
    else:
        groups = [
            (positions, [fit_probe_head(features[k], labels.numpy(), 2, l2=config.head_l2) for k in range(3)])
        ]
    rows, norms = [], np.zeros(3)
    for fold, heads in groups:
        tokens = model.embed_patches(images[fold]).detach()
        per_prompt = []
        for k in range(3):
            weight, bias = heads[k].folded()
            gradient = prompt_gradients(
                model,
                tokens,
                labels[fold],
                prompts[k],
                lambda f, w=weight, b=bias: f @ w.T + b,
                method="loop",
            ).double()
            per_prompt.append(gradient)
            norms[k] += gradient.norm(dim=1).sum().item()
        rows.append(torch.stack(per_prompt, dim=2))
    stacked = torch.cat(rows).numpy()  # (G, p, M)
    covariance = np.stack([np.cov(stacked[:, c, :], rowvar=False) for c in range(stacked.shape[1])])
    return features, labels.numpy(), chosen, covariance, norms / len(positions)


def test_features_and_gradient_statistics_match_a_direct_computation(first_run, extraction_setup):
    features, labels, chosen, covariance, norms = _reference(extraction_setup)
    views, got_labels = first_run.features("train800")
    assert list(views) == NAMES
    for k, name in enumerate(NAMES):
        np.testing.assert_allclose(views[name], features[k], atol=2e-5, rtol=1e-5)
    np.testing.assert_array_equal(got_labels, labels)
    names, moments = first_run.gradient_moments()
    assert names == NAMES and moments.num_samples == 24
    assert moments.num_coordinates == 4 * EMBED_DIM
    np.testing.assert_allclose(gradient_covariance(moments), covariance, rtol=1e-4, atol=1e-10)
    assert np.abs(covariance).max() > 0  # the gradients are not all zero
    table = ExtractionCache(extraction_setup.cache_dir).read(first_run.gradient_key)
    head = json.loads(table.schema.metadata[b"hgprompt.gradient_head"])
    assert head["folds"] == 2 and 0.0 <= head["held_out_accuracy"] <= 1.0
    np.testing.assert_allclose([head["mean_gradient_norm"][n] for n in NAMES], norms, rtol=1e-4)
    stats = first_run.stats
    assert stats["workers"] == 1 and stats["cached_tables"] == 0
    assert stats["torch_threads"] == 2  # the one worker holds both CPUs of the cluster, set from inside it
    val = len(resolve_target(extraction_setup.target).split("val200"))
    assert stats["image_prompt_forwards"] == 3 * (48 + min(val, 48))
    assert stats["gradient_sample_prompts"] == 3 * 24


def test_per_prompt_heads_separate_the_samples_and_shrink_the_gradients(
    first_run, extraction_setup, tmp_path
):
    """The earlier choice, kept for comparison: a head per prompt fitted on the gradient samples
    themselves (d = 64 > N = 48) leaves much smaller gradients than the shared held-out head."""
    config = replace(extraction_setup, gradient_head="per-prompt", cache_dir=str(tmp_path / "cache"))
    *_, reference_norms = _reference(config)
    old = extract(config, num_workers=1, storage_path=tmp_path, progress=False)
    assert old.gradient_key != first_run.gradient_key  # the head is part of the key
    table = ExtractionCache(config.cache_dir).read(old.gradient_key)
    head = json.loads(table.schema.metadata[b"hgprompt.gradient_head"])
    old_norms = np.array([head["mean_gradient_norm"][n] for n in NAMES])
    np.testing.assert_allclose(old_norms, reference_norms, rtol=1e-4)
    shared = json.loads(
        ExtractionCache(extraction_setup.cache_dir)
        .read(first_run.gradient_key)
        .schema.metadata[b"hgprompt.gradient_head"]
    )
    new_norms = np.array([shared["mean_gradient_norm"][n] for n in NAMES])
    assert np.all(new_norms > 2 * old_norms), (new_norms, old_norms)


def test_second_run_computes_nothing_and_serves_zero_copy_views(first_run, extraction_setup):
    again = extract(extraction_setup, num_workers=2, progress=False)
    assert again.stats["workers"] == 0  # no Ray Train run at all
    assert again.stats["image_prompt_forwards"] == 0 and again.stats["gradient_sample_prompts"] == 0
    assert again.feature_keys == first_run.feature_keys and again.gradient_key == first_run.gradient_key
    views, labels = FeatureStore().features(NAMES, again.target_name, "val200")
    reference, _ = first_run.features("val200")
    for name in NAMES:
        np.testing.assert_array_equal(views[name], reference[name])
        assert not views[name].flags.writeable and not views[name].flags.owndata
    refs = again.feature_refs("train800")
    assert set(refs) == set(NAMES) and all(isinstance(r, ray.ObjectRef) for r in refs.values())
    # released (an evaluation does so after each split draw's weights): gone from the store and
    # its readable names, kept in the cache, and a rerun puts them back without computing
    del refs
    again.release()
    keys = [k for split in again.feature_keys.values() for k in split.values()] + [again.gradient_key]
    assert not any(FeatureStore().contains(keys).values())
    with pytest.raises(KeyError, match="has no 'val200' features"):
        FeatureStore().features(NAMES, again.target_name, "val200")
    back = extract(extraction_setup, num_workers=2, progress=False)
    assert back.stats["workers"] == 0 and back.stats["cached_tables"] == len(keys)
    assert all(FeatureStore().contains(keys).values())
    views, _ = FeatureStore().features(NAMES, again.target_name, "val200")
    for name in NAMES:
        np.testing.assert_array_equal(views[name], reference[name])


def test_a_prompt_subsets_gradients_are_cut_from_the_cached_set(first_run, extraction_setup, tmp_path):
    """A search over some of the prompts (a scaling point's) reads the full set's gradient table:
    no worker starts, and the table is the set's rows and columns for (p2, p0), in that order
    (the set's own moments match a direct computation: the test above). A set that differs in
    anything but its prompts (here the gradient samples) is not used."""
    subset = replace(extraction_setup, prompts=("p2", "p0"))
    cut = extract(subset, storage_path=tmp_path, progress=False)
    assert cut.stats["workers"] == 0 and cut.stats["gradient_sample_prompts"] == 0
    assert cut.stats["gradients_from"] == first_run.gradient_key != cut.gradient_key
    names, moments = cut.gradient_moments()
    _, full = first_run.gradient_moments()
    assert names == ["p2", "p0"] and moments.num_samples == full.num_samples
    np.testing.assert_array_equal(moments.mean, full.mean[:, [2, 0]])
    np.testing.assert_array_equal(moments.m2, full.m2[:, [2, 0]][:, :, [2, 0]])
    cache = ExtractionCache(extraction_setup.cache_dir)
    meta = json.loads(cache.read(cut.gradient_key).schema.metadata[b"hgprompt.gradient_head"])
    whole = json.loads(cache.read(first_run.gradient_key).schema.metadata[b"hgprompt.gradient_head"])
    assert meta["mean_gradient_norm"] == {n: whole["mean_gradient_norm"][n] for n in ("p2", "p0")}
    assert meta["held_out_accuracy"] == whole["held_out_accuracy"]
    again = extract(subset, storage_path=tmp_path, progress=False)  # now a cached table of its own
    assert again.gradient_key == cut.gradient_key and "gradients_from" not in again.stats
    other = {**cut_meta(cache, cut.gradient_key), "num_gradient_samples": 12, "key": "gradients-0"}
    assert cache.derive_gradients("gradients-0", other, ["p2", "p0"]) is None
    missing = {**cut_meta(cache, cut.gradient_key), "features": ["features-unknown"], "key": "gradients-1"}
    assert cache.derive_gradients("gradients-1", missing, ["p9"]) is None
    assert not cache.has("gradients-0") and not cache.has("gradients-1")


def cut_meta(cache: ExtractionCache, key: str) -> dict:
    """The key's fields of a cached gradient table (what ``derive_gradients`` is given)."""
    table = cache.read(key)
    drop = {"gradient_head", "derived_from", "prompts", "num_samples", "prompt_shape"}
    return {k: v for k, v in table_metadata(table).items() if k not in drop}


def test_samples_are_a_recorded_seeded_draw(first_run, extraction_setup, tmp_path):
    again = sample_indices(100, 30, 0, "train800")
    np.testing.assert_array_equal(again, sample_indices(100, 30, 0, "train800"))
    assert np.all(np.diff(again) > 0) and len(again) == 30
    assert not np.array_equal(again, sample_indices(100, 30, 1, "train800"))
    assert not np.array_equal(again, sample_indices(100, 30, 0, "val200"))
    np.testing.assert_array_equal(sample_indices(20, 30, 5, "x"), np.arange(20))
    table = ExtractionCache(extraction_setup.cache_dir).read(first_run.feature_keys["train800"]["p0"])
    meta = json.loads(table.schema.metadata[b"hgprompt.sample_seed"])
    assert meta == 0 and json.loads(table.schema.metadata[b"hgprompt.num_samples"]) == 48


def test_two_workers_shard_the_prompts_and_agree_with_one(first_run, extraction_setup, tmp_path):
    """Two workers, and prompts_per_forward=1: rank 0's shard (p0, p2) runs in two chunks. The
    same features (every split, every table written), moments and forward count as one worker."""
    config = replace(extraction_setup, cache_dir=str(tmp_path / "cache"), prompts_per_forward=1)
    store = FeatureStore("two-workers")
    try:
        two = extract(config, num_workers=2, store_name="two-workers", storage_path=tmp_path, progress=False)
        assert two.stats["workers"] == 2
        assert two.stats["torch_threads"] == 1  # one CPU each: no rank oversubscribes
        info = store.info(two.feature_keys["train800"].values())
        ranks = {name: info[key]["rank"] for name, key in two.feature_keys["train800"].items()}
        assert ranks == {"p0": 0, "p1": 1, "p2": 0}  # positions r, r + W, ...
        for split in config.splits:
            one, _ = first_run.features(split)
            got, _ = two.features(split)
            assert sorted(got) == sorted(NAMES)
            for name in NAMES:
                np.testing.assert_allclose(got[name], one[name], atol=1e-6, rtol=1e-6)
        assert two.stats["image_prompt_forwards"] == first_run.stats["image_prompt_forwards"]
        _, reference = first_run.gradient_moments()
        _, moments = two.gradient_moments()
        # 1 vs 2 torch threads per worker: float32 gradients agree to ~1e-6 of their scale
        np.testing.assert_allclose(
            moments.m2, reference.m2, rtol=1e-5, atol=1e-6 * np.abs(reference.m2).max()
        )
        np.testing.assert_allclose(
            moments.mean, reference.mean, rtol=1e-5, atol=1e-5 * np.abs(reference.mean).max()
        )
    finally:
        store.kill()


def test_killed_worker_is_retried_and_the_result_is_bit_identical(first_run, extraction_setup, tmp_path):
    config = replace(
        extraction_setup, cache_dir=str(tmp_path / "cache"), heartbeat_dir=str(tmp_path / "heartbeat")
    )
    killed: dict = {}

    def kill_mid_gradients() -> None:
        deadline = time.time() + 300
        beat = tmp_path / "heartbeat" / "0.json"
        while time.time() < deadline and not killed:
            if beat.is_file():
                try:
                    info = json.loads(beat.read_text())
                except json.JSONDecodeError:
                    info = {}
                if info.get("phase") == "gradients" and info.get("step", -1) >= 1:
                    os.kill(info["pid"], signal.SIGKILL)  # a real kill of the Ray Train worker
                    killed.update(info)
            time.sleep(0.02)

    watcher = threading.Thread(target=kill_mid_gradients, daemon=True)
    watcher.start()
    store = FeatureStore("killed-run")
    try:
        resumed = extract(
            config,
            num_workers=1,
            store_name="killed-run",
            storage_path=tmp_path,
            max_failures=2,
            progress=False,
        )
    finally:
        watcher.join(timeout=5)
    try:
        assert killed, "the worker was never killed"
        # the retried group found every feature table cached and recomputed only the gradients
        assert resumed.stats["image_prompt_forwards"] == 0
        assert resumed.stats["gradient_sample_prompts"] == 3 * 24
        undisturbed, retried = ExtractionCache(extraction_setup.cache_dir), ExtractionCache(config.cache_dir)
        keys = [k for split in first_run.feature_keys.values() for k in split.values()]
        keys.append(first_run.gradient_key)
        assert resumed.gradient_key == first_run.gradient_key
        for key in keys:
            assert retried.read(key).equals(undisturbed.read(key)), key  # bit-identical tables
        tables = ray.get(list(store.refs(keys).values()))
        assert all(t.equals(undisturbed.read(k)) for k, t in zip(keys, tables))
    finally:
        store.kill()


def test_unreadable_cache_file_is_recomputed(first_run, extraction_setup, tmp_path):
    config = replace(extraction_setup, cache_dir=str(tmp_path / "cache"), gradients=False)
    cache = ExtractionCache(config.cache_dir)
    for key in first_run.feature_keys["train800"].values():  # copy the first run's train800 tables
        cache.write(key, ExtractionCache(extraction_setup.cache_dir).read(key))
    for key in first_run.feature_keys["val200"].values():
        cache.write(key, ExtractionCache(extraction_setup.cache_dir).read(key))
    broken = cache.path(first_run.feature_keys["val200"]["p1"])
    broken.write_bytes(b"not parquet")
    again = extract(config, num_workers=1, storage_path=tmp_path, progress=False)
    val = len(resolve_target(config.target).split("val200"))
    assert again.stats["image_prompt_forwards"] == min(val, 48)  # one table of one split, nothing else
    assert pq.read_table(broken).equals(
        ExtractionCache(extraction_setup.cache_dir).read(first_run.feature_keys["val200"]["p1"])
    )


def test_bad_inputs_fail_before_any_work(ray_cluster, extraction_setup, tmp_path):
    with pytest.raises(InvalidValueError, match=r"prompts must be prompts of .* but got \['nope'\]"):
        extract(replace(extraction_setup, prompts=("p0", "nope")))
    with pytest.raises(InvalidValueError, match=r"img_size must equal the image size prompt 'p0'"):
        extract(replace(extraction_setup, img_size=64))
    with pytest.raises(InvalidValueError, match=r"trained with backbone .* not 'vit_small"):
        extract(replace(extraction_setup, backbone="vit_small_patch16_224"))
    empty = PromptLibrary(tmp_path / "empty", create=True)
    with pytest.raises(InvalidValueError, match=r"library must hold at least one prompt"):
        extract(replace(extraction_setup, library=str(empty.root)))
    with pytest.raises(InvalidValueError, match=r"target must be a registered task"):
        extract(replace(extraction_setup, target="no-such-task"))
    with pytest.raises(InvalidValueError, match=r"num_workers must be a positive integer"):
        extract(extraction_setup, num_workers=0)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"splits": ()}, r"splits must be distinct names"),
        ({"splits": ("train800", "train")}, r"splits must be distinct names"),
        ({"num_samples": 1}, r"num_samples must be at least 2"),
        ({"gradient_samples": 0}, r"gradient_samples must be a positive integer"),
        ({"prompts": ("a", "a")}, r"prompts must not repeat a name"),
        ({"head_l2": 0.0}, r"head_l2 must be positive"),
        ({"batch_size": 0}, r"batch_size must be a positive integer"),
    ],
)
def test_bad_configs(overrides, match):
    with pytest.raises(InvalidValueError, match=match):
        ExtractionConfig(target="digits", library="lib", **overrides)

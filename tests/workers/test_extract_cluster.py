"""Extraction on two Ray nodes (``ray.cluster_utils.Cluster``, 1 CPU each): both contribute."""

from __future__ import annotations

import numpy as np
import pytest

from hgprompt_ray.workers.extract import extract
from hgprompt_ray.workers.feature_store import FeatureStore
from tests.workers.conftest import NAMES

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")


@pytest.fixture(scope="module")
def two_nodes():
    cluster = cluster_utils.Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_both_nodes_extract_and_the_driver_reads_every_table(two_nodes, extraction_setup, tmp_path):
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(nodes) == 2
    result = extract(
        extraction_setup, num_workers=2, cpus_per_worker=1, storage_path=tmp_path, progress=False
    )
    assert result.stats["workers"] == 2
    store = FeatureStore()
    keys = [k for split in result.feature_keys.values() for k in split.values()]
    info = store.info(keys)
    producers = {info[k]["node_id"] for k in keys}
    assert producers == nodes  # each node's worker computed and published its prompt shard
    for split in ("train800", "val200"):
        views, labels = result.features(split)
        assert list(views) == NAMES
        assert all(v.shape == (48, 192) and np.isfinite(v).all() for v in views.values())
        assert labels.shape == (48,)
    names, moments = result.gradient_moments()
    assert names == NAMES and moments.num_samples == 24
    assert moments.m2.shape == (4 * 192, 3, 3) and np.abs(moments.m2).max() > 0


def test_fifty_prompts_sharded_over_two_nodes_equal_a_one_node_run(two_nodes, extraction_setup, tmp_path):
    """K = 50 prompts, one worker per node (25 prompts each) vs one worker on one node: the store
    serves the same tables (features bit-identical; gradient moments equal)."""
    from dataclasses import replace

    import torch

    from hgprompt_ray.prompts import PromptLibrary

    library = PromptLibrary(tmp_path / "fifty", create=True)
    generator = torch.Generator().manual_seed(5)
    for k in range(50):
        library.add(
            f"q{k:02d}",
            torch.randn(4, 192, generator=generator) * 0.5,
            source_task="random",
            backbone=extraction_setup.backbone,
            img_size=32,
        )
    base = replace(extraction_setup, library=str(library.root), gradient_samples=16)
    names = library.names
    results = {}
    for label, workers in (("two-nodes", 2), ("one-node", 1)):
        config = replace(base, cache_dir=str(tmp_path / f"cache-{label}"))
        results[label] = extract(
            config, num_workers=workers, cpus_per_worker=1, store_name=label,
            storage_path=tmp_path / f"runs-{label}", progress=False,
        )  # fmt: skip
    sharded, single = results["two-nodes"], results["one-node"]
    assert sharded.stats["workers"] == 2 and single.stats["workers"] == 1
    info = FeatureStore("two-nodes").info(list(sharded.feature_keys["train800"].values()))
    assert len({entry["node_id"] for entry in info.values()}) == 2  # both nodes made tables
    for split in ("train800", "val200"):
        got, labels = sharded.features(split)
        want, want_labels = single.features(split)
        assert list(got) == list(want) == names
        np.testing.assert_array_equal(labels, want_labels)
        for name in names:
            np.testing.assert_array_equal(got[name], want[name])
    _, moments = sharded.gradient_moments()
    _, reference = single.gradient_moments()
    assert moments.m2.shape == reference.m2.shape and moments.m2.shape[1] == 50
    np.testing.assert_allclose(moments.m2, reference.m2, rtol=1e-9, atol=1e-12 * np.abs(reference.m2).max())
    np.testing.assert_allclose(moments.mean, reference.mean, rtol=1e-9, atol=1e-12 * np.abs(reference.mean).max())
    for label in results:
        FeatureStore(label).kill()

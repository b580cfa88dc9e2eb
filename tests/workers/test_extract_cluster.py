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

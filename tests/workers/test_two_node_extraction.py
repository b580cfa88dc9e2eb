"""Extraction on two Ray nodes (``ray.cluster_utils.Cluster``, 1 CPU each): both contribute.

Named to run after the other tests/workers modules: its cluster needs the run's local one down,
and the modules before it share that one without a restart."""

from __future__ import annotations

import json
import os
import signal
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch

from hgprompt_ray.config import ExtractionConfig
from hgprompt_ray.prompts import PromptLibrary
from hgprompt_ray.workers.extract import Extraction, ExtractionCache, extract
from hgprompt_ray.workers.feature_store import FeatureStore
from tests.workers.conftest import EMBED_DIM

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")


@pytest.fixture(scope="module")
def two_nodes():
    ray.shutdown()  # the run's local cluster (tests/conftest.py): a module after this one starts it again
    cluster = cluster_utils.Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


class FiftyPromptRuns(NamedTuple):
    """The undisturbed K = 50 runs that the 2-node tests compare against."""

    config: ExtractionConfig
    """The runs' config, less ``cache_dir`` (each run has its own)."""
    names: list[str]
    two_nodes: Extraction
    """One worker per node, 25 prompts each (store ``two-nodes``)."""
    two_nodes_cache: ExtractionCache
    one_node: Extraction
    """One worker for all 50 prompts (store ``one-node``)."""


@pytest.fixture(scope="module")
def fifty_prompts(two_nodes, extraction_setup, tmp_path_factory):
    """K = 50 random prompts extracted twice: one worker per node, and one worker on one node.

    Gradients in batches of 4 (4 batches over the 2 folds of 16 samples), so a run has
    gradient steps between which a worker can be killed.
    """
    root = tmp_path_factory.mktemp("fifty")
    library = PromptLibrary(root / "library", create=True)
    generator = torch.Generator().manual_seed(5)
    for k in range(50):
        library.add(
            f"q{k:02d}",
            torch.randn(4, EMBED_DIM, generator=generator) * 0.5,
            source_task="random",
            backbone=extraction_setup.backbone,
            img_size=32,
        )
    base = replace(extraction_setup, library=str(library.root), gradient_samples=16, gradient_batch_size=4)
    runs = {}
    for label, workers in (("two-nodes", 2), ("one-node", 1)):
        config = replace(base, cache_dir=str(root / f"cache-{label}"))
        runs[label] = extract(
            config, num_workers=workers, cpus_per_worker=1, store_name=label,
            storage_path=root / f"runs-{label}", progress=False,
        )  # fmt: skip
    yield FiftyPromptRuns(
        config=base,
        names=library.names,
        two_nodes=runs["two-nodes"],
        two_nodes_cache=ExtractionCache(root / "cache-two-nodes"),
        one_node=runs["one-node"],
    )
    for label in runs:
        FeatureStore(label).kill()


def test_fifty_prompts_sharded_over_two_nodes_equal_a_one_node_run(fifty_prompts):
    """K = 50 prompts, one worker per node (25 prompts each) vs one worker on one node: the store
    serves the same tables (features bit-identical; gradient moments equal)."""
    sharded, single, names = fifty_prompts.two_nodes, fifty_prompts.one_node, fifty_prompts.names
    assert sharded.stats["workers"] == 2 and single.stats["workers"] == 1
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(nodes) == 2
    keys = [k for split in sharded.feature_keys.values() for k in split.values()]
    info = sharded.store().info(keys)
    assert {entry["node_id"] for entry in info.values()} == nodes  # each node's worker made its shard
    for split in ("train800", "val200"):
        got, labels = sharded.features(split)
        want, want_labels = single.features(split)
        assert list(got) == list(want) == names  # the driver reads every table, from either node
        assert all(v.shape == (48, EMBED_DIM) and np.isfinite(v).all() for v in got.values())
        assert labels.shape == (48,)
        np.testing.assert_array_equal(labels, want_labels)
        for name in names:
            np.testing.assert_array_equal(got[name], want[name])
    moment_names, moments = sharded.gradient_moments()
    _, reference = single.gradient_moments()
    assert moment_names == names and moments.num_samples == 16
    assert moments.m2.shape == reference.m2.shape == (4 * EMBED_DIM, 50, 50) and np.abs(moments.m2).max() > 0
    np.testing.assert_allclose(moments.m2, reference.m2, rtol=1e-9, atol=1e-12 * np.abs(reference.m2).max())
    np.testing.assert_allclose(
        moments.mean, reference.mean, rtol=1e-9, atol=1e-12 * np.abs(reference.mean).max()
    )


def _heartbeats(folder: Path) -> list[dict[str, Any]]:
    """The workers' current heartbeat records (written atomically: each is whole)."""
    records = []
    for beat in sorted(folder.glob("*.json")):
        try:
            records.append(json.loads(beat.read_text()))
        except (OSError, json.JSONDecodeError):
            continue  # replaced between glob and read: the next poll sees the new one
    return records


def _kill_mid_gradients(
    folder: Path, node_id: str, last_step: int, killed: dict[str, Any], stop: threading.Event
) -> None:
    """SIGKILL the worker on ``node_id`` once it has finished a gradient batch other than the last."""
    while not stop.is_set():
        for info in _heartbeats(folder):
            if (
                info.get("node_id") == node_id
                and info.get("phase") == "gradients"
                and 1 <= info.get("step", -1) < last_step
            ):
                try:
                    os.kill(info["pid"], signal.SIGKILL)  # a real kill of the Ray Train worker
                except ProcessLookupError:
                    continue
                killed.update(info)
                return
        stop.wait(0.02)


def test_killing_the_second_nodes_worker_mid_gradients_loses_nothing(two_nodes, fifty_prompts, tmp_path):
    """K = 50, one worker per node; the worker on the non-head node (rank 0 or 1: Ray Train's
    choice) is SIGKILLed in the gradient pass after an all-gather, so the head node's worker
    meets a dead peer in the next all-gather. The controller's health check ends the group, the
    restarted group finds every feature table cached and redoes the gradients, and every table is
    bit-identical to the undisturbed 2-node run (same world size, so the same arithmetic)."""
    (second,) = two_nodes.worker_nodes
    assert second.node_id != two_nodes.head_node.node_id
    heartbeat = tmp_path / "heartbeat"
    config = replace(fifty_prompts.config, cache_dir=str(tmp_path / "cache"), heartbeat_dir=str(heartbeat))
    killed: dict[str, Any] = {}
    stop = threading.Event()
    # 2 folds x 8 samples in batches of 4: gradient steps 0..3; the kill lands after step 1 or 2
    watcher = threading.Thread(
        target=_kill_mid_gradients, args=(heartbeat, second.node_id, 3, killed, stop), daemon=True
    )
    watcher.start()
    store = FeatureStore("killed-two-nodes")
    try:
        resumed = extract(
            config, num_workers=2, cpus_per_worker=1, store_name="killed-two-nodes",
            storage_path=tmp_path / "runs", max_failures=2, progress=False,
        )  # fmt: skip
        stop.set()
        watcher.join(timeout=10)
        assert killed, "the worker on the second node was never killed"
        assert killed["node_id"] == second.node_id and killed["phase"] == "gradients"
        assert killed["step"] > 0  # mid-run: gradient batches had been all-gathered before the kill
        # the retry happened: a new process on the second node finished the run ...
        final = [info for info in _heartbeats(heartbeat) if info["node_id"] == second.node_id]
        assert final and all(info["pid"] != killed["pid"] for info in final)
        assert {info["phase"] for info in _heartbeats(heartbeat)} == {"gradients"}
        # ... and its worker group found every feature table cached and redid only the gradients
        assert resumed.stats["workers"] == 2
        assert resumed.stats["image_prompt_forwards"] == 0
        assert resumed.stats["gradient_sample_prompts"] == 50 * 16
        reference = fifty_prompts.two_nodes
        assert resumed.feature_keys == reference.feature_keys
        assert resumed.gradient_key == reference.gradient_key
        keys = [k for split in reference.feature_keys.values() for k in split.values()]
        keys.append(reference.gradient_key)
        retried, undisturbed = ExtractionCache(config.cache_dir), fifty_prompts.two_nodes_cache
        for key in keys:  # bit-identical tables, metadata included
            assert retried.read(key).equals(undisturbed.read(key), check_metadata=True), key
        served = ray.get(list(store.refs(keys).values()))
        wanted = ray.get(list(reference.store().refs(keys).values()))
        assert all(got.equals(want, check_metadata=True) for got, want in zip(served, wanted))
    finally:
        stop.set()
        store.kill()

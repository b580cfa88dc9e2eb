"""Arrow feature tables and the detached store actor that owns them (real local Ray cluster)."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from hgprompt_ray.errors import InvalidValueError
from hgprompt_ray.workers.feature_store import (
    FeatureStore,
    feature_table,
    features_from_table,
    table_metadata,
)

ray = pytest.importorskip("ray")


BIG = {"n": 2000, "d": 64}  # 512 KB: above Ray's 100 KB inlining threshold, so it lives in shared memory


def _features(seed=0, n=50, d=8):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, 3, n)


def test_table_round_trip_is_exact_and_zero_copy():
    features, labels = _features()
    table = feature_table(
        "p0", features, labels, metadata={"target": "digits", "split": "train800", "seed": 3}
    )
    assert table.schema.field("feature").type.list_size == 8
    got, got_labels, index = features_from_table(table)
    np.testing.assert_array_equal(got, features)
    np.testing.assert_array_equal(got_labels, labels)
    np.testing.assert_array_equal(index, np.arange(50))
    assert not got.flags.owndata  # a view of the Arrow buffer
    assert table_metadata(table) == {"target": "digits", "split": "train800", "seed": 3}


def test_bad_tables():
    features, labels = _features()
    with pytest.raises(InvalidValueError, match=r"features.shape must be \(N, d\)"):
        feature_table("p", features[0], labels)
    with pytest.raises(InvalidValueError, match=r"must both be \(50,\)"):
        feature_table("p", features, labels[:3])


@ray.remote(num_cpus=0)
class Producer:
    """Stands in for a Ray Train worker that computes features and then goes away."""

    def publish(self, store_name: str, key: str, seed: int) -> str:
        features, labels = _features(seed, **BIG)
        FeatureStore(store_name).put(key, feature_table(key, features, labels))
        return key

    def put_own(self, seed: int) -> list:
        features, labels = _features(seed, **BIG)
        return [ray.put(feature_table("own", features, labels))]


def test_tables_outlive_the_worker_that_made_them(ray_cluster):
    name = f"store-{uuid.uuid4().hex[:8]}"
    producer = Producer.remote()
    assert ray.get(producer.publish.remote(name, "digits/train800/p0", 1)) == "digits/train800/p0"
    ray.kill(producer)  # the producer dies; the store actor owns the object
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(producer.publish.remote(name, "x", 0), timeout=60)
    time.sleep(5)  # well past the ~2 s in which a dead owner's own objects are released (next test)
    store = FeatureStore(name)
    assert store.keys() == ["digits/train800/p0"]
    table = store.tables(["digits/train800/p0"])["digits/train800/p0"]
    features, labels, _ = features_from_table(table)
    expected, expected_labels = _features(1, **BIG)
    np.testing.assert_array_equal(features, expected)
    np.testing.assert_array_equal(labels, expected_labels)
    assert not features.flags.writeable  # read-only shared memory: no copy was made
    store.kill()


def test_an_object_put_by_the_producer_itself_dies_with_it(ray_cluster):
    producer = Producer.remote()
    (ref,) = ray.get(producer.put_own.remote(2))
    ray.kill(producer)
    deadline = time.time() + 60
    error = None
    while (
        error is None and time.time() < deadline
    ):  # the raylet releases a dead owner's objects asynchronously
        try:
            ray.get(ref, timeout=10)
            time.sleep(0.5)
        except ray.exceptions.OwnerDiedError as raised:
            error = raised
    assert error is not None, (
        "an object whose owner died stayed readable: the store actor would be unnecessary"
    )


def test_missing_keys_and_drop(ray_cluster):
    store = FeatureStore(f"store-{uuid.uuid4().hex[:8]}")
    features, labels = _features(3)
    ref = store.put("a", feature_table("a", features, labels))
    assert store.refs(["a"])["a"] == ref
    with pytest.raises(KeyError, match=r"has no table for \['b'\].*run the extraction first"):
        store.refs(["a", "b"])
    store.drop(["a"])
    assert store.keys() == []
    store.kill()

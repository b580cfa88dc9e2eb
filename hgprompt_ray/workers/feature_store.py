"""Feature tables in the Ray object store, owned by a long-lived detached actor.

An object dies with its owner, and Ray 2.56 removed ``ray.put(..., _owner=)``. So extraction
workers hand each Arrow table to one named, detached store actor (``num_cpus=0``) whose method
calls ``ray.put`` itself: the actor owns the object, which therefore outlives the Ray Train
worker that computed it. Readers get the ObjectRef from the actor and ``ray.get`` it; the
table's buffers stay in shared memory, so :func:`features_from_table` returns read-only numpy
views without copying.

Table layout (one table per prompt, target, split):

| column | type |
| --- | --- |
| prompt | string |
| sample_index | int64 (index into the split) |
| label | int64 |
| feature | fixed_size_list<float32>[d] |

with schema metadata ``hgprompt.schema_version``, ``hgprompt.kind`` and any caller metadata
(target, split, backbone, sample seed, ...).

Gradient statistics of a prompt set (``hgprompt.kind = gradients``; one row per prompt
coordinate c of the flattened (m, d) prompt, p = m * d rows):

| column | type |
| --- | --- |
| coordinate | int64 |
| mean | fixed_size_list<float64>[M] (mean gradient of each prompt at c) |
| m2 | fixed_size_list<float64>[M * M] (row-major Welford M2 at c) |

with metadata ``prompts`` (the M names, in column order), ``num_samples``, ``prompt_shape``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from hgprompt_ray.core import GradientMoments
from hgprompt_ray.errors import InvalidValueError, invalid_value

__all__ = [
    "FEATURE_TABLE_SCHEMA_VERSION",
    "FeatureStore",
    "alias_key",
    "feature_table",
    "features_from_table",
    "gradient_table",
    "moments_from_table",
    "table_metadata",
]

FEATURE_TABLE_SCHEMA_VERSION = 1
STORE_NAME = "hgprompt-feature-store"
STORE_NAMESPACE = "hgprompt"


def feature_table(
    prompt: str,
    features: np.ndarray,
    labels: np.ndarray,
    sample_index: np.ndarray | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> pa.Table:
    """One prompt's features on one sample set as an Arrow table (layout in the module docstring).

    Shape:
        features: (N, d) (stored as float32); labels: (N,); sample_index: (N,) (default 0..N-1).
    """
    values = np.ascontiguousarray(features, dtype=np.float32)
    if values.ndim != 2:
        raise InvalidValueError(invalid_value("features.shape", values.shape, "must be (N, d)", ""))
    count, dim = values.shape
    labels = np.asarray(labels, dtype=np.int64)
    index = (
        np.arange(count, dtype=np.int64) if sample_index is None else np.asarray(sample_index, dtype=np.int64)
    )
    if labels.shape != (count,) or index.shape != (count,):
        raise InvalidValueError(
            invalid_value(
                "labels/sample_index shape", (labels.shape, index.shape), f"must both be ({count},)", ""
            )
        )
    column = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), type=pa.float32()), dim)
    meta = {"hgprompt.schema_version": str(FEATURE_TABLE_SCHEMA_VERSION), "hgprompt.kind": "features"}
    meta.update({f"hgprompt.{k}": json.dumps(v) for k, v in (metadata or {}).items()})
    return pa.table(
        {
            "prompt": pa.array([prompt] * count, type=pa.string()),
            "sample_index": pa.array(index),
            "label": pa.array(labels),
            "feature": column,
        }
    ).replace_schema_metadata(meta)


def gradient_table(
    prompts: list[str],
    moments: GradientMoments,
    prompt_shape: tuple[int, int],
    metadata: Mapping[str, Any] | None = None,
) -> pa.Table:
    """A prompt set's gradient moments as an Arrow table (layout in the module docstring)."""
    count = moments.num_prompts
    if len(prompts) != count or prompt_shape[0] * prompt_shape[1] != moments.num_coordinates:
        raise InvalidValueError(
            invalid_value(
                "prompts/prompt_shape",
                (len(prompts), tuple(prompt_shape)),
                f"must match the moments ({count} prompts, {moments.num_coordinates} coordinates)",
                "",
            )
        )
    mean = np.ascontiguousarray(moments.mean, dtype=np.float64)
    m2 = np.ascontiguousarray(moments.m2, dtype=np.float64)
    meta = {"hgprompt.schema_version": str(FEATURE_TABLE_SCHEMA_VERSION), "hgprompt.kind": "gradients"}
    caller = {
        **(metadata or {}),
        "prompts": list(prompts),
        "num_samples": int(moments.num_samples),
        "prompt_shape": [int(prompt_shape[0]), int(prompt_shape[1])],
    }
    meta.update({f"hgprompt.{k}": json.dumps(v) for k, v in caller.items()})
    return pa.table(
        {
            "coordinate": pa.array(np.arange(moments.num_coordinates, dtype=np.int64)),
            "mean": pa.FixedSizeListArray.from_arrays(pa.array(mean.reshape(-1)), count),
            "m2": pa.FixedSizeListArray.from_arrays(pa.array(m2.reshape(-1)), count * count),
        }
    ).replace_schema_metadata(meta)


def moments_from_table(table: pa.Table) -> tuple[list[str], GradientMoments]:
    """(prompt names, moments) from :func:`gradient_table`; zero-copy read-only views."""
    meta = table_metadata(table)
    names = list(meta["prompts"])
    count = len(names)
    mean_chunk = _single_chunk(table.column("mean"))
    m2_chunk = _single_chunk(table.column("m2"))
    mean = mean_chunk.flatten().to_numpy(zero_copy_only=True).reshape(-1, count)
    m2 = m2_chunk.flatten().to_numpy(zero_copy_only=True).reshape(-1, count, count)
    return names, GradientMoments(int(meta["num_samples"]), mean, m2)


def table_metadata(table: pa.Table) -> dict[str, Any]:
    """The caller metadata stored with :func:`feature_table` (JSON-decoded)."""
    raw = table.schema.metadata or {}
    version = raw.get(b"hgprompt.schema_version")
    if version != str(FEATURE_TABLE_SCHEMA_VERSION).encode():
        raise InvalidValueError(
            invalid_value(
                "table schema_version", version, f"must be {FEATURE_TABLE_SCHEMA_VERSION}", "Re-extract."
            )
        )
    return {
        key.decode()[len("hgprompt.") :]: json.loads(value)
        for key, value in raw.items()
        if key.startswith(b"hgprompt.") and key not in (b"hgprompt.schema_version", b"hgprompt.kind")
    }


def _single_chunk(column: pa.ChunkedArray) -> pa.Array:
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def features_from_table(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features (N, d) float32, labels (N,), sample_index (N,)) as numpy views of the table.

    No copy is made when the table is a single chunk (as :func:`feature_table` builds it and as
    ``ray.get`` returns it): the arrays share the table's (for Ray, read-only shared) memory.
    """
    chunk = _single_chunk(table.column("feature"))
    features = chunk.flatten().to_numpy(zero_copy_only=True).reshape(-1, chunk.type.list_size)
    labels = _single_chunk(table.column("label")).to_numpy(zero_copy_only=True)
    index = _single_chunk(table.column("sample_index")).to_numpy(zero_copy_only=True)
    return features, labels, index


def alias_key(target: str, split: str, prompt: str) -> str:
    """The readable name under which the latest extraction of (target, split, prompt) is found."""
    return f"{target}|{split}|{prompt}"


class FeatureStore:
    """Driver- or worker-side handle of the detached store actor (created on first use).

    Args:
        name: the actor's name; every process of the cluster that uses the same name shares it.
        namespace: the Ray namespace of the actor.
    """

    def __init__(self, name: str = STORE_NAME, namespace: str = STORE_NAMESPACE) -> None:
        import ray

        self.name, self.namespace = name, namespace
        self._actor = (
            _store_actor_class()
            .options(name=name, namespace=namespace, lifetime="detached", get_if_exists=True, num_cpus=0)
            .remote()
        )
        self._ray = ray

    def put(self, key: str, table: pa.Table, info: Mapping[str, Any] | None = None) -> Any:
        """Hand ``table`` to the store actor, which ``ray.put``s (and so owns) it; returns the ref.

        Args:
            key: the table's key (extraction uses its content address).
            table: the Arrow table.
            info: small JSON-able facts about who made it (node, rank, pid), kept beside the
                table and not in it, so the table itself stays bit-identical across runs.
        """
        return self._ray.get(self._actor.put.remote(key, table, dict(info or {})))[0]

    def contains(self, keys: Iterable[str]) -> dict[str, bool]:
        """Which of ``keys`` the store holds."""
        keys = list(keys)
        found = self._ray.get(self._actor.refs.remote(keys))
        return {k: k in found for k in keys}

    def info(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The ``info`` given with each table's last ``put``."""
        return self._ray.get(self._actor.info.remote(list(keys)))

    def refs(self, keys: Iterable[str]) -> dict[str, Any]:
        """ObjectRefs of stored tables (pass them to trials instead of the data)."""
        keys = list(keys)
        found = self._ray.get(self._actor.refs.remote(keys))
        missing = [k for k in keys if k not in found]
        if missing:
            raise KeyError(
                f"feature store {self.name!r} has no table for {missing}. Fix: run the extraction first."
            )
        return {k: found[k][0] for k in keys}

    def tables(self, keys: Iterable[str]) -> dict[str, pa.Table]:
        """The stored tables (zero-copy from the object store)."""
        refs = self.refs(keys)
        values = self._ray.get(list(refs.values()))
        return dict(zip(refs, values))

    def alias(self, mapping: Mapping[str, str]) -> None:
        """Point readable names (:func:`alias_key`) at stored keys; a later call re-points them."""
        self._ray.get(self._actor.alias.remote(dict(mapping)))

    def feature_refs(self, prompts: Iterable[str], target: str, split: str) -> dict[str, Any]:
        """prompt -> ObjectRef of the latest extracted features of (target, split)."""
        prompts = list(prompts)
        aliases = {p: alias_key(target, split, p) for p in prompts}
        resolved = self._ray.get(self._actor.resolve.remote(list(aliases.values())))
        missing = [p for p, a in aliases.items() if a not in resolved]
        if missing:
            raise KeyError(
                f"feature store {self.name!r} has no {split!r} features of target {target!r} for prompts "
                f"{missing}. Fix: run the extraction for this target first."
            )
        refs = self.refs([resolved[aliases[p]] for p in prompts])
        return {p: refs[resolved[aliases[p]]] for p in prompts}

    def features(
        self, prompts: Iterable[str], target: str, split: str
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """(prompt -> (N, d) read-only zero-copy view, labels (N,)) for a target and split."""
        refs = self.feature_refs(prompts, target, split)
        tables = self._ray.get(list(refs.values()))
        views: dict[str, np.ndarray] = {}
        labels = np.empty(0, dtype=np.int64)
        for prompt, table in zip(refs, tables):
            views[prompt], labels, _ = features_from_table(table)
        return views, labels

    def keys(self) -> list[str]:
        """Keys of every stored table, sorted."""
        return sorted(self._ray.get(self._actor.keys.remote()))

    def drop(self, keys: Iterable[str]) -> None:
        """Forget tables and the readable names that point at them (their objects are freed once
        no reader holds a ref; :func:`~hgprompt_ray.workers.extract.extract` puts them back from
        the cache)."""
        self._ray.get(self._actor.drop.remote(list(keys)))

    def kill(self) -> None:
        """Terminate the store actor; every table it owns is lost."""
        self._ray.kill(self._actor)


_STORE_CLASS: Any = None


def _store_actor_class() -> Any:
    """The actor class, defined lazily so importing this module does not import Ray."""
    global _STORE_CLASS
    if _STORE_CLASS is None:
        import ray

        @ray.remote(num_cpus=0)
        class FeatureStoreActor:
            """Owns feature tables: ``ray.put`` runs here, so objects live as long as the actor."""

            def __init__(self) -> None:
                self._refs: dict[str, Any] = {}
                self._info: dict[str, dict[str, Any]] = {}
                self._aliases: dict[str, str] = {}

            def put(self, key: str, table: pa.Table, info: dict[str, Any]) -> list[Any]:
                ref = ray.put(table)
                self._refs[key] = ref
                self._info[key] = info
                return [ref]  # wrapped so the caller receives the ref, not the value

            def alias(self, mapping: dict[str, str]) -> None:
                self._aliases.update(mapping)

            def resolve(self, aliases: list[str]) -> dict[str, str]:
                return {a: self._aliases[a] for a in aliases if a in self._aliases}

            def info(self, keys: list[str]) -> dict[str, dict[str, Any]]:
                return {k: self._info[k] for k in keys if k in self._info}

            def refs(self, keys: list[str]) -> dict[str, list[Any]]:
                return {k: [self._refs[k]] for k in keys if k in self._refs}

            def keys(self) -> list[str]:
                return list(self._refs)

            def drop(self, keys: list[str]) -> None:
                for key in keys:
                    self._refs.pop(key, None)
                    self._info.pop(key, None)
                gone = set(keys)  # a readable name of a dropped table resolves no more
                self._aliases = {a: k for a, k in self._aliases.items() if k not in gone}

        _STORE_CLASS = FeatureStoreActor
    return _STORE_CLASS

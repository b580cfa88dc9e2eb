"""The extraction disk cache: content-addressed Parquet tables, one file per key."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from hgprompt_ray.atomic import atomic_path
from hgprompt_ray.errors import InvalidValueError
from hgprompt_ray.paths import cache_root
from hgprompt_ray.workers.feature_store import gradient_table, moments_from_table, table_metadata

__all__ = ["ExtractionCache"]

logger = logging.getLogger(__name__)


class ExtractionCache:
    """Content-addressed Parquet files: ``ROOT/<kind>/<key[:2]>/<key>.parquet``.

    A table whose stored key does not match its file name, or that does not parse, counts as
    missing (it is derived data: recomputing it loses nothing) and a warning names the file.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root else cache_root() / "extraction"

    def path(self, key: str) -> Path:
        kind, digest = key.split("-", 1)
        return self.root / kind / digest[:2] / f"{digest}.parquet"

    def has(self, key: str) -> bool:
        """Whether a readable table of ``key`` is cached (reads the file's schema only)."""
        path = self.path(key)
        if not path.is_file():
            return False
        try:
            stored = table_metadata(pq.read_schema(path).empty_table()).get("key")
        except (OSError, pa.ArrowException, InvalidValueError, ValueError) as error:
            logger.warning("Ignoring unreadable cache file %s (%s); it will be recomputed.", path, error)
            return False
        return bool(stored == key)

    def write(self, key: str, table: pa.Table) -> Path:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, compression="zstd")
        return path

    def read(self, key: str) -> pa.Table | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            table = pq.read_table(path)
            stored = table_metadata(table).get("key")
        except (OSError, pa.ArrowException, InvalidValueError, ValueError) as error:
            logger.warning("Ignoring unreadable cache file %s (%s); it will be recomputed.", path, error)
            return None
        if stored != key:
            logger.warning("Ignoring cache file %s: it holds key %s, not %s.", path, stored, key)
            return None
        return table.combine_chunks()

    def gradient_tables(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(key, metadata) of every readable cached gradient table, in key order (schemas only)."""
        for path in sorted((self.root / "gradients").glob("*/*.parquet")):
            try:
                meta = table_metadata(pq.read_schema(path).empty_table())
            except (OSError, pa.ArrowException, InvalidValueError, ValueError):
                continue  # unreadable: has()/read() warn when it is asked for
            key = meta.get("key")
            if isinstance(key, str) and self.path(key) == path:
                yield key, meta

    def derive_gradients(self, key: str, meta: Mapping[str, Any], names: list[str]) -> str | None:
        """Write the gradient table ``key`` (prompts ``names``, whose feature keys are
        ``meta["features"]``) as the rows of a cached table of a superset of those prompts;
        the superset's key, or None when the cache holds none.

        A gradient table holds, per coordinate, each prompt's mean gradient and the M x M second
        moments of every pair (``core.alignment.GradientMoments``); a prompt's per-sample
        gradients depend only on that prompt, the samples and the head, which is fitted on the
        bare backbone's features (shared) or on the prompt's own (per-prompt), never on the
        other prompts. So a subset's table is the superset's rows and columns for its prompts
        (``GradientMoments.subset``), equal to a direct computation up to float rounding (the
        K-prompt forward batches another number of prompts). A superset qualifies when every
        other field of the key matches: backbone weights, image size, target, split draw,
        precision, code version, gradient samples and head. Of several, the smallest (then the
        first key) is used. The scaling curve's searches over 3, 5 and 7 of a target's sources
        cut their tables from the full search's instead of running the gradient pass again.
        """
        stored_form = json.loads(json.dumps(dict(meta)))  # as a table stores it (tuples -> lists)
        wanted = list(stored_form["features"])
        names_only = ("features", "key", "target_name", "kind")  # kind: the table's schema says it
        fixed = {k: v for k, v in stored_form.items() if k not in names_only}
        best: tuple[int, str, dict[str, Any]] | None = None
        for other, stored in self.gradient_tables():
            have = stored.get("features") or []
            if (
                other == key
                or not set(wanted) <= set(have)
                or any(stored.get(k) != v for k, v in fixed.items())
            ):
                continue
            if best is None or len(have) < best[0]:
                best = (len(have), other, stored)
        if best is None:
            return None
        _, other, stored = best
        table = self.read(other)
        if table is None:
            return None
        _, moments = moments_from_table(table)
        order = [list(stored["features"]).index(f) for f in wanted]
        head = dict(stored.get("gradient_head") or {})
        if isinstance(head.get("mean_gradient_norm"), Mapping):  # per prompt: the subset's entries
            norms = [head["mean_gradient_norm"].get(n) for n in (stored["prompts"][i] for i in order)]
            head["mean_gradient_norm"] = dict(zip(names, norms))
        derived = {**meta, "gradient_head": head, "derived_from": other}
        self.write(key, gradient_table(names, moments.subset(order), tuple(stored["prompt_shape"]), derived))
        logger.info(
            "gradient table %s: the rows of %d of the %d prompts of %s", key, len(order), best[0], other
        )
        return other

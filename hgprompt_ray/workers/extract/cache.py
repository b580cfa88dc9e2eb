"""The extraction disk cache: content-addressed Parquet tables, one file per key."""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from hgprompt_ray.atomic import atomic_path
from hgprompt_ray.errors import InvalidValueError
from hgprompt_ray.paths import cache_root
from hgprompt_ray.workers.feature_store import table_metadata

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

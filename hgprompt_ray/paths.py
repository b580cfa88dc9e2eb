"""Where the project keeps its caches: ``$HGPROMPT_CACHE``, else ``~/.cache/hgprompt_ray``."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV", "cache_root"]

CACHE_ENV = "HGPROMPT_CACHE"


def cache_root() -> Path:
    """Root of the converted-weights, generated-data and feature caches."""
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "hgprompt_ray"

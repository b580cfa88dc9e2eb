"""Where the project keeps its caches (``$HGPROMPT_CACHE``, else ``~/.cache/hgprompt_ray``) and
where the shipped offline prompt zoo lies (``DEFAULT_LIBRARY``, in the checkout)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV", "DEFAULT_LIBRARY", "cache_root"]

CACHE_ENV = "HGPROMPT_CACHE"
DEFAULT_LIBRARY = str(Path(__file__).resolve().parents[1] / "prompt_zoo" / "offline")
"""The shipped offline prompt zoo (an editable install or a checkout: it is not in the wheel)."""


def cache_root() -> Path:
    """Root of the converted-weights, generated-data and feature caches."""
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "hgprompt_ray"

"""Shared fixtures; ``extraction_setup`` here has one cache for the whole directory (the local
cluster, ``ray_cluster``, is tests/conftest.py's, shared with the modules after)."""

from tests.workers.conftest import directory_extraction_setup, tiny_library, tiny_setup  # noqa: F401

extraction_setup = directory_extraction_setup("tuning")

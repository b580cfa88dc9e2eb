"""Shared fixtures; ``extraction_setup`` here has one cache for the whole directory."""

from tests.workers.conftest import directory_extraction_setup, ray_cluster, tiny_library, tiny_setup  # noqa: F401

extraction_setup = directory_extraction_setup("tuning")

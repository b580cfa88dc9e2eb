"""Shared fixtures; ``extraction_setup`` here has one cache for the whole directory, and
``ray_cluster`` one local cluster for the whole directory."""

import pytest

from tests.workers.conftest import directory_extraction_setup, tiny_library, tiny_setup  # noqa: F401

extraction_setup = directory_extraction_setup("tuning")
ray = pytest.importorskip("ray")


@pytest.fixture(scope="package")
def ray_cluster():
    """``tests/workers``' cluster (2 CPUs, no dashboard), started once for the directory: its
    modules only run searches on it, and none starts a cluster of its own, so the three that use
    it no longer pay a start and a stop each (about 9 s apiece on the 2-core machine)."""
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    yield
    ray.shutdown()

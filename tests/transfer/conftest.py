from tests.workers.conftest import extraction_setup, ray_cluster, tiny_library, tiny_setup  # noqa: F401  (shared fixtures)

from tests.workers.conftest import extraction_setup, tiny_library, tiny_setup  # noqa: F401  (shared fixtures)

from tests.workers.conftest import tiny_setup  # noqa: F401  (shared fixture)

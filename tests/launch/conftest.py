"""Shared fixtures; ``extraction_setup`` here has one cache for the whole directory."""

import pytest

from tests.workers.conftest import extraction_config, tiny_library, tiny_setup  # noqa: F401


@pytest.fixture(scope="session")
def extraction_setup(tiny_setup, tiny_library, tmp_path_factory):  # noqa: F811
    """The extraction config with one cache for every module of this directory (the search and evaluation launchers):
    these tests check what an extraction serves, never how much it computed, so a table one
    module computed is served to the next from the cache instead of being computed again."""
    return extraction_config(tiny_setup, tiny_library, tmp_path_factory.mktemp("launch-cache"))

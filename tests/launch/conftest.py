"""Shared fixtures; ``extraction_setup`` here has one cache for the whole directory, and the
launchers' tests share one local Ray cluster (``shared_cluster``)."""

import argparse

import pytest

from tests.workers.conftest import directory_extraction_setup, tiny_library, tiny_setup  # noqa: F401

extraction_setup = directory_extraction_setup("launch")


def shared_cluster() -> None:
    """Start the directory's local cluster unless it runs: the launchers' own ``start_ray``
    with ``--num-cpus 2 --no-dashboard``, the flags the tests' commands pass.

    Each launcher's ``main`` then joins it (``start_ray`` passes ``ignore_reinit_error``), as a
    second command joins a running cluster, instead of starting and stopping its own: on the
    2-core machine a start and a stop cost about 9 s, seven times over. Tests that start Ray in
    a child process (a killed search, run_jobs without Ray) get their own cluster there; a test
    that must begin without Ray calls ``ray.shutdown()``, and the next caller starts it again.
    """
    import ray

    from launch._ray import add_ray_flags, start_ray

    if not ray.is_initialized():
        parser = argparse.ArgumentParser()
        add_ray_flags(parser)
        assert start_ray(parser.parse_args(["--num-cpus", "2", "--no-dashboard"])) is not None


@pytest.fixture(scope="package", autouse=True)
def _stop_the_shared_cluster():
    yield
    import ray

    ray.shutdown()

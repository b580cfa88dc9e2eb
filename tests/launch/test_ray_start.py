"""``start_ray``: a local cluster without the dashboard quiets Ray Train's State-API poll, in every worker."""

import argparse
import logging

import ray

from hgprompt_ray.workers._trainer import PLACEMENT_GROUP_CLEANER_LOGGER
from launch._ray import start_ray


def _cleaner_level() -> int:
    return logging.getLogger(PLACEMENT_GROUP_CLEANER_LOGGER).level


@ray.remote(num_cpus=0)
class _Detached:
    """Like Ray Train's placement-group cleaner: a detached actor, started by the job."""

    def level(self) -> int:
        return _cleaner_level()


def test_no_dashboard_cluster_quiets_the_cleaner_in_tasks_and_detached_actors():
    ray.shutdown()  # a cluster left by another test would be joined as it is
    args = argparse.Namespace(address=None, num_cpus=1, no_dashboard=True, dashboard_host="127.0.0.1")
    assert start_ray(args) is not None
    try:
        task_level = ray.get(ray.remote(num_cpus=0)(_cleaner_level).remote())
        actor = _Detached.options(name="cleaner-like", namespace="test-ray-start", lifetime="detached").remote()
        actor_level = ray.get(actor.level.remote())
        ray.kill(actor)
    finally:
        ray.shutdown()
    assert task_level == logging.ERROR
    assert actor_level == logging.ERROR
    assert _cleaner_level() == logging.NOTSET  # the driver's own logging is not touched

"""Every Ray task sets torch's intra-op threads to its CPU allocation (no oversubscription)."""

from __future__ import annotations

import pytest
import torch

from hgprompt_ray.threads import allocated_cpus, use_allocated_threads

ray = pytest.importorskip("ray")


def _inside(start_threads: int) -> tuple[float | None, int, int]:
    torch.set_num_threads(start_threads)  # as a reused worker process would have it
    before = torch.get_num_threads()
    return allocated_cpus(), before, use_allocated_threads()


def test_outside_ray_the_default_applies():
    """Run in a subprocess: this module's Ray session must not be up."""
    import subprocess
    import sys

    code = (
        "import torch; from hgprompt_ray.threads import allocated_cpus, use_allocated_threads;"
        "torch.set_num_threads(2); assert allocated_cpus() is None and allocated_cpus(3) == 3;"
        "assert use_allocated_threads() == 2 and use_allocated_threads(1) == 1; print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr


@pytest.mark.parametrize("cpus, start", [(1, 2), (2, 1)])
def test_a_ray_task_gets_its_allocation(ray_cluster, cpus, start):
    allocation, before, after = ray.get(ray.remote(num_cpus=cpus)(_inside).remote(start))
    assert before == start
    assert allocation == cpus and after == cpus


def test_the_driver_has_no_allocation(ray_cluster):
    current = torch.get_num_threads()
    assert allocated_cpus() is None and allocated_cpus(5) == 5
    assert use_allocated_threads() == current


def _threads_after(function, *args) -> int:
    """Start from one thread (a reused worker's leftover), run a task body, report torch's count.
    A body that fails on its arguments has still applied the allocation first."""
    torch.set_num_threads(1)
    try:
        function(*args)
    except Exception:  # noqa: BLE001 - only the thread count matters here
        pass
    return torch.get_num_threads()


def test_the_evaluations_weights_and_zero_shot_tasks_use_their_allocation(ray_cluster, tmp_path):
    """CMA-ES's val-probe forwards run in ``weights_task`` and the zero-shot forwards in
    ``_zero_shot_task``: on a 2-CPU task they get both threads, whatever the worker ran before."""
    from hgprompt_ray.transfer.evaluation import _threads
    from hgprompt_ray.transfer.method_weights import _zero_shot_task, weights_task

    run = ray.remote(num_cpus=2)(_threads_after)
    assert ray.get(run.remote(weights_task, None, [], [])) == 2
    # the evaluation's own task bodies: the allocation even where OMP_NUM_THREADS says otherwise
    stale = ray.remote(num_cpus=2, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})(_threads_after)
    assert ray.get(stale.remote(_threads)) == 2
    assert ray.get(run.remote(_zero_shot_task, str(tmp_path / "no-library"), [], None, [])) == 2

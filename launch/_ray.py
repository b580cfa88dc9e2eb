"""Starting or joining Ray the same way in every command (dashboard on 127.0.0.1 by default).

``add_ray_flags`` gives every launcher the same ``--address``, ``--num-cpus``,
``--dashboard-host`` and ``--no-dashboard``; ``check_address`` fails fast (before anything is
written) on an unreachable cluster; ``start_ray`` starts or joins it, prints the dashboard line
and, given a log file, sends the workers' output there instead of the console.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import time
from pathlib import Path
from typing import Any

from launch._cli import UsageError

__all__ = ["add_ray_flags", "check_address", "start_ray"]


def add_ray_flags(parser: argparse.ArgumentParser) -> None:
    """The cluster flags shared by every launcher."""
    group = parser.add_argument_group("Ray cluster")
    group.add_argument("--address", default=None, help="join a running cluster ('auto' or host:port)")
    group.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray cluster")
    group.add_argument(
        "--dashboard-host", default="127.0.0.1", help="dashboard bind address (default: this machine only)"
    )
    group.add_argument("--no-dashboard", action="store_true", help="start a local cluster without it")


def check_address(address: str | None) -> None:
    """Raise UsageError when ``address`` (HOST:PORT) is malformed or unreachable."""
    if address in (None, "auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(
            f"--address must be 'auto' or HOST:PORT, but got {address!r}. Fix: e.g. --address 10.0.0.5:6379."
        )
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as error:
        raise UsageError(
            f"--address {address} is unreachable ({error}). Fix: start the cluster (ray up cluster.yaml / ray start "
            "--head) or check the address; omit --address for a local cluster."
        ) from error


def _send_worker_output_to(log_file: Path) -> None:
    """Write the workers' stdout/stderr (forwarded to the driver) into ``log_file``, not the console.

    Ray forwards worker output through a dispatcher whose console handler is ``ray_print_logs``;
    when this Ray version has no such dispatcher, the output stays on the console.
    """
    from ray._private import ray_logging

    dispatcher = getattr(ray_logging, "global_worker_stdstream_dispatcher", None)
    if dispatcher is None or not hasattr(dispatcher, "remove_handler"):
        return
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sink = log_file.open("a", buffering=1)

    def write(data: dict[str, Any]) -> None:
        prefix = f"({data.get('actor_name') or data.get('task_name') or 'worker'} pid={data.get('pid')}) "
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        for line in data.get("lines", []):
            sink.write(f"{stamp} {prefix}{line}\n")

    dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler("hgprompt_log_file", write)


def start_ray(args: argparse.Namespace, log_file: Path | None = None) -> Any:
    """``ray.init`` for a local cluster (``--address`` unset or "local") or a running one.

    Prints the dashboard line. Returns the context, or None (after one line on stderr) if Ray
    cannot start. With ``log_file``, Ray's worker output goes there instead of the console.
    """
    import ray

    from hgprompt_ray.workers._trainer import QUIET_CLEANER_HOOK

    local = args.address in (None, "local")
    quiet = local and args.no_dashboard  # no State API: Ray Train's cleaner would warn every second
    try:
        context = ray.init(
            address=None if local else args.address,
            num_cpus=args.num_cpus if local else None,
            include_dashboard=(not args.no_dashboard) if local else None,
            dashboard_host=args.dashboard_host,
            ignore_reinit_error=True,
            log_to_driver=True,
            logging_level=logging.WARNING if log_file is not None else logging.INFO,
            runtime_env={"worker_process_setup_hook": QUIET_CLEANER_HOOK} if quiet else None,
        )
    except (ConnectionError, RuntimeError, ValueError) as error:
        print(f"error: could not start or join Ray at {args.address!r}: {error}", file=sys.stderr)
        return None
    if log_file is not None:
        _send_worker_output_to(log_file)
    if getattr(context, "dashboard_url", None):
        print(
            f"Ray dashboard: http://{context.dashboard_url} (log in with the token `ray get-auth-token` prints; "
            "on a remote cluster use `ray dashboard cluster.yaml`)",
            flush=True,
        )
    return context


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    import platform

    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text(errors="replace").splitlines()
                 if line.startswith("model name")]  # fmt: skip
        if names:
            return names[0]
    return platform.processor() or platform.machine()


def describe_machine() -> str:
    """The cluster this driver runs on, for reports: CPU model, Ray's CPUs and GPUs, torch version."""
    import ray
    import torch

    model = cpu_model()
    resources = ray.cluster_resources() if ray.is_initialized() else {}
    gpus = int(resources.get("GPU", 0))
    kinds = sorted(k.split(":", 1)[1] for k in resources if k.startswith("accelerator_type:"))  # no CUDA context here
    gpu = f", {gpus} GPU" + (f" ({', '.join(kinds)})" if kinds else "")
    return f"{model}; Ray: {int(resources.get('CPU', 0))} CPUs{gpu}; torch {torch.__version__}"

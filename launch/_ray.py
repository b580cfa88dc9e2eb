"""Starting or joining Ray the same way in every command (dashboard on 127.0.0.1 by default)."""

from __future__ import annotations

import sys
from typing import Any


def start_ray(address: str | None, num_cpus: int | None, no_dashboard: bool, dashboard_host: str) -> Any:
    """``ray.init`` for a local cluster (address None or "local") or a running one; prints the
    dashboard address. Returns the context, or None (after one line on stderr) if Ray cannot start."""
    import ray

    local = address in (None, "local")
    try:
        context = ray.init(
            address=None if local else address,
            num_cpus=num_cpus if local else None,
            include_dashboard=(not no_dashboard) if local else None,
            dashboard_host=dashboard_host,
            ignore_reinit_error=True,
            log_to_driver=True,
        )
    except (ConnectionError, RuntimeError, ValueError) as error:
        print(f"error: could not start or join Ray at {address!r}: {error}", file=sys.stderr)
        return None
    if getattr(context, "dashboard_url", None):
        print(
            f"Ray dashboard: http://{context.dashboard_url} (log in with the token `ray get-auth-token` prints; "
            "on a remote cluster use `ray dashboard cluster.yaml`)",
            flush=True,
        )
    return context

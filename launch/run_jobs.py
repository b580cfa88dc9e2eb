"""Run an evaluation's prepared runs here, without Ray: the tuned runs on a machine with a GPU.

    python launch/evaluate.py --targets count dsprites-scale --methods hgprompt average single-best \\
        --seeds 3 --output reports/gpu --prepare-only     # where Ray is: every method's weights
    python launch/run_jobs.py reports/gpu --workers 8     # on the GPU machine: torch and timm only
    python launch/evaluate.py --report-only --output reports/gpu

The weights (the HGPrompt search, random search, SPoT's brief tuning) need Ray and Optuna; the
runs themselves need only torch, timm and the prompt library, so they can go where neither is
installed (a lent GPU box with no registry; there ``HGPROMPT_OFFLINE_WEIGHTS`` supplies the
offline backbone, see ``hgprompt_ray/models/portable.py``). ``OUTPUT/jobs.json`` lists the runs
that were still to go when it was written.

``--workers N`` starts N processes of this script, each with every N-th run of the seed-major
order (each seed's whole set of targets and methods before the next seed), all on the same GPU:
one small ViT with batches of 32 leaves a large GPU mostly idle, so several processes finish more
runs per minute. Each result is written as it finishes, and a rerun skips the finished ones.
``--max-minutes`` stops starting runs after that time (the runs in progress finish), so that
a lease with a hard limit ends with whole runs; ``--methods`` runs a subset first (the main
comparison before the extras). The invocation is recorded as one chunk of
``OUTPUT/evaluate.json`` with its command, machine and wall time, which the report shows.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from hgprompt_ray.atomic import atomic_write_json
from hgprompt_ray.transfer.evaluation import EVALUATION_STATE as STATE_FILE
from hgprompt_ray.transfer.evaluation import with_totals
from hgprompt_ray.transfer.runner import read_job_file, run_here, unfinished
from launch._cli import UsageError, cli_main, command_line
from launch._ray import cpu_model

logger = logging.getLogger("launch.run_jobs")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("output", help="the evaluation folder holding jobs.json (evaluate.py --prepare-only)")
    parser.add_argument(
        "--workers", type=int, default=1, help="processes sharing this machine's GPU (default 1)"
    )
    parser.add_argument(
        "--max-minutes", type=float, default=None, help="start no run after this many minutes"
    )
    parser.add_argument(
        "--prompts", default=None, help="the prompt library (default: the one jobs.json names)"
    )
    parser.add_argument("--methods", nargs="+", default=None,
                        help="run only these methods' runs (default: all of jobs.json), e.g. the main ones first")  # fmt: skip
    parser.add_argument("--shard", default=None, help=argparse.SUPPRESS)  # I/N: one worker process's share
    return parser.parse_args(argv)


def _shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard {text!r}: must be I/N, e.g. 0/4") from None
    return index, count


def describe_here() -> str:
    """CPU model and count, the GPU if any, torch's version: the machine line of the report."""
    import torch

    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{cpu_model()} ({os.cpu_count()} CPUs){gpu}; no Ray; torch {torch.__version__}"


def _record(output: Path, chunk: dict) -> None:
    """Append this invocation to ``evaluate.json`` (its chunks, total seconds and run count)."""
    path = output / STATE_FILE
    state = json.loads(path.read_text())
    atomic_write_json(path, with_totals({**state, "chunks": [*state.get("chunks", []), chunk]}, output))


def _spawn(args: argparse.Namespace, output: Path, minutes: float | None) -> int:
    """Start the worker processes, wait for all; returns the first non-zero exit code (else 0)."""
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads))}
    workers = []
    for index in range(args.workers):
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            str(output),
            "--shard",
            f"{index}/{args.workers}",
        ]
        if minutes is not None:
            command += ["--max-minutes", str(minutes)]
        if args.prompts:
            command += ["--prompts", args.prompts]
        if args.methods:
            command += ["--methods", *args.methods]
        workers.append(subprocess.Popen(command, env=env))
    codes = [worker.wait() for worker in workers]
    return next((code for code in codes if code), 0)


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    output = Path(args.output).expanduser()
    jobs, transfer, library = read_job_file(output)
    library = args.prompts or library
    if not Path(library).is_dir():
        raise UsageError(f"prompt library {library!r} is not a folder here. Fix: pass --prompts PATH.")
    if args.workers < 1:
        raise UsageError(f"--workers {args.workers}: must be at least 1")
    if args.methods:
        present = sorted({job.method for job in jobs})
        unknown = sorted(set(args.methods) - set(present))
        if unknown:
            raise UsageError(
                f"--methods {' '.join(unknown)}: not in {output / 'jobs.json'}. Fix: choose among {present}."
            )
        jobs = [job for job in jobs if job.method in args.methods]
    deadline = None if args.max_minutes is None else time.monotonic() + 60 * args.max_minutes
    if args.shard is not None:  # one worker process
        run_here(output, jobs, transfer, library, shard=_shard(args.shard), deadline=deadline)
        return 0
    todo = unfinished(output, jobs)
    print(f"{len(todo)} of {len(jobs)} runs to go, {args.workers} worker(s) on {describe_here()}", flush=True)
    started, start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), time.perf_counter()
    code = 0
    if todo:
        if args.workers == 1:
            run_here(output, jobs, transfer, library, deadline=deadline)
        else:
            code = _spawn(args, output, args.max_minutes)
    left = unfinished(output, jobs)
    _record(output, {"command": command_line("run_jobs.py", argv), "target_names": sorted({j.target_name for j in jobs}),
                     "protocols": sorted({j.protocol for j in jobs}), "machine": describe_here(), "started": started,
                     "seconds": time.perf_counter() - start, "ran": len(todo) - len(left)})  # fmt: skip
    print(f"{len(todo) - len(left)} runs done now, {len(left)} left; "
          f"report: python launch/evaluate.py --report-only --output {output}")  # fmt: skip
    return code


main = cli_main(run)

if __name__ == "__main__":
    raise SystemExit(main())

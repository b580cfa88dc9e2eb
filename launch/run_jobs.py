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
``OUTPUT/evaluate.json`` with its command, machine and wall time, which the report shows. The
chunk is written when the invocation starts and updated every ``--checkpoint-seconds`` (the
seconds so far and the runs finished, ``finished: false``), so a call cut off by a lease's limit
still counts its time and runs; its end sets ``finished: true``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
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
    parser.add_argument("--checkpoint-seconds", type=float, default=30.0,
                        help="how often the chunk's time and finished runs are saved (default 30)")  # fmt: skip
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


def _record(output: Path, chunk: dict, index: int | None = None) -> int:
    """Write this invocation's chunk into ``evaluate.json`` (appended, or in place at ``index``)
    with the totals (seconds, run count) recomputed; returns its index."""
    path = output / STATE_FILE
    state = json.loads(path.read_text())
    chunks = list(state.get("chunks", []))
    if index is None:
        chunks.append(chunk)
        index = len(chunks) - 1
    else:
        chunks[index] = chunk
    atomic_write_json(path, with_totals({**state, "chunks": chunks}, output))
    return index


class _Checkpoints:
    """Save the chunk's seconds and finished runs every ``every`` seconds from a thread, and once
    at the end (only this process writes ``evaluate.json``)."""

    def __init__(self, output: Path, chunk: dict, todo: list, jobs: list, every: float) -> None:
        self.output, self.chunk, self.todo, self.jobs = output, chunk, todo, jobs
        self.start, self.stop = time.perf_counter(), threading.Event()
        self.index: int | None = None  # the chunk's place in evaluate.json, once appended
        self.index = self.save()
        self.thread = threading.Thread(target=self._loop, args=(every,), daemon=True)
        self.thread.start()

    def save(self, finished: bool = False) -> int:
        ran = len(self.todo) - len(unfinished(self.output, self.jobs))
        self.chunk.update(seconds=time.perf_counter() - self.start, ran=ran, finished=finished)
        return _record(self.output, self.chunk, self.index)

    def _loop(self, every: float) -> None:
        while not self.stop.wait(every):
            self.save()

    def close(self, finished: bool) -> int:
        self.stop.set()
        self.thread.join()
        self.save(finished=finished)
        return int(self.chunk["ran"])


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
    if not args.checkpoint_seconds > 0:
        raise UsageError(f"--checkpoint-seconds {args.checkpoint_seconds}: must be positive, e.g. 30")
    todo = unfinished(output, jobs)
    print(f"{len(todo)} of {len(jobs)} runs to go, {args.workers} worker(s) on {describe_here()}", flush=True)
    chunk = {"command": command_line("run_jobs.py", argv), "target_names": sorted({j.target_name for j in jobs}),
             "protocols": sorted({j.protocol for j in jobs}), "machine": describe_here(),
             "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    checkpoints = _Checkpoints(output, chunk, todo, jobs, args.checkpoint_seconds)
    code, finished = 0, False
    try:
        if todo:
            if args.workers == 1:
                run_here(output, jobs, transfer, library, deadline=deadline)
            else:
                code = _spawn(args, output, args.max_minutes)
        finished = True
    finally:  # an error leaves the chunk as a kill would: counted up to now, finished: false
        ran = checkpoints.close(finished)
    print(f"{ran} runs done now, {len(todo) - ran} left; "
          f"report: python launch/evaluate.py --report-only --output {output}")  # fmt: skip
    return code


main = cli_main(run)

if __name__ == "__main__":
    raise SystemExit(main())

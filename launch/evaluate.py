"""Evaluate HGPrompt against the baselines on target tasks: a report folder of tables and plots.

    python launch/evaluate.py --targets digits-parity textile --output reports/offline
    python launch/evaluate.py --leave-one-out --seeds 3 --output reports/offline-loo   # every task
    python launch/evaluate.py --targets count --methods hgprompt average single-best \
        --protocol init-probe --seeds 5 --output reports/count-init   # cheap: probes on P0
    python launch/evaluate.py --report-only --output reports/offline   # rebuild the report
    python launch/evaluate.py --targets count --output reports/gpu --prepare-only   # weights here, then
    python launch/run_jobs.py reports/gpu --workers 8    # the runs on a GPU machine, no Ray needed

The methods are the registry's (``hgprompt_ray/transfer/methods/``: ``--methods`` chooses among
them, and each method's own settings are flags). For every target (its own prompt is never a
source): the zero-shot column, the HGPrompt search (``run_search``, cached extraction), SPoT's
briefly tuned prompt per seed, every method's weights (``hgprompt_ray.transfer.method_weights``),
target by target, each target's cheap init-probe runs right after its weights, the tuned runs
once every target has its weights (``--leave-one-out`` takes the targets whose sources' zero-shot
accuracies spread the most first, the saturated ones last). Every (method, target, seed) transfer runs as a Ray task under each chosen ``--protocol``:
``tuned`` is the VTAB-1k protocol with the same budget for every method (``TransferConfig``:
epochs, learning-rate grid, precision); ``init-probe`` fits a logistic probe on the features
under the initial prompt P0 (the weightings, and the linear probe's bare backbone), where seed k
is the split draw ``--split-seed + k`` with every weighting recomputed on it. Results go to
``OUTPUT/runs/<target>/<method>/seed<k>.json`` as they finish: a rerun with the same arguments
continues where it stopped. The report (``report.md``, tables, ``scaling.png``, ``tsne.png``,
weight plots) is written at the end by ``hgprompt_ray.transfer.report.write_report``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from hgprompt_ray.atomic import atomic_write_json
from hgprompt_ray.config import TransferConfig
from hgprompt_ray.transfer.evaluation import with_totals
from hgprompt_ray.transfer.methods import registered
from hgprompt_ray.transfer.plan import (
    SEED_COUNTS,
    STATE_FILE,
    EvaluationPlan,
    EvaluationSettings,
    library_label,
    plan_evaluation,
)
from launch._cli import UsageError, add_config_flags, cli_main, command_line, config_kwargs, configure_logging
from launch._ray import add_ray_flags, check_address, describe_machine, start_ray

STATE_SCHEMA = 1
TIME_LIMIT_EXIT = 75  # EX_TEMPFAIL: stopped at --max-minutes, rerun the same command to continue
TRANSFER_FLAGS = ("epochs", "lr_scales", "batch_size", "base_lr", "weight_decay", "warmup_fraction", "max_steps",
                  "max_test", "split_seed", "precision", "data_root")  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--targets", nargs="+", default=None, help="task names, folders or CSVs")
    which.add_argument("--leave-one-out", action="store_true", help="every source task of the library")
    add_config_flags(parser, EvaluationSettings)
    budget = parser.add_argument_group("tuning budget (the same for every method)")
    skip = [f for f in ("task", "backbone", "img_size", "seed", "eval_batch_size")]
    add_config_flags(budget, TransferConfig, skip=skip)
    own = parser.add_argument_group("methods' own settings (from the registry)")
    for method in registered():
        if method.settings is not None:
            add_config_flags(own, method.settings)
    add_ray_flags(parser)
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from --output")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="end this invocation (a chunk) at the first step boundary after M minutes (a target's "
                             "zero-shot columns, one split draw's weights, a target's init-probe runs) with exit "
                             f"code {TIME_LIMIT_EXIT}; the same command continues from there. A chunk then takes "
                             "at most M minutes plus its longest step. The tuned runs, which start once every target has "
                             "its weights, are not bounded: give them a chunk of their own")  # fmt: skip
    parser.add_argument("--prepare-only", action="store_true",
                        help="compute every method's weights, write OUTPUT/jobs.json (the runs to go) and stop: "
                             "run them with launch/run_jobs.py, e.g. on a GPU machine without Ray")  # fmt: skip
    return parser.parse_args(argv)


def _union(first: list, then: list) -> list:
    return list(dict.fromkeys([*first, *then]))


def _state(plan: EvaluationPlan, command: str, machine: str) -> dict:
    """``evaluate.json``: what the folder holds. A rerun with other ``--targets`` (a chunk of a
    long evaluation: same budget and library) adds its targets; each invocation is a chunk with its
    command, targets, machine and wall time."""
    names = [plan.target_name(t) for t in plan.targets]
    previous = {}
    if (plan.output / STATE_FILE).is_file():
        previous = json.loads((plan.output / STATE_FILE).read_text())
    chunks = list(previous.get("chunks", []))
    if previous and not chunks:  # a folder from before chunks: its one invocation
        chunks = [{k: previous.get(k) for k in ("command", "target_names", "started", "seconds")}]
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    before = previous.get("budget", {})  # a rerun may add seeds (plan.SEED_COUNTS): the folder holds the most
    seeds = {k: max(plan.budget[k], before.get(k) or 0) for k in SEED_COUNTS}
    chunks.append({"command": command, "target_names": names, "protocols": list(plan.settings.protocols),
                   "machine": machine, "started": now, "seconds": None})  # fmt: skip
    return {
        "schema_version": STATE_SCHEMA,
        "command": command,
        "library": library_label(plan.library.root),
        "backbone": plan.backbone,
        "img_size": plan.img_size,
        "targets": _union(previous.get("targets", []), list(plan.targets)),
        "target_names": _union(previous.get("target_names", []), names),
        "scaling_targets": _union(previous.get("scaling_targets", []), list(plan.scaling_targets)),
        "scaling_target_names": _union(previous.get("scaling_target_names", []),
                                       [plan.target_name(t) for t in plan.scaling_targets]),  # fmt: skip
        "scaling_seeds": plan.settings.scaling_seeds,
        "seeds": seeds["seeds"],
        "budget": {**plan.budget, **seeds},
        "machine": machine,
        "started": previous.get("started", now),
        "chunks": chunks,
    }


def _finished(plan: EvaluationPlan, state: dict) -> dict:
    """The folder's record at the end of this chunk: re-read, so that a chunk that ran beside this
    one into the same folder keeps its own record and targets; this chunk's entry gets its time."""
    path = plan.output / STATE_FILE
    current = json.loads(path.read_text()) if path.is_file() else state
    mine = state["chunks"][-1]
    chunks = [c for c in current.get("chunks", []) if (c.get("started"), c.get("command")) != (mine["started"], mine["command"])]
    merged = {**current, "budget": state["budget"], "chunks": [*chunks, mine]}
    for key in ("targets", "target_names", "scaling_targets", "scaling_target_names"):
        merged[key] = _union(current.get(key, []), state[key])
    return with_totals(merged, plan.output)


class _TimeLimit(Exception):
    """This chunk reached --max-minutes at a step boundary."""


def report_only(output: Path) -> int:
    from hgprompt_ray.transfer.report import write_report

    if not (output / STATE_FILE).is_file():
        raise UsageError(
            f"--report-only: {output} holds no evaluation. Fix: run without --report-only first."
        )
    path, display = write_report(output, json.loads((output / STATE_FILE).read_text()))
    print(display.drop(columns=["Trains"]).to_string())
    print(f"wrote {path}")
    return 0


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(None, verbose=True)
    if args.report_only:
        return report_only(Path(args.output).expanduser())
    if args.max_minutes is not None and not args.max_minutes > 0:
        raise UsageError(f"--max-minutes {args.max_minutes:g}: must be positive, e.g. 100 (or leave it out: no limit)")
    settings = EvaluationSettings(**config_kwargs(args, EvaluationSettings))
    transfer = {name: getattr(args, name) for name in TRANSFER_FLAGS if name != "data_root"}
    transfer["lr_scales"] = tuple(transfer["lr_scales"])
    method_settings = {m.name: m.settings(**config_kwargs(args, m.settings)) for m in registered() if m.settings}
    plan = plan_evaluation(settings, transfer, args.targets, args.leave_one_out, args.data_root, method_settings)
    check_address(args.address)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

    from hgprompt_ray.transfer.method_weights import target_weights, zero_shot_columns
    from hgprompt_ray.transfer.report import write_report
    from hgprompt_ray.transfer.runner import build_jobs, run_jobs, write_job_file, write_tsne

    start = time.perf_counter()
    if start_ray(args) is None:
        return 2
    plan.output.mkdir(parents=True, exist_ok=True)
    state = _state(plan, command_line("evaluate.py", argv), describe_machine())
    atomic_write_json(plan.output / STATE_FILE, state)

    def checkpoint(finished: bool = False) -> None:  # the chunk's wall time so far: an interrupted one keeps it
        state["chunks"][-1].update(seconds=time.perf_counter() - start, finished=finished)
        atomic_write_json(plan.output / STATE_FILE, _finished(plan, state))

    def step_done() -> None:  # a step boundary: save, and end the chunk here once past --max-minutes
        checkpoint()
        if args.max_minutes is not None and time.perf_counter() - start > 60 * args.max_minutes:
            raise _TimeLimit

    weights, split_weights = {}, {}  # init-probe seed k > 0: its own split draw, its own weights (no test leak)
    ran = 0
    draws = "init-probe" in plan.settings.protocols and plan.settings.seeds > 1
    try:
        for t in plan.targets:  # target by target: a chunk cut midway leaves whole targets of init-probe
            if draws and plan.tasks[t].split_is_seeded:  # every draw's zero-shot column, one pass over their images
                zero_shot_columns(plan, t, list(range(plan.settings.seeds)))
                step_done()
            weights[t] = target_weights(plan, t)
            step_done()
            if "init-probe" in plan.settings.protocols:  # a task with fixed splits (VTAB's) has one draw
                split_weights[t] = {}
                for k in range(1, plan.settings.seeds):
                    split_weights[t][k] = target_weights(plan, t, k) if plan.tasks[t].split_is_seeded else weights[t]
                    step_done()
                if not args.prepare_only:  # the cheap runs now; the tuned ones after every target's
                    probes = build_jobs(plan, weights, split_weights, targets=[t])
                    ran += run_jobs(plan, [j for j in probes if j.protocol == "init-probe"], on_result=checkpoint)
                    step_done()
    except _TimeLimit:
        state["chunks"][-1]["stopped"] = f"--max-minutes {args.max_minutes:g}"
        checkpoint()
        print(f"stopped at --max-minutes {args.max_minutes:g} after {(time.perf_counter() - start) / 60:.1f} min "
              f"({ran} runs this time); run the same command to continue")  # fmt: skip
        return TIME_LIMIT_EXIT
    jobs = build_jobs(plan, weights, split_weights)
    if args.prepare_only:
        path = write_job_file(plan, jobs)
        state["chunks"][-1].update(seconds=time.perf_counter() - start, finished=True,
                                   prepared=len(json.loads(path.read_text())["jobs"]))  # fmt: skip
        atomic_write_json(plan.output / STATE_FILE, _finished(plan, state))
        print(f"wrote {path}: {state['chunks'][-1]['prepared']} runs to go of {len(jobs)}. Run them with "
              f"`python launch/run_jobs.py {plan.output}`, then `python launch/evaluate.py --report-only --output {plan.output}`")  # fmt: skip
        return 0
    ran += run_jobs(plan, jobs, on_result=checkpoint)
    if not (plan.output / "tsne.png").is_file() or ran:
        write_tsne(plan, weights)
    checkpoint(finished=True)
    state = _finished(plan, state)
    path, display = write_report(plan.output, state)
    print(display.drop(columns=["Trains"]).to_string())
    print(f"wrote {path} ({ran} runs this time, {len(jobs)} in all)")
    return 0


main = cli_main(run)

if __name__ == "__main__":
    raise SystemExit(main())

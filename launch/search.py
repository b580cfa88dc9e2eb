"""Find the best prompt ensemble for a target: extraction, then Ray Tune + Optuna over lambda,
M and the prompt subset, each trial an alpha solve. The product's main command.

    python launch/search.py --target digits-parity                      # the shipped offline zoo
    python launch/search.py --target ./my_images --output runs/mine     # a folder of class folders
    python launch/search.py --target svhn --prompts zoo_vtab --backbone vit_base_patch16_224.augreg_in21k \
        --img-size 224 --samples 800 --gradient-samples 800 --num-samples 200 --address auto
    python launch/search.py --target digits-parity --output runs/x --resume   # after a kill

Steps: validate everything (bad input: one line on stderr, exit 2, nothing written); start or
join Ray (dashboard on --dashboard-host, 127.0.0.1 by default); extract features and gradient
statistics of the target under every source prompt (Ray Train, cached on disk: a rerun computes
nothing); precompute the search statistics once (one Ray task); run the trials with Tune +
OptunaSearch (TPE, seeded); write into --output: ``best.json``, ``trials.parquet``,
``trials.csv``, ``alpha.png`` (best alpha per prompt), ``search_curve.png``, ``search.json``
(the arguments, the extraction and, for folder/CSV targets, ``splits.json``).
The prompt trained on the target task itself is left out unless --include-target-prompt.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hgprompt_ray.atomic import atomic_path, atomic_write_json  # noqa: E402
from hgprompt_ray.data import TaskUnavailableError, resolve_target  # noqa: E402
from hgprompt_ray.errors import IntegrityError, InvalidValueError  # noqa: E402
from hgprompt_ray.prompts import PromptLibrary  # noqa: E402
from launch._ray import start_ray  # noqa: E402
from search_spaces import hgprompt as space_module  # noqa: E402

logger = logging.getLogger("search")
DEFAULT_LIBRARY = ROOT / "prompt_zoo" / "offline"
STATE_FILE = "search.json"
TUNE_NAME = "tune"


class UsageError(Exception):
    """Bad input: printed as one line, exit code 2."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", required=True, help="task name, ImageFolder directory or path,label CSV")
    parser.add_argument(
        "--prompts", default=str(DEFAULT_LIBRARY), help="prompt library (default: the shipped zoo)"
    )
    parser.add_argument("--backbone", default=None, help="backbone name (default: the library's)")
    parser.add_argument("--img-size", type=int, default=None, help="image size (default: the library's)")
    parser.add_argument("--num-samples", type=int, default=32, help="Tune trials")
    parser.add_argument("--max-concurrent", type=int, default=None, help="concurrent trials (default: CPUs)")
    parser.add_argument("--lambda-range", type=float, nargs=2, default=list(space_module.LAMBDA_RANGE))
    parser.add_argument("--min-prompts", type=int, default=space_module.MIN_PROMPTS)
    parser.add_argument("--max-prompts", type=int, default=None, help="largest M (default: all prompts)")
    parser.add_argument("--scheduler", choices=["fifo", "asha"], default="fifo")
    parser.add_argument("--samples", type=int, default=256, help="N target samples per split for extraction")
    parser.add_argument("--gradient-samples", type=int, default=64, help="samples for per-sample gradients")
    parser.add_argument("--workers", type=int, default=1, help="Ray Train extraction workers")
    parser.add_argument("--include-target-prompt", action="store_true", help="keep the target's own prompt")
    parser.add_argument(
        "--sources",
        nargs="+",
        default=None,
        metavar="NAME",
        help="search over these prompts only (default: all)",
    )
    parser.add_argument("--address", default=None, help="join a running cluster ('auto' or host:port)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray cluster")
    parser.add_argument("--dashboard-host", default="127.0.0.1")
    parser.add_argument("--no-dashboard", action="store_true", help="start a local cluster without it")
    parser.add_argument("--resume", action="store_true", help="continue the search in --output")
    parser.add_argument("--output", default=None, help="results folder (default runs/search-<target>)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--data-root", default=None)
    parser.add_argument(
        "--download", action="store_true", help="fetch a missing VTAB dataset (needs a network)"
    )
    parser.add_argument(
        "--cache-dir", default=None, help="extraction cache (default: <cache root>/extraction)"
    )
    parser.add_argument(
        "--smoke-test", action="store_true", help="tiny sizes: N=48, 12 gradient samples, 4 trials"
    )
    args = parser.parse_args(argv)
    if args.smoke_test:
        args.samples, args.gradient_samples, args.num_samples = 48, 12, 4
    return args


# --------------------------------------------------------------------------- validation
def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise UsageError(f"--{name} must be a positive integer, but got {value}. Fix: pass e.g. --{name} 4.")


def validate(args: argparse.Namespace) -> dict[str, Any]:
    """Everything that can be checked before Ray starts; raises UsageError with the fix."""
    for name in ("num_samples", "samples", "gradient_samples", "workers"):
        _check_positive(name.replace("_", "-"), getattr(args, name))
    if args.max_concurrent is not None:
        _check_positive("max-concurrent", args.max_concurrent)
    low, high = args.lambda_range
    if not (0 < low < high):
        raise UsageError(
            f"--lambda-range must be two numbers 0 < LOW < HIGH (log-uniform), but got {low} {high}. "
            f"Fix: e.g. --lambda-range {space_module.LAMBDA_RANGE[0]} {space_module.LAMBDA_RANGE[1]}."
        )
    task = resolve_target(args.target, data_root=args.data_root, download=args.download)
    available, reason = task.availability()
    if not available:
        raise UsageError(f"target {args.target!r} is not available here: {reason}")
    library_path = Path(args.prompts).expanduser()
    if not (library_path / "manifest.json").is_file():
        raise UsageError(
            f"--prompts {library_path} is not a prompt library (no manifest.json). Fix: pass a folder made by "
            "launch/train_sources.py or 'python -m hgprompt_ray.prompts import'."
        )
    library = PromptLibrary(library_path)
    problems = library.verify()
    if problems:
        raise UsageError(f"prompt library {library_path} is damaged: {problems[0]}")
    records = library.records()
    if not args.include_target_prompt:
        dropped = [r.name for r in records if r.source_task == task.info.name]
        records = [r for r in records if r.source_task != task.info.name]
        if dropped:
            logger.info(
                "leaving out %s: trained on the target itself (--include-target-prompt keeps it)", dropped
            )
    if args.sources is not None:
        unknown = sorted(set(args.sources) - set(library.names))
        if unknown:
            raise UsageError(
                f"--sources {unknown} are not in prompt library {library_path}. "
                f"Fix: choose from {library.names}."
            )
        records = [r for r in records if r.name in set(args.sources)]
    if len(records) < 2:
        raise UsageError(
            f"prompt library {library_path} has {len(records)} usable prompt(s) for target {task.info.name!r}; "
            "an ensemble needs at least 2. Fix: add prompts (python -m hgprompt_ray.prompts import ...)."
        )
    backbones = {r.backbone for r in records}
    backbone = args.backbone or (backbones.pop() if len(backbones) == 1 else None)
    if backbone is None:
        raise UsageError(
            f"prompt library {library_path} mixes backbones {sorted(backbones)}. Fix: pass --backbone."
        )
    records = [r for r in records if r.backbone == backbone]
    if len(records) < 2:
        raise UsageError(
            f"prompt library {library_path} has {len(records)} prompt(s) for backbone {backbone!r}. "
            f"Fix: pass --backbone with one of {sorted({r.backbone for r in library.records()})}."
        )
    sizes = {r.img_size for r in records}
    img_size = args.img_size or (sizes.pop() if len(sizes) == 1 else None)
    if img_size is None or any(r.img_size != img_size for r in records):
        raise UsageError(
            f"the prompts were trained at image sizes {sorted({r.img_size for r in records})}, "
            f"not all at --img-size {args.img_size}. Fix: pass matching prompts or --img-size."
        )
    count = len(records)
    if not 1 <= args.min_prompts <= count:
        raise UsageError(
            f"--min-prompts must be in [1, {count}] (the usable prompts), but got {args.min_prompts}."
        )
    max_prompts = count if args.max_prompts is None else args.max_prompts
    if not args.min_prompts <= max_prompts <= count:
        raise UsageError(
            f"--max-prompts must be in [{args.min_prompts}, {count}] (M cannot exceed the {count} usable prompts), "
            f"but got {max_prompts}. Fix: pass --max-prompts {count} or add prompts."
        )
    if args.address not in (None, "auto", "local") and not args.address.startswith("ray://"):
        _check_reachable(args.address)
    output = Path(args.output or f"runs/search-{task.info.name}").expanduser()
    state = output / STATE_FILE
    if args.resume:
        if not state.is_file():
            raise UsageError(
                f"--resume: {output} holds no search to resume. Fix: drop --resume to start one."
            )
        previous = json.loads(state.read_text())
        if previous["target"] != args.target or previous["prompts"] != [r.name for r in records]:
            raise UsageError(
                f"--resume: {output} holds a search of target {previous['target']!r} over prompts "
                f"{previous['prompts']}, not this one. Fix: pass the same --target and --prompts."
            )
    elif output.exists() and any(output.iterdir()):
        what = "another search" if state.is_file() else "other files"
        raise UsageError(
            f"--output {output} already holds {what}. Fix: pass --resume to continue it, or choose a new --output."
        )
    return {
        "task": task,
        "records": records,
        "backbone": backbone,
        "img_size": img_size,
        "max_prompts": max_prompts,
        "output": output,
    }


def _check_reachable(address: str) -> None:
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


# --------------------------------------------------------------------------- outputs
def write_plots(frame: Any, best: dict[str, Any], prompts: list[str], output: Path, metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(max(5.0, 0.6 * len(prompts) + 2), 3.6))
    weights = [best["alpha"].get(p, 0.0) for p in prompts]
    axis.bar(range(len(prompts)), weights, color=["tab:blue" if w > 0 else "lightgrey" for w in weights])
    axis.set_xticks(range(len(prompts)), prompts, rotation=45, ha="right", fontsize=8)
    axis.set_ylabel("alpha")
    axis.set_title(
        f"best ensemble for {best['target']}: lambda={best['lambda']:.3g}, M={best['num_prompts']}, "
        f"{metric}={best[metric]:.3f}",
        fontsize=9,
    )
    figure.tight_layout()
    with atomic_path(output / "alpha.png") as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(6, 3.6))
    axis.scatter(frame["trial"], frame[metric], s=14, label="trial", color="tab:grey")
    axis.plot(frame["trial"], frame[metric].cummax(), color="tab:red", label="best so far")
    axis.set_xlabel("trial (creation order)")
    axis.set_ylabel(f"{metric} (val200)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    with atomic_path(output / "search_curve.png") as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)


def summarise(frame: Any, prompts: list[str], metric: str, target: str) -> dict[str, Any]:
    row = frame.loc[frame[metric].idxmax()]
    return {
        "target": target,
        metric: float(row[metric]),
        "lambda": float(row["lambda"]),
        "num_prompts": int(row["num_prompts"]),
        "subset": str(row["subset"]).split(","),
        "alpha": {p: float(row[f"alpha_{p}"]) for p in prompts},
        "objective": float(row["objective"]),
        "h_score": float(row["h_score"]),
        "alignment": float(row["alignment"]),
        "trial": int(row["trial"]),
        "trial_id": str(row["trial_id"]),
        "trials": int(len(frame)),
    }


def print_summary(best: dict[str, Any], prompts: list[str], metric: str, seconds: float) -> None:
    print(f"\nBest ensemble for {best['target']} after {best['trials']} trials ({seconds:.0f} s)")
    print(
        f"  {metric} {best[metric]:.4f} | lambda {best['lambda']:.4g} | M {best['num_prompts']} | "
        f"train H {best['h_score']:.4f} | L_align {best['alignment']:.4f}"
    )
    print(f"  {'prompt':<24}{'alpha':>8}")
    for prompt in sorted(prompts, key=lambda p: -best["alpha"][p]):
        if best["alpha"][prompt] > 0:
            print(f"  {prompt:<24}{best['alpha'][prompt]:>8.3f}")


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        checked = validate(args)
    except (UsageError, InvalidValueError, IntegrityError, TaskUnavailableError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's compact status table as progress
    import ray

    from hgprompt_ray.config import ExtractionConfig
    from hgprompt_ray.tuning.search import build_tuner, prepare_statistics, restore_tuner, trials_frame
    from hgprompt_ray.workers.extract import extract

    start = time.perf_counter()
    task, records, output = checked["task"], checked["records"], checked["output"]
    prompts = [r.name for r in records]
    if start_ray(args.address, args.num_cpus, args.no_dashboard, args.dashboard_host) is None:
        return 2
    cpus = int(ray.cluster_resources().get("CPU", 1))
    max_concurrent = args.max_concurrent or max(1, cpus)
    config = ExtractionConfig(
        target=args.target,
        library=str(Path(args.prompts).expanduser()),
        prompts=tuple(prompts),
        backbone=checked["backbone"],
        img_size=checked["img_size"],
        splits=("train800", "val200"),
        num_samples=args.samples,
        gradient_samples=args.gradient_samples,
        split_seed=args.split_seed,
        sample_seed=args.seed,
        data_root=args.data_root,
        cache_dir=args.cache_dir,
    )
    output.mkdir(parents=True, exist_ok=True)
    if not args.resume:
        state = {
            "target": args.target,
            "target_name": task.info.name,
            "prompts": prompts,
            "arguments": vars(args),
            "command": "python launch/search.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        atomic_write_json(output / STATE_FILE, state)
        describe = getattr(task, "describe_splits", None)
        if describe is not None:
            atomic_write_json(output / "splits.json", describe(args.split_seed))
    logger.info(
        "extracting %s under %d prompts (cache: reruns compute nothing)", task.info.name, len(prompts)
    )
    extraction = extract(config, num_workers=args.workers, storage_path=output / "ray")
    logger.info("extraction: %s", extraction.stats)
    statistics_ref = prepare_statistics(extraction)
    stages, solver = space_module.STAGES, space_module.SOLVER
    storage = (output / "ray").resolve()
    if args.resume:
        tuner = restore_tuner(
            storage / TUNE_NAME,
            statistics_ref=statistics_ref,
            solver=solver,
            stages=stages,
            seed=args.seed,
            report_stages=args.scheduler == "asha",
        )
    else:
        tuner = build_tuner(
            statistics_ref=statistics_ref,
            space=space_module.hgprompt_space(
                prompts, tuple(args.lambda_range), args.min_prompts, checked["max_prompts"]
            ),
            searcher=space_module.optuna_searcher(args.seed),
            scheduler=space_module.asha_scheduler() if args.scheduler == "asha" else None,
            metric=space_module.METRIC,
            mode=space_module.MODE,
            num_samples=args.num_samples,
            max_concurrent=max_concurrent,
            solver=solver,
            stages=stages,
            seed=args.seed,
            storage_path=storage,
            name=TUNE_NAME,
        )
    results = tuner.fit()
    frame = trials_frame(results, prompts)
    if frame.empty or frame[space_module.METRIC].isna().all():
        print(
            f"error: no trial reported {space_module.METRIC}; see the Tune logs in {storage}", file=sys.stderr
        )
        return 1
    best = summarise(frame, prompts, space_module.METRIC, task.info.name)
    best["extraction"] = {
        "stats": extraction.stats,
        "feature_keys": extraction.feature_keys,
        "gradient_key": extraction.gradient_key,
        "samples": args.samples,
        "gradient_samples": args.gradient_samples,
        "sample_seed": args.seed,
        "split_seed": args.split_seed,
        "backbone": checked["backbone"],
        "img_size": checked["img_size"],
    }
    with atomic_path(output / "trials.parquet") as tmp:
        frame.to_parquet(tmp, index=False)
    with atomic_path(output / "trials.csv") as tmp:
        frame.to_csv(tmp, index=False)
    atomic_write_json(output / "best.json", best)
    write_plots(frame, best, prompts, output, space_module.METRIC)
    print_summary(best, prompts, space_module.METRIC, time.perf_counter() - start)
    print(f"results in {output}: best.json, trials.parquet, trials.csv, alpha.png, search_curve.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Evaluate HGPrompt against the baselines on target tasks: a report folder of tables and plots.

    python launch/evaluate.py --targets digits-parity textile --output reports/offline
    python launch/evaluate.py --leave-one-out --seeds 3 --output reports/offline-loo   # every task
    python launch/evaluate.py --report-only --output reports/offline   # rebuild the report

For every target (its own prompt is never a source): the zero-shot column (from the library's
``zero_shot/zero_shot.parquet``, computed when missing), the HGPrompt search (launch/search.py,
cached extraction), the search statistics (for the H-ensemble weights and the ablation), SPoT's
briefly tuned prompt per seed; then every (method, target, seed) transfer runs as a Ray task
under the VTAB-1k protocol with the same budget (TransferConfig). Results go to
``OUTPUT/runs/<target>/<method>/seed<k>.json`` as they finish: a rerun with the same arguments
continues where it stopped. The report (``report.md`` with the main table, the ablation, the
Spearman table, ``scaling.png``, ``tsne.png`` and per-target weight plots) is written at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from hgprompt_ray.atomic import atomic_path, atomic_write_json  # noqa: E402
from hgprompt_ray.config import TransferConfig  # noqa: E402
from hgprompt_ray.data import TaskUnavailableError, resolve_target  # noqa: E402
from hgprompt_ray.errors import IntegrityError, InvalidValueError  # noqa: E402
from hgprompt_ray.prompts import PromptLibrary  # noqa: E402
from hgprompt_ray.transfer.evaluation import (  # noqa: E402
    ABLATION_METHODS,
    METHOD_LABELS,
    METHODS,
    SCALING_METHODS,
    WEIGHT_METHODS,
    EvaluationJob,
)
from launch._ray import start_ray  # noqa: E402

logger = logging.getLogger("evaluate")
DEFAULT_LIBRARY = ROOT / "prompt_zoo" / "offline"
STATE_FILE = "evaluate.json"
STATE_SCHEMA = 1
SPEARMAN_METHODS = (
    "hgprompt",
    "h-ensemble",
    "spot-weighted",
    "h-only",
    "align-only",
    "single-best",
    "spot-best",
)
BUDGET_FIELDS = (
    "steps", "batch_size", "base_lr", "weight_decay", "warmup_fraction", "eval_points", "max_test",
    "split_seed", "spot_steps", "search_trials", "samples", "gradient_samples", "seeds", "scaling_sizes",
    "scaling_seeds",
)  # fmt: skip


class UsageError(Exception):
    """Bad input: printed as one line, exit code 2."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--targets", nargs="+", default=None, help="task names, folders or CSVs")
    which.add_argument("--leave-one-out", action="store_true", help="every source task of the library")
    parser.add_argument("--prompts", default=str(DEFAULT_LIBRARY), help="prompt library (default: the zoo)")
    parser.add_argument("--output", default="reports/evaluation", help="report folder (reruns resume)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per (method, target)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--no-ablation", action="store_true", help="skip the H-only / alignment-only runs")
    parser.add_argument(
        "--steps", type=int, default=25, help="optimiser steps per fit (same for all methods)"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--base-lr", type=float, default=0.08, help="learning rate at batch 256")
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--warmup-fraction", type=float, default=0.1)
    parser.add_argument("--eval-points", type=int, default=2, help="val200 evaluations in the train800 fit")
    parser.add_argument(
        "--max-test", type=int, default=500, help="test images (the zero-shot matrix's subset)"
    )
    parser.add_argument("--spot-steps", type=int, default=8, help="steps of SPoT's brief target tuning")
    parser.add_argument("--search-trials", type=int, default=32, help="Tune trials of each HGPrompt search")
    parser.add_argument("--samples", type=int, default=256, help="search: N samples per split")
    parser.add_argument("--gradient-samples", type=int, default=64, help="search: per-sample gradients")
    parser.add_argument("--scaling-sizes", type=int, nargs="*", default=[3, 5, 7],
                        help="source counts of the scaling curve (all sources are always a point; none: skip)")  # fmt: skip
    parser.add_argument("--scaling-targets", nargs="*", default=None, help="default: the first target")
    parser.add_argument("--scaling-seeds", type=int, default=1, help="seeds per scaling point")
    parser.add_argument("--zero-shot", default=None, help="zero-shot Parquet (default: <prompts>/zero_shot)")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--data-root", default=None)
    parser.add_argument(
        "--cache-dir", default=None, help="extraction cache (default: <cache root>/extraction)"
    )
    parser.add_argument("--cpus-per-job", type=int, default=None, help="default: min(4, cluster CPUs)")
    parser.add_argument("--gpus-per-job", type=float, default=None, help="default: 1 if the cluster has GPUs")
    parser.add_argument("--address", default=None, help="join a running cluster ('auto' or host:port)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray cluster")
    parser.add_argument("--dashboard-host", default="127.0.0.1")
    parser.add_argument("--no-dashboard", action="store_true")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from --output")
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- validation
def library_label(path: Path) -> str:
    """The library as recorded in evaluate.json: relative to the working directory when inside it
    (a committed report resumes from another clone), else absolute."""
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(resolved)


def _positive(name: str, value: int | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or value < 1:
        raise UsageError(f"--{name} must be a positive integer, but got {value}. Fix: pass e.g. --{name} 2.")


def validate(args: argparse.Namespace) -> dict[str, Any]:
    """Check everything before Ray starts; raises UsageError naming the flag and the fix."""
    output = Path(args.output).expanduser()
    if args.report_only:
        if not (output / STATE_FILE).is_file():
            raise UsageError(
                f"--report-only: {output} holds no evaluation. Fix: run without --report-only first."
            )
        return {"output": output}
    for name in ("seeds", "steps", "batch_size", "eval_points", "spot_steps", "search_trials", "samples",
                 "gradient_samples", "scaling_seeds", "max_test"):  # fmt: skip
        _positive(name.replace("_", "-"), getattr(args, name))
    _positive("cpus-per-job", args.cpus_per_job, allow_none=True)
    if args.scaling_seeds > args.seeds:
        raise UsageError(
            f"--scaling-seeds {args.scaling_seeds} exceeds --seeds {args.seeds} (the full-size point reuses the "
            "main runs). Fix: lower --scaling-seeds."
        )
    if args.eval_points > args.steps:
        raise UsageError(
            f"--eval-points {args.eval_points} exceeds --steps {args.steps}. Fix: lower --eval-points."
        )
    library_path = Path(args.prompts).expanduser()
    if not (library_path / "manifest.json").is_file():
        raise UsageError(f"--prompts {library_path} is not a prompt library (no manifest.json).")
    library = PromptLibrary(library_path)
    problems = library.verify()
    if problems:
        raise UsageError(f"prompt library {library_path} is damaged: {problems[0]}")
    records = library.records()
    configurations = {(r.backbone, r.img_size, r.num_tokens) for r in records}
    if len(configurations) != 1:
        raise UsageError(
            f"prompt library {library_path} mixes backbones/sizes/lengths {sorted(configurations)}. "
            "Fix: evaluate with a library of one backbone, image size and prompt length."
        )
    backbone, img_size, _ = configurations.pop()
    if args.leave_one_out:
        targets = sorted({r.source_task for r in records})
    elif args.targets:
        targets = list(dict.fromkeys(args.targets))
    else:
        raise UsageError("no targets. Fix: pass --targets NAME ... or --leave-one-out.")
    tasks, sources = {}, {}
    for target in targets:
        try:
            task = resolve_target(target, data_root=args.data_root)
        except (InvalidValueError, FileNotFoundError) as error:
            raise UsageError(f"--targets {target!r}: {error}") from error
        available, reason = task.availability()
        if not available:
            raise UsageError(f"target {target!r} is not available here: {reason}")
        usable = [r.name for r in records if r.source_task != task.info.name]
        if len(usable) < 2:
            raise UsageError(
                f"target {target!r} has {len(usable)} source prompt(s) once its own prompt is left out; "
                "an ensemble needs at least 2. Fix: add prompts to the library."
            )
        tasks[target], sources[target] = task, usable
    scaling_targets = targets[:1] if args.scaling_targets is None else args.scaling_targets
    unknown = [t for t in scaling_targets if t not in targets]
    if unknown:
        raise UsageError(
            f"--scaling-targets {unknown} are not among the targets {targets}. Fix: pick from them."
        )
    for target in scaling_targets:
        count = len(sources[target])
        bad = [n for n in args.scaling_sizes if not 2 <= n <= count]
        if bad:
            raise UsageError(
                f"--scaling-sizes {bad} must lie in [2, {count}] (the sources of {target!r}). Fix: drop them."
            )
    budget = {name: getattr(args, name) for name in BUDGET_FIELDS}
    state = output / STATE_FILE
    if state.is_file():
        previous = json.loads(state.read_text())
        if previous.get("budget") != budget or previous.get("library") != library_label(library_path):
            raise UsageError(
                f"--output {output} holds an evaluation with another budget or library "
                f"({previous.get('budget')}). Fix: rerun with the same settings to resume, or choose a new --output."
            )
    elif output.exists() and any(output.iterdir()):
        raise UsageError(f"--output {output} already holds other files. Fix: choose a new --output.")
    zero_shot = Path(args.zero_shot) if args.zero_shot else library_path / "zero_shot" / "zero_shot.parquet"
    return {
        "output": output,
        "library": library,
        "library_path": library_path.resolve(),
        "backbone": backbone,
        "img_size": img_size,
        "targets": targets,
        "tasks": tasks,
        "sources": sources,
        "scaling_targets": scaling_targets,
        "budget": budget,
        "zero_shot": zero_shot,
    }


# --------------------------------------------------------------------------- weights
def _zero_shot_column(
    checked: dict[str, Any], target: str, output: Path, args: argparse.Namespace
) -> pd.Series:
    """The target's zero-shot accuracy per source: from the matrix, else computed (a Ray task)."""
    import ray

    name = checked["tasks"][target].info.name
    sources = checked["sources"][target]
    frames = []
    if checked["zero_shot"].is_file():
        frames.append(pd.read_parquet(checked["zero_shot"]))
    parts = checked["zero_shot"].parent / "parts"
    if parts.is_dir():
        frames += [pd.read_parquet(p) for p in sorted(parts.glob("*.parquet"))]
    local = output / "zero_shot" / f"{name}.parquet"
    if local.is_file():
        frames.append(pd.read_parquet(local))
    for frame in frames:
        column = frame[(frame["target"] == name) & (frame["num_test"] == _num_test(checked, target, args))]
        column = column.drop_duplicates("source").set_index("source")["test_accuracy"]
        if set(sources) <= set(column.index):
            return column
    logger.info("zero-shot column of %s missing: computing it (%d sources)", name, len(sources))
    task = ray.remote(num_cpus=_cpus(args), num_gpus=_gpus(args))(_zero_shot_task)
    rows = ray.get(task.remote(str(checked["library_path"]), sources, target, checked["backbone"],
                               checked["img_size"], args.split_seed, args.max_test, args.data_root))  # fmt: skip
    local.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    with atomic_path(local) as tmp:
        frame.to_parquet(tmp, index=False)
    return frame.set_index("source")["test_accuracy"]


def _num_test(checked: dict[str, Any], target: str, args: argparse.Namespace) -> int:
    task = checked["tasks"][target]
    size = len(task.split("test", seed=args.split_seed))
    return min(size, args.max_test)


def _zero_shot_task(library: str, sources: list[str], target: str, backbone: str, img_size: int,
                    split_seed: int, max_test: int, data_root: str | None) -> list[dict[str, Any]]:  # fmt: skip
    from hgprompt_ray.models import PromptedViT, load_backbone
    from hgprompt_ray.transfer.zero_shot import zero_shot_target

    model_backbone = load_backbone(backbone, img_size)
    prompts = PromptLibrary(library).load_many(sources, backbone=backbone, embed_dim=model_backbone.embed_dim)
    model = PromptedViT(model_backbone, num_prompt_tokens=prompts.shape[1]).eval()
    return zero_shot_target(model, prompts, sources, target, img_size=img_size, split_seed=split_seed,
                            max_test=max_test, data_root=data_root, progress=False)  # fmt: skip


def _search(
    checked: dict[str, Any], target: str, sources: list[str], folder: Path, args: argparse.Namespace
) -> dict:
    """HGPrompt's best ensemble over ``sources`` (runs launch/search.py in this process; resumable)."""
    from launch import search as search_command

    best = folder / "best.json"
    if not best.is_file():
        argv = ["--target", target, "--prompts", str(checked["library_path"]), "--output", str(folder),
                "--num-samples", str(args.search_trials), "--samples", str(args.samples),
                "--gradient-samples", str(args.gradient_samples), "--split-seed", str(args.split_seed),
                "--sources", *sources]  # fmt: skip
        if args.data_root:
            argv += ["--data-root", args.data_root]
        if args.cache_dir:
            argv += ["--cache-dir", args.cache_dir]
        if (folder / search_command.STATE_FILE).is_file():
            argv.append("--resume")
        code = search_command.main(argv)
        if code != 0 or not best.is_file():
            raise RuntimeError(f"the HGPrompt search for {target!r} failed (exit {code}); see {folder}")
    return json.loads(best.read_text())


def _statistics(
    checked: dict[str, Any], target: str, sources: list[str], folder: Path, args: argparse.Namespace
):
    """The search's statistics (extraction served from the cache the search filled)."""
    import ray

    from hgprompt_ray.config import ExtractionConfig
    from hgprompt_ray.tuning.search import prepare_statistics
    from hgprompt_ray.workers.extract import extract

    config = ExtractionConfig(
        target=target,
        library=str(checked["library_path"]),
        prompts=tuple(sources),
        backbone=checked["backbone"],
        img_size=checked["img_size"],
        splits=("train800", "val200"),
        num_samples=args.samples,
        gradient_samples=args.gradient_samples,
        split_seed=args.split_seed,
        sample_seed=0,
        data_root=args.data_root,
        cache_dir=args.cache_dir,
    )
    extraction = extract(config, num_workers=1, storage_path=folder / "ray", progress=False)
    return ray.get(prepare_statistics(extraction))


def _spot_prompts(checked: dict[str, Any], target: str, seeds: list[int], output: Path,
                  transfer: dict[str, Any], args: argparse.Namespace) -> dict[int, Any]:  # fmt: skip
    """SPoT's briefly tuned target prompt per seed (Ray tasks; cached as safetensors)."""
    import ray
    from safetensors.torch import load_file, save_file

    from hgprompt_ray.transfer.evaluation import brief_tune_task

    folder = output / "spot" / checked["tasks"][target].info.name
    folder.mkdir(parents=True, exist_ok=True)
    tokens = int(checked["library"].record(checked["sources"][target][0]).num_tokens)
    task = ray.remote(num_cpus=_cpus(args), num_gpus=_gpus(args))(brief_tune_task)
    pending = {s: task.remote({**transfer, "task": target}, s, tokens, args.spot_steps)
               for s in seeds if not (folder / f"seed{s}.safetensors").is_file()}  # fmt: skip
    for seed, ref in pending.items():
        with atomic_path(folder / f"seed{seed}.safetensors") as tmp:
            save_file({"prompt": ray.get(ref).contiguous()}, str(tmp))
    return {s: load_file(str(folder / f"seed{s}.safetensors"))["prompt"] for s in seeds}


def target_weights(checked: dict[str, Any], target: str, output: Path, transfer: dict[str, Any],
                   args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    """Every weight-based method's alpha for one target (and the scaling subsets); cached as JSON."""
    from hgprompt_ray.core.simplex import h_score_weights, uniform_weights
    from hgprompt_ray.transfer.weights import (
        alignment_only_weights,
        h_only_weights,
        single_best_weights,
        spot_similarities,
        spot_weights,
    )

    name = checked["tasks"][target].info.name
    path = output / "weights" / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    sources = checked["sources"][target]
    seeds = list(range(args.seeds))
    zero_shot = _zero_shot_column(checked, target, output, args)
    best = _search(checked, target, sources, output / "searches" / name, args)
    statistics = _statistics(checked, target, sources, output / "searches" / name, args)
    spot = _spot_prompts(
        checked, target, sorted(set(seeds) | set(range(args.scaling_seeds))), output, transfer, args
    )
    prompts = checked["library"].load_many(sources, backbone=checked["backbone"])
    similarities = {s: spot_similarities(p, prompts) for s, p in spot.items()}
    methods = {
        "average": uniform_weights(len(sources)).tolist(),
        "single-best": single_best_weights(sources, zero_shot.to_dict()).tolist(),
        "h-ensemble": h_score_weights(statistics.source_h_scores).tolist(),
        "hgprompt": [best["alpha"][s] for s in sources],
        "h-only": h_only_weights(statistics).tolist(),
        "align-only": alignment_only_weights(statistics).tolist(),
        "spot-best": spot_weights(similarities[0], best=True).tolist(),
        "spot-weighted": spot_weights(similarities[0], best=False).tolist(),
    }
    entry: dict[str, Any] = {
        "target": name,
        "sources": sources,
        "methods": methods,
        "per_seed": {
            "spot-best": {str(s): spot_weights(v, best=True).tolist() for s, v in similarities.items()},
            "spot-weighted": {str(s): spot_weights(v, best=False).tolist() for s, v in similarities.items()},
        },
        "spot_similarities": {str(s): v.tolist() for s, v in similarities.items()},
        "source_h_scores": statistics.source_h_scores.tolist(),
        "zero_shot": {s: float(zero_shot[s]) for s in sources},
        "search": {k: best[k] for k in ("lambda", "num_prompts", "subset", "val_h_score", "trials")},
        "scaling": {},
    }
    if target in checked["scaling_targets"]:
        order = [sources[i] for i in np.random.default_rng(0).permutation(len(sources))]
        for size in sorted(set(args.scaling_sizes) - {len(sources)}):
            subset = sorted(order[:size], key=sources.index)
            index = [sources.index(s) for s in subset]
            found = _search(checked, target, subset, output / "searches" / f"{name}@{size}", args)
            entry["scaling"][str(size)] = {
                "sources": subset,
                "hgprompt": [found["alpha"][s] for s in subset],
                "average": uniform_weights(size).tolist(),
                "spot-best": {
                    str(s): spot_weights(v[index], best=True).tolist() for s, v in similarities.items()
                },
            }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, entry)
    return entry


# --------------------------------------------------------------------------- jobs
def build_jobs(
    checked: dict[str, Any], weights: dict[str, dict[str, Any]], args: argparse.Namespace
) -> list[EvaluationJob]:
    jobs = []
    methods = list(args.methods) + ([] if args.no_ablation else list(ABLATION_METHODS))
    for target in checked["targets"]:
        entry = weights[target]
        name, sources = entry["target"], entry["sources"]
        for seed in range(args.seeds):
            for method in methods:
                alpha = None
                if method in entry["per_seed"]:
                    alpha = entry["per_seed"][method][str(seed)]
                elif method in WEIGHT_METHODS:
                    alpha = entry["methods"][method]
                jobs.append(EvaluationJob(target, name, method, seed, tuple(sources), alpha))
        for size, point in entry["scaling"].items():
            for seed in range(args.scaling_seeds):
                for method in SCALING_METHODS:
                    alpha = point[method][str(seed)] if method == "spot-best" else point[method]
                    jobs.append(
                        EvaluationJob(target, name, method, seed, tuple(point["sources"]), alpha, int(size))
                    )
    return jobs


def _cpus(args: argparse.Namespace) -> int:
    import ray

    total = int(ray.cluster_resources().get("CPU", 1))
    return min(args.cpus_per_job or min(4, total), total)


def _gpus(args: argparse.Namespace) -> float:
    import ray

    if args.gpus_per_job is not None:
        return args.gpus_per_job
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


def run_jobs(jobs: list[EvaluationJob], output: Path, transfer: dict[str, Any], library: str,
             args: argparse.Namespace) -> int:  # fmt: skip
    """Submit the unfinished jobs as Ray tasks; write each result as it arrives. Returns runs done."""
    from dataclasses import asdict

    import ray
    from tqdm.auto import tqdm

    from hgprompt_ray.transfer.evaluation import run_job, write_result

    todo = [j for j in jobs if not (output / "runs" / f"{j.key}.json").is_file()]
    logger.info("%d runs, %d done before, %d to go", len(jobs), len(jobs) - len(todo), len(todo))
    if not todo:
        return 0
    task = ray.remote(num_cpus=_cpus(args), num_gpus=_gpus(args), max_retries=1)(run_job)
    pending = {task.remote(asdict(j), transfer, library): j for j in todo}
    failures = []
    with tqdm(total=len(todo), desc="transfer runs", unit="run") as bar:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(done[0])
            try:
                outcome = ray.get(done[0])
            except ray.exceptions.RayError as error:
                failures.append((job.key, error))
                logger.error("run %s failed: %s", job.key, error)
            else:
                write_result(output, job, outcome, transfer)
                bar.set_postfix_str(f"{job.key} {outcome['metrics']['test_accuracy']:.3f}")
            bar.update(1)
    if failures:
        raise RuntimeError(
            f"{len(failures)} runs failed (first: {failures[0][0]}: {failures[0][1]}); rerun to retry"
        )
    return len(todo)


# --------------------------------------------------------------------------- report
def write_report(output: Path, state: dict[str, Any], args: argparse.Namespace | None = None) -> Path:
    from hgprompt_ray.transfer import report

    frame = report.load_results(output)
    weights = {p.stem: json.loads(p.read_text()) for p in sorted((output / "weights").glob("*.json"))}
    with atomic_path(output / "results.csv") as tmp:
        frame.to_csv(tmp, index=False)
    display, means = report.main_table(frame)
    with atomic_path(output / "main_table.csv") as tmp:
        display.to_csv(tmp)
    ablation = report.ablation_table(frame)
    with atomic_path(output / "ablation.csv") as tmp:
        ablation.to_csv(tmp)
    zero_shot = pd.DataFrame(
        [
            {"source": s, "target": t, "test_accuracy": a}
            for t, e in weights.items()
            for s, a in e["zero_shot"].items()
        ]
    )
    spearman = report.spearman_table(weights, zero_shot, SPEARMAN_METHODS)
    with atomic_path(output / "spearman.csv") as tmp:
        spearman.to_csv(tmp)
    scaling_frame = frame[frame["target"].isin(state.get("scaling_target_names", []))]
    sections = []
    if not scaling_frame.empty and scaling_frame["scale"].nunique() > 1:
        summary = report.write_scaling_plot(scaling_frame[scaling_frame["seed"] < state["scaling_seeds"]],
                                            SCALING_METHODS, output / "scaling.png")  # fmt: skip
        with atomic_path(output / "scaling.csv") as tmp:
            summary.to_csv(tmp, index=False)
        table = summary.pivot_table(index="scale", columns="method", values="mean")
        table.columns = [METHOD_LABELS[m] for m in table.columns]
        sections.append("## Scaling with the number of sources\n\n![scaling](scaling.png)\n\n"
                        "Test top-1 (fraction) per number of sources (subsets: a seeded random order of the "
                        "sources, first n; SPoT-best and Average over the same subset):\n\n"
                        + report.markdown(table))  # fmt: skip
    for name, entry in weights.items():
        report.write_weights_plot(entry, ["hgprompt", "h-ensemble", "h-only", "align-only", "spot-weighted",
                                          "single-best"], output / f"weights_{name}.png", f"source weights, target {name}")  # fmt: skip
    if (output / "tsne.png").is_file():
        sections.append("## t-SNE of target test features\n\n![t-SNE](tsne.png)\n\n"
                        "Test features of the first target under the tuned prompts (seed 0) of HGPrompt and "
                        "Average, coloured by class.")  # fmt: skip
    losses = report.baselines_beating(means)
    if losses:
        lines = [
            f"- {t}: {METHOD_LABELS[m]} {100 * o:.1f} vs HGPrompt {100 * h:.1f}" for t, m, o, h in losses
        ]
        verdict = (
            "HGPrompt does **not** beat these baselines (mean over seeds, test top-1 %):\n\n"
            + "\n".join(lines)
        )
    else:
        verdict = "HGPrompt has the best mean on every target of this report."
    budget = state["budget"]
    text = f"""# Evaluation report

Produced by:

    {state["command"]}

Library `{state["library"]}` ({state["backbone"]}, {state["img_size"]} px); targets {", ".join(state["target_names"])};
{state["seeds"]} seeds; wall time {state.get("seconds", float("nan")) / 60:.1f} min for the runs of the last invocation.

Protocol (VTAB-1k, the same budget for every method): tune on train800 for {budget["steps"]} AdamW steps
(batch {budget["batch_size"]}, lr {budget["base_lr"]} x batch/256, warmup {budget["warmup_fraction"]}, cosine),
score val200 after every {budget["steps"] // budget["eval_points"]} steps, retrain on train800val200 for the
best step count, report top-1 on {budget["max_test"]} test images at most (the zero-shot matrix's subset).
HGPrompt: {budget["search_trials"]} Tune trials over lambda, M and the subset, on {budget["samples"]} samples
and {budget["gradient_samples"]} gradient samples. SPoT's target prompt: {budget["spot_steps"]} steps from VPT's init.

## Main table (test top-1 %, mean ± std over seeds)

{report.markdown(display)}

## Where HGPrompt does not win

{verdict}

## Ablation (initial-prompt weights; test top-1 %)

{report.markdown(ablation)}

## Spearman correlation of source weights with zero-shot transfer accuracy

Per target, Spearman's rho between a method's weights over the sources and each source's zero-shot
accuracy on the target (`zero_shot` in `weights/<target>.json`); "-" where the weights or the
zero-shot accuracies are constant (rho undefined).

{report.markdown(spearman, ".2f") if not spearman.empty else "(no zero-shot column)"}

{chr(10).join(chr(10) + s + chr(10) for s in sections)}
## Files

`results.csv` (one row per run), `main_table.csv`, `ablation.csv`, `spearman.csv`, `scaling.csv`,
`weights/<target>.json` (every method's alpha, SPoT similarities, source H-scores, zero-shot column),
`weights_<target>.png`, `runs/<target>/<method>/seed<k>.json` (+ `.safetensors`: the tuned prompt),
`searches/<target>/` (the HGPrompt search: best.json, trials, alpha.png).
"""
    with atomic_path(output / "report.md") as tmp:
        Path(tmp).write_text(text)
    print(display.to_string())
    return output / "report.md"


def write_tsne(output: Path, weights: dict[str, Any], first: str, transfer: dict[str, Any], args) -> None:
    import ray
    from safetensors.torch import load_file

    from hgprompt_ray.transfer import report
    from hgprompt_ray.transfer.evaluation import features_task

    name = weights[first]["target"]
    prompts = {}
    for method in ("hgprompt", "average"):
        path = output / "runs" / name / method / "seed0.safetensors"
        if path.is_file():
            prompts[METHOD_LABELS[method]] = load_file(str(path))["prompt"]
    if len(prompts) < 2:
        return
    task = ray.remote(num_cpus=_cpus(args), num_gpus=_gpus(args))(features_task)
    found = ray.get(task.remote({**transfer, "task": first}, prompts))
    report.write_tsne_plot(dict(zip(found["names"], found["features"])), found["labels"], output / "tsne.png")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        checked = validate(args)
    except (UsageError, InvalidValueError, IntegrityError, TaskUnavailableError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    output = checked["output"]
    if args.report_only:
        state = json.loads((output / STATE_FILE).read_text())
        print(f"wrote {write_report(output, state)}")
        return 0
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

    start = time.perf_counter()
    if start_ray(args.address, args.num_cpus, args.no_dashboard, args.dashboard_host) is None:
        return 2
    transfer = {
        "task": "placeholder",
        "backbone": checked["backbone"],
        "img_size": checked["img_size"],
        "steps": args.steps,
        "batch_size": args.batch_size,
        "base_lr": args.base_lr,
        "weight_decay": args.weight_decay,
        "warmup_fraction": args.warmup_fraction,
        "eval_points": args.eval_points,
        "max_test": args.max_test,
        "split_seed": args.split_seed,
        "data_root": args.data_root,
    }
    TransferConfig(**transfer)  # validates the budget before anything runs
    output.mkdir(parents=True, exist_ok=True)
    state = {
        "schema_version": STATE_SCHEMA,
        "command": "python launch/evaluate.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "library": library_label(checked["library_path"]),
        "backbone": checked["backbone"],
        "img_size": checked["img_size"],
        "targets": checked["targets"],
        "target_names": [checked["tasks"][t].info.name for t in checked["targets"]],
        "scaling_targets": checked["scaling_targets"],
        "scaling_target_names": [checked["tasks"][t].info.name for t in checked["scaling_targets"]],
        "scaling_seeds": args.scaling_seeds,
        "seeds": args.seeds,
        "budget": checked["budget"],
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if (output / STATE_FILE).is_file():
        state["started"] = json.loads((output / STATE_FILE).read_text()).get("started", state["started"])
    atomic_write_json(output / STATE_FILE, state)
    weights = {t: target_weights(checked, t, output, transfer, args) for t in checked["targets"]}
    jobs = build_jobs(checked, weights, args)
    ran = run_jobs(jobs, output, transfer, str(checked["library_path"]), args)
    if not (output / "tsne.png").is_file() or ran:
        write_tsne(output, weights, checked["targets"][0], transfer, args)
    state["seconds"] = time.perf_counter() - start
    state["runs"] = len(jobs)
    atomic_write_json(output / STATE_FILE, state)
    print(f"wrote {write_report(output, state, args)} ({ran} runs this time, {len(jobs)} in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

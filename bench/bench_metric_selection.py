"""Does the search select? Which trial metric tracks transfer? One table, committed with its command.

    python bench/bench_metric_selection.py                       # count, dsprites-scale, dsprites-location
    python bench/bench_metric_selection.py --smoke-test          # one target, tiny sizes

Per target (its sources: the zoo without any prompt trained on the target's own image set):

1. Three searches of ``--trials`` trials each on the same sources and statistics: TPE maximising
   ``val_probe_accuracy`` (the product's default), TPE maximising ``val_h_score`` (the old
   metric), and Optuna's RandomSampler (``--report-test``: every trial also reports its probe's
   test accuracy — a diagnostic, never a selection criterion).
2. Metric check: over the random-search trials (an unbiased sample of the space), Spearman's rho
   between each metric and the test accuracy of the probe on the combined prompt P0's features.
3. Selection check: the combined prompt P0 of each search's best trial and of Average (uniform
   alpha over the same sources), each scored by a probe fitted on ``--eval-train`` train800
   images and tested on ``--max-test`` test images, for split seeds 0..``--seeds``-1 (paired:
   the same images for every method). The weights were chosen on split seed 0's train800/val200
   only. Test is split seed 0's, which on a pool task (the offline suite) is what that draw leaves
   over: it is disjoint from seed 0's train800/val200 but not from the other seeds' (on count
   about 400 of the 1,000 test images are in each other seed's train800), so seeds > 0 are not
   clean test accuracies. ``launch/evaluate.py --protocol init-probe`` measures this properly.

Results: ``OUTPUT/<target>.json`` (resumable per target) and ``OUTPUT/metric_selection.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import ray
import torch
from scipy import stats

from hgprompt_ray.atomic import atomic_path, atomic_write_json
from hgprompt_ray.core import fit_probe_head
from hgprompt_ray.core.ensemble_weights import EnsembleWeights
from hgprompt_ray.data import backbone_transform, related_tasks, resolve_target
from hgprompt_ray.models import PromptedViT, load_backbone
from hgprompt_ray.paths import DEFAULT_LIBRARY
from hgprompt_ray.prompts import PromptLibrary
from hgprompt_ray.transfer.weights import ensemble_prompt
from hgprompt_ray.tuning import SearchSpec, run_search

SEARCHES = {  # name -> (sampler, metric)
    "hgprompt (TPE, val-probe)": ("tpe", "val-probe"),
    "hgprompt (TPE, val-h)": ("tpe", "val-h"),
    "random search (val-probe)": ("random", "val-probe"),
}


def sources_for(target: str, library: PromptLibrary) -> list[str]:
    related = {target, *related_tasks(target)}  # the data registry's image sets
    return [r.name for r in library.records() if r.source_task not in related]


@torch.inference_mode()
def _features(model: PromptedViT, dataset, positions, prompt: torch.Tensor) -> np.ndarray:
    chunks = []
    for start in range(0, len(positions), 64):
        images = torch.stack([dataset[int(i)][0] for i in positions[start : start + 64]])
        chunks.append(model.forward_features(images, prompt[None])[0].double())
    return torch.cat(chunks).numpy()


def evaluate_prompts(target: str, prompts: dict[str, torch.Tensor], args: argparse.Namespace) -> pd.DataFrame:
    """Test accuracy of a probe per (prompt, split seed): paired over the same images."""
    backbone = load_backbone("dinov2-s-imgfocus", 112)
    model = PromptedViT(backbone, next(iter(prompts.values())).shape[0]).eval()
    transform = backbone_transform(112, backbone.pretrained_cfg["mean"], backbone.pretrained_cfg["std"])
    task = resolve_target(target)
    test = task.split("test", seed=0, transform=transform)
    test_pos = np.sort(
        np.random.default_rng(0).choice(len(test), min(args.max_test, len(test)), replace=False)
    )
    rows = []
    for name, prompt in prompts.items():
        test_features = _features(model, test, test_pos, prompt)
        for seed in range(args.seeds):
            train = task.split("train800", seed=seed, transform=transform)
            pos = np.sort(
                np.random.default_rng(seed).choice(
                    len(train), min(args.eval_train, len(train)), replace=False
                )
            )
            head = fit_probe_head(
                _features(model, train, pos, prompt), train.labels[pos], task.info.num_classes
            )
            weight, bias = head.folded(torch.float64)
            predicted = (torch.from_numpy(test_features) @ weight.T + bias).argmax(1).numpy()
            rows.append(
                {
                    "method": name,
                    "seed": seed,
                    "test_accuracy": float((predicted == test.labels[test_pos]).mean()),
                }
            )
    return pd.DataFrame(rows)


def run_target(target: str, args: argparse.Namespace, output: Path) -> dict:
    library = PromptLibrary(DEFAULT_LIBRARY)
    sources = sources_for(target, library)
    start = time.perf_counter()
    found = {}
    for name, (sampler, metric) in SEARCHES.items():
        spec = SearchSpec(
            target=target, sources=tuple(sources), num_samples=args.trials, samples=args.samples,
            gradient_samples=args.gradient_samples, sampler=sampler, metric=metric,
            report_test=args.max_test if sampler == "random" else 0,
            output=str(output / "searches" / target / f"{sampler}-{metric}"),
        )  # fmt: skip
        found[name] = run_search(spec, progress=False)
    trials = found["random search (val-probe)"].trials
    spearman = {
        metric: float(stats.spearmanr(trials[metric], trials["test_probe_accuracy"]).statistic)
        for metric in ("val_probe_accuracy", "val_h_score")
    }
    prompts_all = library.load_many(sources)
    chosen = {name: result.weights for name, result in found.items()}
    chosen["Average"] = EnsembleWeights.uniform(sources)
    prompts = {name: ensemble_prompt(prompts_all, w.aligned(sources)) for name, w in chosen.items()}
    scores = evaluate_prompts(target, prompts, args)
    record = {
        "target": target,
        "sources": sources,
        "trials": args.trials,
        "spearman_random_trials": spearman,
        "weights": {name: w.to_json() for name, w in chosen.items()},
        "best": {
            name: {k: r.best[k] for k in ("lambda", "num_prompts", "metric")} for name, r in found.items()
        },
        "scores": scores.to_dict("records"),
        "seconds": time.perf_counter() - start,
    }
    atomic_write_json(output / f"{target}.json", record)
    return record


def table(records: list[dict], args: argparse.Namespace, command: str) -> str:
    lines = [
        "# Does the search select? Which trial metric tracks transfer?",
        "",
        f"Produced by `{command}` (offline zoo, dinov2-s-imgfocus at 112 px, CPU).",
        f"Searches: {args.trials} trials each, N = {args.samples} samples per split, {args.gradient_samples} "
        f"gradient samples. Evaluation: probe on {args.eval_train} train800 images of split seeds "
        f"0..{args.seeds - 1}, {args.max_test} test images; mean ± sd over seeds; paired differences with "
        "a paired t-test.",
        "",
        "## Spearman rho of each trial metric with the probe's test accuracy (random-search trials)",
        "",
        "| target | val_probe_accuracy | val_h_score |",
        "|---|---|---|",
    ]
    for r in records:
        s = r["spearman_random_trials"]
        lines.append(f"| {r['target']} | {s['val_probe_accuracy']:.2f} | {s['val_h_score']:.2f} |")
    lines += ["", "## Test top-1 % of the chosen initial prompt P0", ""]
    methods = list(SEARCHES) + ["Average"]
    lines += ["| target | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for r in records:
        frame = pd.DataFrame(r["scores"])
        cells = []
        for m in methods:
            v = frame[frame["method"] == m]["test_accuracy"] * 100
            cells.append(f"{v.mean():.1f} ± {v.std(ddof=1):.1f}")
        lines.append(f"| {r['target']} | " + " | ".join(cells) + " |")
    lines += ["", "## Paired differences, HGPrompt (TPE, val-probe) minus the other (points)", ""]
    lines += [
        "| target | vs | mean diff | 95% CI | paired t p | wins/ties/losses |",
        "|---|---|---|---|---|---|",
    ]
    ours = "hgprompt (TPE, val-probe)"
    for r in records:
        frame = pd.DataFrame(r["scores"]).pivot(index="seed", columns="method", values="test_accuracy") * 100
        for other in [m for m in methods if m != ours]:
            diff = frame[ours] - frame[other]
            half = (
                stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))
                if len(diff) > 1
                else np.nan
            )
            p = stats.ttest_rel(frame[ours], frame[other]).pvalue if diff.abs().sum() > 0 else 1.0
            wins, ties = int((diff > 0).sum()), int((diff == 0).sum())
            lines.append(
                f"| {r['target']} | {other} | {diff.mean():+.2f} | [{diff.mean() - half:+.2f}, {diff.mean() + half:+.2f}] "
                f"| {p:.3f} | {wins}/{ties}/{len(diff) - wins - ties} |"
            )
    lines += ["", "Chosen settings (best trial): " + "; ".join(
        f"{r['target']}: " + ", ".join(f"{n}: lambda {b['lambda']:.3g}, M {b['num_prompts']}" for n, b in r["best"].items())
        for r in records)]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--targets", nargs="+", default=["count", "dsprites-scale", "dsprites-location"])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--gradient-samples", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--eval-train", type=int, default=256)
    parser.add_argument("--max-test", type=int, default=300)
    parser.add_argument("--output", default="bench/results/metric_selection")
    parser.add_argument("--smoke-test", action="store_true")
    args = parser.parse_args()
    if args.smoke_test:
        args.targets, args.trials, args.samples, args.gradient_samples = ["count"], 4, 32, 8
        args.seeds, args.eval_train, args.max_test, args.output = 2, 32, 32, "/tmp/metric_selection_smoke"
    command = "python bench/bench_metric_selection.py" + (" --smoke-test" if args.smoke_test else "")
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # no Tune status boxes: one result table
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    records = []
    for target in args.targets:
        path = output / f"{target}.json"
        records.append(json.loads(path.read_text()) if path.is_file() else run_target(target, args, output))
        print(f"{target}: done ({records[-1]['seconds']:.0f} s)", flush=True)
    text = table(records, args, command)
    with atomic_path(output / "metric_selection.md") as tmp:
        Path(tmp).write_text(text)
    print(text)


if __name__ == "__main__":
    main()

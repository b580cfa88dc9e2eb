"""The linear probe's fits with one BLAS thread (``transfer.linear_probe``) against BLAS's default.

The probe is the init-probe protocol's and the zero-shot matrix's: standardise on train800, fit a
logistic regression for each C in ``PROBE_GRID``, keep the best on val200, score test. Its
matrices are small, so a threaded BLAS may cost more than it computes. This bench extracts one
target's features under one prompt of the library (once, not timed), then times the probe both
ways, alternating, ``--repeats`` times, and prints the medians and their ratio measured in the
same run (this machine is shared and noisy). Both ways must choose the same C and score the same
accuracies; the table says whether they did.

Usage:
  python bench/bench_probe_threads.py                          # count, the v2 zoo's digits prompt
  python bench/bench_probe_threads.py --target dsprites-scale --repeats 5
  python bench/bench_probe_threads.py --smoke-test                  # 100 test images, one repeat
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_info

from hgprompt_ray.models import OFFLINE_BACKBONE, OFFLINE_IMG_SIZE, PromptedViT, load_backbone
from hgprompt_ray.models.features import extract_cls_features
from hgprompt_ray.models.precision import autocast
from hgprompt_ray.paths import DEFAULT_LIBRARY
from hgprompt_ray.prompts import PromptLibrary
from hgprompt_ray.transfer import PROBE_GRID, linear_probe
from hgprompt_ray.transfer.splits import load_transfer_splits

SPLITS = ("train800", "val200", "test")


def default_threads_probe(train, val, test):
    """The probe as it was: the same fits under BLAS's default thread count."""
    scaler = StandardScaler().fit(train[0])
    xs = [scaler.transform(x) for x, _ in (train, val, test)]
    scored = []
    for c in PROBE_GRID:
        model = LogisticRegression(C=c, max_iter=3000).fit(xs[0], train[1])
        scored.append((model.score(xs[1], val[1]), c, model))
    val_accuracy, c, model = max(scored, key=lambda item: item[0])
    return float(model.score(xs[2], test[1])), float(val_accuracy), float(c)


def features(target: str, library: str, prompt: str, max_test: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    backbone = load_backbone(OFFLINE_BACKBONE, OFFLINE_IMG_SIZE)
    prompts = PromptLibrary(library).load_many([prompt], backbone=OFFLINE_BACKBONE, embed_dim=backbone.embed_dim)
    model = PromptedViT(backbone, num_prompt_tokens=prompts.shape[1]).eval()
    config = backbone.pretrained_cfg
    _, datasets, labels = load_transfer_splits(target, img_size=OFFLINE_IMG_SIZE, mean=config["mean"],
                                               std=config["std"], max_test=max_test, splits=SPLITS)  # fmt: skip
    with torch.inference_mode(), autocast("auto"):
        return {s: (np.asarray(extract_cls_features(model, datasets[s], prompts=prompts, batch_size=64)[0],
                               dtype=np.float64), labels[s]) for s in SPLITS}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="count")
    parser.add_argument("--library", default=str(Path(DEFAULT_LIBRARY).parent / "offline-v2"))
    parser.add_argument("--prompt", default="digits")
    parser.add_argument("--max-test", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke-test", action="store_true", help="100 test images, one repeat")
    args = parser.parse_args()
    if args.smoke_test:
        args.max_test, args.repeats = 100, 1
    data = features(args.target, args.library, args.prompt, args.max_test)
    threads = max((pool["num_threads"] for pool in threadpool_info()), default=1)
    times: dict[str, list[float]] = {"one BLAS thread (linear_probe)": [], f"BLAS default ({threads} threads)": []}
    results = {}
    for _ in range(args.repeats):
        for label, run in zip(times, (lambda: linear_probe(*data.values()), lambda: default_threads_probe(*data.values()))):
            start = time.perf_counter()
            outcome = run()
            times[label].append(time.perf_counter() - start)
            results[label] = tuple(round(float(v), 4) for v in outcome)
    base = statistics.median(times[f"BLAS default ({threads} threads)"])
    print(f"\nlinear probe on {args.target} features under prompt {args.prompt!r} ({len(data['train800'][1])} train, "
          f"{len(PROBE_GRID)} C values), median of {args.repeats}, {torch.get_num_threads()} torch threads")  # fmt: skip
    print("| probe | seconds | speed-up vs BLAS default | (test, val, C) |")
    print("|---|---|---|---|")
    for label, values in times.items():
        median = statistics.median(values)
        print(f"| {label} | {median:.2f} | {base / median:.1f}x | {results[label]} |")
    same = len(set(results.values())) == 1
    print(f"\nthe same choice and accuracies both ways: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()

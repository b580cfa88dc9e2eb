"""Linear probe per offline task: offline-backbone CLS features vs raw pixels.

For each available offline task: logistic regression trained on train800, its inverse
regularisation C chosen on val200 from {0.01, 0.1, 1, 10} (the same grid for both inputs),
accuracy on test (at most ``--max-test`` images, a seeded subset, when the test split is
larger). Inputs: (a) the frozen offline backbone's CLS feature at the offline image size,
(b) the image resized to 32 x 32 RGB, flattened. Both standardised. Prints one table; the
backbone should beat pixels on most tasks.

Usage:
  python bench/bench_linear_probe.py                    # every available offline task
  python bench/bench_linear_probe.py --tasks digits count --smoke-test
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch.utils.data import Subset

from hgprompt_ray.data import backbone_transform, get_task, list_tasks
from hgprompt_ray.models import OFFLINE_BACKBONE, OFFLINE_IMG_SIZE, PromptedViT, load_backbone
from hgprompt_ray.models.features import extract_cls_features
from hgprompt_ray.transfer import PROBE_GRID, linear_probe

GRID = PROBE_GRID


def probe(train, val, test) -> tuple[float, float]:
    result = linear_probe(train, val, test, GRID)
    return result.test_accuracy, result.c


def pixels(split, size: int = 32) -> np.ndarray:
    return np.stack(
        [np.asarray(split.image(i).resize((size, size)), dtype=np.float32).ravel() for i in range(len(split))]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="*", default=None)
    parser.add_argument("--img-size", type=int, default=OFFLINE_IMG_SIZE)
    parser.add_argument("--max-test", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--json", default=None)
    parser.add_argument("--smoke-test", action="store_true", help="tiny test subsets")
    args = parser.parse_args()
    if args.smoke_test:
        args.max_test = 100
    backbone = load_backbone(OFFLINE_BACKBONE, args.img_size)
    model = PromptedViT(backbone, num_prompt_tokens=0).eval()
    transform = backbone_transform(
        args.img_size, backbone.pretrained_cfg["mean"], backbone.pretrained_cfg["std"]
    )
    rows = []
    for name in args.tasks or list_tasks("offline"):
        task = get_task(name)
        if not task.availability()[0]:
            print(f"skip {name}: {task.availability()[1]}")
            continue
        start = time.perf_counter()
        splits = {s: task.split(s, transform=transform) for s in ("train800", "val200", "test")}
        test = splits["test"]
        if len(test) > args.max_test:
            keep = np.sort(np.random.default_rng(0).choice(len(test), args.max_test, replace=False))
            test_set, test_labels = Subset(test, keep.tolist()), test.labels[keep]
            raw_test = test.with_transform(None)
            raw_pixels = np.stack(
                [np.asarray(raw_test.image(int(i)).resize((32, 32)), dtype=np.float32).ravel() for i in keep]
            )
        else:
            test_set, test_labels, raw_pixels = test, test.labels, pixels(test.with_transform(None))
        feats = {
            s: extract_cls_features(model, splits[s], batch_size=args.batch, progress=True, description=name)
            for s in ("train800", "val200")
        }
        feats["test"] = extract_cls_features(
            model, test_set, batch_size=args.batch, progress=True, description=name
        )
        labels = {
            "train800": splits["train800"].labels,
            "val200": splits["val200"].labels,
            "test": test_labels,
        }
        backbone_acc, c_backbone = probe(*[(feats[s], labels[s]) for s in ("train800", "val200", "test")])
        pix = {s: pixels(splits[s].with_transform(None)) for s in ("train800", "val200")}
        pix["test"] = raw_pixels
        pixel_acc, c_pixel = probe(*[(pix[s], labels[s]) for s in ("train800", "val200", "test")])
        rows.append(
            dict(
                task=name,
                classes=task.info.num_classes,
                test=len(test_labels),
                backbone=backbone_acc,
                pixels=pixel_acc,
                chance=float(np.bincount(test_labels).max() / len(test_labels)),
                c_backbone=c_backbone,
                c_pixels=c_pixel,
                seconds=time.perf_counter() - start,
            )
        )
    print(
        f"\nLinear probe | {OFFLINE_BACKBONE} @ {args.img_size}px CLS vs 32x32 RGB pixels | train800 -> test, "
        f"C from {list(GRID)} on val200 | {torch.get_num_threads()} threads"
    )
    header = f"{'task':<22}{'classes':>8}{'test':>6}{'majority':>10}{'pixels':>9}{'backbone':>10}{'gain':>8}"
    print(header)
    print("-" * len(header))
    for row in rows:
        gain = row["backbone"] - row["pixels"]
        print(
            f"{row['task']:<22}{row['classes']:>8}{row['test']:>6}{row['chance']:>10.3f}{row['pixels']:>9.3f}"
            f"{row['backbone']:>10.3f}{gain:>+8.3f}"
        )
    wins = sum(r["backbone"] > r["pixels"] for r in rows)
    print("-" * len(header))
    print(
        f"backbone beats pixels on {wins}/{len(rows)} tasks; mean accuracy pixels "
        f"{np.mean([r['pixels'] for r in rows]):.3f}, backbone {np.mean([r['backbone'] for r in rows]):.3f}"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()

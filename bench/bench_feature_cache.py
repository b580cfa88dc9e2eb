"""Frozen-feature methods' selection phase: every pass through the backbone vs the FeatureCache.

MLP-k and SideTune never train the backbone, so the feature of an image is the same in every
epoch, at every learning-rate scale and in the refit. ``tune_transfer`` gives their builds one
``FeatureCache`` per run; the baseline arm builds the same models with ``feature_cache=None``,
which forwards the backbone on every pass (as before the cache). Both arms run ``select_setting``
(the lr grid on train800, val200 after every epoch) in this process, one after the other, at the
same precision. The table reports the ratio of their wall times (this machine is shared and
noisy: only the ratio is meaningful) and the largest difference between their val200 curves.

Usage:
  python bench/bench_feature_cache.py --target count --method mlp --epochs 3 --lr-scales 1
  python bench/bench_feature_cache.py --smoke-test
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import pandas as pd
import torch

from hgprompt_ray.atomic import atomic_write_json
from hgprompt_ray.config import TransferConfig
from hgprompt_ray.models import load_backbone
from hgprompt_ray.models.precision import resolve_precision
from hgprompt_ray.transfer.methods import get_method
from hgprompt_ray.transfer.methods.common import BuildContext, FeatureCache
from hgprompt_ray.transfer.splits import config_splits
from hgprompt_ray.transfer.tune import select_setting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="count")
    parser.add_argument("--method", default="mlp", choices=["mlp", "sidetune"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr-scales", type=float, nargs="+", default=[1.0])
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--json", default=None)
    parser.add_argument("--smoke-test", action="store_true", help="1 epoch, capped at 5 steps")
    args = parser.parse_args()
    config = TransferConfig(task=args.target, epochs=args.epochs, lr_scales=tuple(args.lr_scales),
                            precision=args.precision)  # fmt: skip
    if args.smoke_test:
        config = dataclasses.replace(config, epochs=1, max_steps=5)
    method = get_method(args.method)
    device = torch.device("cpu")
    backbone = load_backbone(config.backbone, config.img_size)
    task, datasets, _ = config_splits(config, backbone, ("train800", "val200"))
    seconds, curves, computed = {}, {}, {}
    for arm in ("every pass", "cache"):
        cache = FeatureCache() if arm == "cache" else None
        context = BuildContext(backbone, int(task.info.num_classes), 1, config.seed, method.default_settings(),
                               feature_cache=cache)  # fmt: skip
        start = time.perf_counter()
        chosen = select_setting(lambda context=context: method.build(context), method, config, datasets["train800"],
                                datasets["val200"], device)  # fmt: skip
        seconds[arm] = time.perf_counter() - start
        curves[arm] = [accuracy for _, _, accuracy in chosen.val_curve]
        computed[arm] = cache.computed if cache is not None else None
    difference = max(abs(a - b) for a, b in zip(curves["every pass"], curves["cache"]))
    result = {
        "target": args.target, "method": args.method, "epochs": config.epochs, "max_steps": config.max_steps,
        "lr_scales": list(config.lr_scales), "precision": resolve_precision(config.precision),
        "threads": torch.get_num_threads(), "every_pass_seconds": round(seconds["every pass"], 1),
        "cache_seconds": round(seconds["cache"], 1), "speedup": round(seconds["every pass"] / seconds["cache"], 2),
        "images_through_backbone_with_cache": computed["cache"], "max_val_curve_difference": float(difference),
    }  # fmt: skip
    print(pd.DataFrame([result]).to_string(index=False))
    if args.json:
        atomic_write_json(args.json, result)


if __name__ == "__main__":
    main()

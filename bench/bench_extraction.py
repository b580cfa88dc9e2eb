"""Extraction speed: workers, per-sample gradients, and reading features from the object store.

Measures, in one run (this machine is shared and noisy, so only ratios are compared):

  (a) feature extraction throughput (images x prompts / s of compute, the slowest rank) of the
      Ray Train extraction with 2 workers x 1 CPU vs 1 worker x 1 CPU (how the prompt-sharded
      design scales; target >= 1.6), and vs 1 worker x 2 CPUs (what 2 cores give either way);
      end-to-end wall times including Ray Train's start-up are shown beside them;
  (b) per-sample gradients wrt a prompt: the batched leaf (one backward; the product's method)
      and ``torch.func`` vmap(grad) vs a Python loop over samples, all float32 (target >= 5), and
      the batched leaf under bf16 autocast; medians of interleaved rounds;
  (c) reading M feature tables from the object store (zero-copy Arrow views) vs unpickling the
      same arrays sent as a pickled blob through the object store;
  (d) on a GPU only: ViT-B/16 bf16 prompted forward, images x prompts / s and its share of the
      GPU's dense bf16 peak.

Usage:
  python bench/bench_extraction.py                 # offline zoo + backbone, CPU, a few minutes
  python bench/bench_extraction.py --smoke-test    # tiny sizes
  python bench/bench_extraction.py --json bench/results/extraction.json
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hgprompt_ray.atomic import atomic_write_json
from hgprompt_ray.config import ExtractionConfig
from hgprompt_ray.models import (
    OFFLINE_BACKBONE,
    OFFLINE_IMG_SIZE,
    PromptedViT,
    autocast,
    load_backbone,
    resolve_precision,
)
from hgprompt_ray.models.gradients import prompt_gradients
from hgprompt_ray.prompts import PromptLibrary
from hgprompt_ray.workers.extract import extract
from hgprompt_ray.workers.feature_store import FeatureStore, feature_table, features_from_table

ROOT = Path(__file__).resolve().parents[1]

ZOO = ROOT / "prompt_zoo" / "offline"
BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


def bench_workers(args: argparse.Namespace, names: list[str]) -> dict[str, dict[str, float]]:
    results = {}
    for label, workers, cpus in (
        ("1 worker x 1 CPU", 1, 1),
        ("2 workers x 1 CPU", 2, 1),
        ("1 worker x 2 CPUs", 1, 2),
    ):
        with tempfile.TemporaryDirectory() as cache:
            config = ExtractionConfig(
                target=args.target,
                library=str(ZOO),
                prompts=tuple(names),
                splits=("train800",),
                gradients=False,
                num_samples=args.samples,
                batch_size=16,
                cache_dir=cache,
                precision=args.precision,
            )
            start = time.perf_counter()
            result = extract(
                config,
                num_workers=workers,
                cpus_per_worker=cpus,
                store_name=f"bench-{workers}-{cpus}",
                storage_path=Path(cache) / "runs",
                progress=False,
            )
            wall = time.perf_counter() - start
            FeatureStore(f"bench-{workers}-{cpus}").kill()
        count = result.stats["image_prompt_forwards"]
        results[label] = {
            "compute": count / result.stats["feature_seconds"],
            "end_to_end": count / wall,
            "forwards": count,
        }
        print(f"  {label}: {results[label]}", flush=True)
    return results


def bench_gradients(args: argparse.Namespace) -> dict[str, float]:
    """Per-sample gradients of one batch: batched leaf, vmap and loop in float32 (same maths, so
    the outputs are compared), and the batched leaf under bf16 autocast (its speed)."""
    backbone = load_backbone(OFFLINE_BACKBONE, OFFLINE_IMG_SIZE)
    model = PromptedViT(backbone, 10, num_classes=0).eval()
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.gradient_batch, 3, OFFLINE_IMG_SIZE, OFFLINE_IMG_SIZE, generator=generator)
    labels = torch.randint(0, 5, (args.gradient_batch,), generator=generator)
    prompt = torch.randn(10, model.embed_dim, generator=generator) * 0.05
    weight = torch.randn(5, model.embed_dim, generator=generator) * 0.1
    with torch.no_grad():
        tokens = model.embed_patches(images)
    variants = {
        "batched": ("batched", "fp32"),
        "vmap": ("vmap", "fp32"),
        "loop": ("loop", "fp32"),
        "batched_bf16": ("batched", "bf16"),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    outputs = {}
    for method, precision in variants.values():  # warm-up
        with autocast(precision):
            prompt_gradients(model, tokens[:2], labels[:2], prompt, lambda f: f @ weight.T, method=method)
    for _ in range(args.rounds):
        for name, (method, precision) in variants.items():
            start = time.perf_counter()
            with autocast(precision):
                outputs[name] = prompt_gradients(
                    model, tokens, labels, prompt, lambda f: f @ weight.T, method=method
                )
            times[name].append(time.perf_counter() - start)
    scale = float(outputs["loop"].abs().max())
    result = {
        f"{name}_samples_per_s": args.gradient_batch / statistics.median(t) for name, t in times.items()
    }
    for name in ("batched", "vmap"):
        result[f"{name}_relative_difference"] = float((outputs[name] - outputs["loop"]).abs().max()) / scale
    cosine = torch.nn.functional.cosine_similarity(outputs["batched_bf16"], outputs["loop"], dim=1)
    result["bf16_min_cosine"] = float(cosine.min())
    return result


def bench_store(args: argparse.Namespace, rows: int, width: int) -> dict[str, float]:
    import ray

    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(rows, width)).astype(np.float32) for _ in range(args.store_tables)]
    labels = rng.integers(0, 10, rows)
    store = FeatureStore(f"bench-store-{rows}")
    refs = [store.put(f"t{i}", feature_table(f"t{i}", a, labels)) for i, a in enumerate(arrays)]
    blob_ref = ray.put(pickle.dumps(arrays, protocol=4))  # the arrays as one pickled blob
    times: dict[str, list[float]] = {"zero_copy": [], "unpickle": []}
    checksum = 0.0
    for _ in range(args.rounds * 4):
        start = time.perf_counter()
        views = [features_from_table(t)[0] for t in ray.get(refs)]
        checksum += float(views[-1][0, 0])
        times["zero_copy"].append(time.perf_counter() - start)
        start = time.perf_counter()
        copies = pickle.loads(ray.get(blob_ref))
        checksum += float(copies[-1][0, 0])
        times["unpickle"].append(time.perf_counter() - start)
    for view, array in zip(views, arrays):
        np.testing.assert_array_equal(view, array)
    store.kill()
    megabytes = sum(a.nbytes for a in arrays) / 1e6
    return {
        "megabytes": megabytes,
        "zero_copy_ms": 1e3 * statistics.median(times["zero_copy"]),
        "unpickle_ms": 1e3 * statistics.median(times["unpickle"]),
    }


def bench_gpu(args: argparse.Namespace) -> dict[str, float] | None:
    if not torch.cuda.is_available():
        return None
    import timm

    device = torch.device("cuda")
    backbone = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0).eval()
    model = PromptedViT(backbone, 50, num_classes=0).to(device=device, dtype=torch.bfloat16).eval()
    prompts = torch.randn(8, 50, 768, device=device, dtype=torch.bfloat16)
    images = torch.randn(64, 3, 224, 224, device=device, dtype=torch.bfloat16)
    with torch.inference_mode():
        for _ in range(3):
            model.forward_features(images, prompts)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(10):
            model.forward_features(images, prompts)
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / 10
    rate = 64 * 8 / seconds
    tokens, width, depth = 1 + 50 + 196, 768, 12
    flops = depth * (24 * tokens * width * width + 4 * tokens * tokens * width)  # per sequence
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in BF16_PEAK.items() if k in name), float("nan"))
    return {"images_x_prompts_per_s": rate, "share_of_bf16_peak": rate * flops / peak, "device": name}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", default="digits")
    parser.add_argument("--prompts", type=int, default=4, help="zoo prompts to extract in (a)")
    parser.add_argument("--samples", type=int, default=128, help="images per run in (a)")
    parser.add_argument("--gradient-batch", type=int, default=16)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"], help="of (a)")
    parser.add_argument("--store-tables", type=int, default=11)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke-test", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.smoke_test:
        args.prompts, args.samples, args.gradient_batch, args.rounds = 2, 16, 4, 1
    import ray

    torch.set_num_threads(2)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    names = PromptLibrary(ZOO).names[: args.prompts]
    print("(a) extraction with 1 and 2 workers ...", flush=True)
    workers = bench_workers(args, names)
    print("(b) per-sample gradients ...", flush=True)
    gradients = bench_gradients(args)
    print("(c) object store reads ...", flush=True)
    stores = {
        f"{rows} x {width}": bench_store(args, rows, width) for rows, width in ((800, 384), (2000, 768))
    }
    gpu = bench_gpu(args)
    ray.shutdown()

    one, two, wide = (workers[k] for k in ("1 worker x 1 CPU", "2 workers x 1 CPU", "1 worker x 2 CPUs"))
    scaling = two["compute"] / one["compute"]
    versus_wide = two["compute"] / wide["compute"]
    grad_ratio = gradients["batched_samples_per_s"] / gradients["loop_samples_per_s"]
    vmap_ratio = gradients["vmap_samples_per_s"] / gradients["loop_samples_per_s"]
    bf16_ratio = gradients["batched_bf16_samples_per_s"] / gradients["loop_samples_per_s"]
    store_ratios = {k: v["unpickle_ms"] / v["zero_copy_ms"] for k, v in stores.items()}
    title = (
        f"Extraction | {OFFLINE_BACKBONE} @ {OFFLINE_IMG_SIZE}px, m=10, (a) at precision "
        f"{resolve_precision(args.precision)} | target {args.target}, "
        f"{len(names)} zoo prompts x {args.samples} images | cpu, 2 cores | medians of {args.rounds} rounds"
    )
    rule = "-" * 96
    lines = [title, rule]
    lines.append(f"{'(a) extraction, compute images*prompts/s':58s}{'compute':>12s}{'end-to-end':>14s}")
    for label, row in workers.items():
        lines.append(f"    {label:54s}{row['compute']:12.1f}{row['end_to_end']:14.1f}")
    lines.append(
        f"    {'ratio 2x1 / 1x1 CPU   [>= 1.6]':54s}{scaling:12.2f}  {'PASS' if scaling >= 1.6 else 'MISS'}"
    )
    lines.append(f"    {'ratio 2x1 / 1x2 CPUs':54s}{versus_wide:12.2f}")
    lines.append(f"{'(b) per-sample gradients, samples/s (batch ' + str(args.gradient_batch) + ')':58s}")
    lines.append(f"    {'batched leaf, one backward (fp32)':54s}{gradients['batched_samples_per_s']:12.2f}")
    lines.append(f"    {'torch.func vmap(grad) (fp32)':54s}{gradients['vmap_samples_per_s']:12.2f}")
    lines.append(f"    {'Python loop over samples (fp32)':54s}{gradients['loop_samples_per_s']:12.2f}")
    lines.append(f"    {'batched leaf, bf16 autocast':54s}{gradients['batched_bf16_samples_per_s']:12.2f}")
    lines.append(
        f"    {'ratio batched / loop, fp32  [>= 5]':54s}{grad_ratio:12.2f}  {'PASS' if grad_ratio >= 5 else 'MISS'}"
    )
    lines.append(f"    {'ratio vmap / loop, fp32':54s}{vmap_ratio:12.2f}")
    lines.append(f"    {'ratio batched bf16 / loop fp32':54s}{bf16_ratio:12.2f}")
    lines.append(
        f"    {'max |batched - loop| / max |loop|':54s}{gradients['batched_relative_difference']:12.1e}"
    )
    lines.append(f"    {'max |vmap - loop| / max |loop|':54s}{gradients['vmap_relative_difference']:12.1e}")
    lines.append(
        f"    {'min cosine(batched bf16, loop fp32) over samples':54s}{gradients['bf16_min_cosine']:12.5f}"
    )
    for shape, store in stores.items():
        head = f"(c) read {args.store_tables} tables of {shape} float32 ({store['megabytes']:.1f} MB), ms"
        lines.append(head)
        lines.append(f"    {'object store, zero-copy Arrow views':54s}{store['zero_copy_ms']:12.2f}")
        lines.append(f"    {'object store, pickled blob + pickle.loads':54s}{store['unpickle_ms']:12.2f}")
        lines.append(f"    {'ratio unpickle / zero-copy':54s}{store_ratios[shape]:12.1f}")
    if gpu is None:
        lines.append("(d) ViT-B/16 bf16 on a GPU: not run (no GPU on this machine)")
    else:
        lines.append(f"(d) ViT-B/16 bf16, m=50, K=8 on {gpu['device']}")
        lines.append(f"    {'images*prompts/s':54s}{gpu['images_x_prompts_per_s']:12.1f}")
        lines.append(f"    {'share of dense bf16 peak':54s}{gpu['share_of_bf16_peak']:12.2%}")
    lines.append(rule)
    print("\n".join(lines))
    if args.json:
        atomic_write_json(
            args.json,
            {
                "table": lines,
                "workers": workers,
                "gradients": gradients,
                "store": stores,
                "gpu": gpu,
                "ratios": {
                    "scaling": scaling,
                    "versus_wide": versus_wide,
                    "batched_vs_loop": grad_ratio,
                    "vmap_vs_loop": vmap_ratio,
                    "batched_bf16_vs_loop": bf16_ratio,
                    "store": store_ratios,
                },
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What bf16 autocast costs against float32 on this CPU: a prompted forward and per-sample gradients.

``--precision auto`` picks bf16 only where the CPU runs it natively (AMX-BF16 or AVX512-BF16,
``models/precision.py``); elsewhere torch emulates it. This bench times, alternating the two
precisions round by round (this machine is shared and noisy), the offline backbone's prompted
forward of ``--images`` random images under three zoo prompts and the per-sample prompt gradients
of ``--gradient-samples`` of them under one prompt, and prints the medians and the bf16 / fp32
ratio measured in the same run, with the CPU's native bf16 flags and what ``auto`` resolves to.

Usage:
  python bench/bench_bf16_cost.py                 # 32 images, 8 gradient samples, 3 rounds
  python bench/bench_bf16_cost.py --smoke-test    # 4 images, 2 samples, 1 round
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from hgprompt_ray.models import OFFLINE_BACKBONE, PromptedViT, autocast, load_backbone, prompt_gradients
from hgprompt_ray.models.precision import cpu_bf16_flags, resolve_precision
from hgprompt_ray.paths import DEFAULT_LIBRARY
from hgprompt_ray.prompts import PromptLibrary

PROMPTS = ("digits", "dsprites-shape", "textures")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--gradient-samples", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke-test", action="store_true")
    args = parser.parse_args()
    if args.smoke_test:
        args.images, args.gradient_samples, args.rounds = 4, 2, 1

    torch.manual_seed(0)
    backbone = load_backbone(OFFLINE_BACKBONE, 112)
    library = PromptLibrary(DEFAULT_LIBRARY)
    prompts = library.load_many(list(PROMPTS), backbone=OFFLINE_BACKBONE, embed_dim=backbone.embed_dim)
    model = PromptedViT(backbone, prompts.shape[1], num_classes=0).eval()
    images = torch.randn(args.images, 3, 112, 112)
    labels = torch.randint(0, 8, (args.gradient_samples,))
    weight = torch.randn(8, backbone.embed_dim) * 0.05
    with torch.no_grad():
        tokens = model.embed_patches(images[: args.gradient_samples])

    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for precision in ("fp32", "bf16"):
            start = time.perf_counter()
            with torch.inference_mode(), autocast(precision):
                model.forward_features(images, prompts)
            times.setdefault(("forward", precision), []).append(time.perf_counter() - start)
            start = time.perf_counter()
            with autocast(precision):
                prompt_gradients(model, tokens, labels, prompts[0], lambda f: f @ weight.T)
            times.setdefault(("gradients", precision), []).append(time.perf_counter() - start)

    print(f"CPU: {platform.processor() or platform.machine()}; native bf16 flags: {cpu_bf16_flags() or 'none'}; "
          f"auto resolves to {resolve_precision('auto', 'cpu')}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; medians of {args.rounds} alternating rounds")  # fmt: skip
    print(f"{'pass':<34}{'fp32 s':>9}{'bf16 s':>9}{'bf16 / fp32':>13}")
    for kind, label in (("forward", f"forward, {args.images} images x {len(PROMPTS)} prompts"),
                        ("gradients", f"gradients, {args.gradient_samples} samples x 1 prompt")):  # fmt: skip
        fp32, bf16 = (statistics.median(times[(kind, p)]) for p in ("fp32", "bf16"))
        print(f"{label:<34}{fp32:>9.2f}{bf16:>9.2f}{bf16 / fp32:>12.1f}x")


if __name__ == "__main__":
    main()

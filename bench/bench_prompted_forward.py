"""Prompted ViT forward speed vs a bare timm forward, and K prompts in one call vs K calls.

Measures, in one run and interleaved round by round (this machine is shared and noisy):

  (i)   bare timm ``forward_features`` (T0 = 1 + patches tokens)
  (i')  bare timm blocks + norm on a sequence of T1 = T0 + m tokens (same token count as (ii))
  (ii)  PromptedViT with one prompt of m tokens
  (iii) K prompts in one call vs K separate calls

and prints one table of medians with the ratios:

  (ii) vs (i) per token  = (ii images/s * T1) / (i images/s * T0)      target >= 0.9
  (ii) vs (i')           = (ii images/s) / (i' images/s)               (overhead of prompting)
  (iii) batched/separate = images*prompts/s of one call / of K calls   target >= 1.0

Usage:
  python bench/bench_prompted_forward.py                       # offline ViT-S/14 @ 112 px, CPU
  python bench/bench_prompted_forward.py --smoke-test          # a few seconds
  python bench/bench_prompted_forward.py --backbone vit_base_patch16_224.augreg_in21k \
      --random-weights --img-size 224 --device cuda --dtype bfloat16 --batch 128
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from hgprompt_ray.models import OFFLINE_BACKBONE, OFFLINE_IMG_SIZE, PromptedViT, load_backbone


def _build_backbone(args: argparse.Namespace) -> torch.nn.Module:
    if args.random_weights:
        import timm

        arch = args.backbone.split("=")[0]
        if arch == OFFLINE_BACKBONE:
            arch = "vit_small_patch14_dinov2"
        return timm.create_model(arch, pretrained=False, num_classes=0, img_size=args.img_size).eval()
    return load_backbone(args.backbone, args.img_size)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn: Callable[[], object], device: torch.device, iterations: int) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(iterations):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / iterations


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default=OFFLINE_BACKBONE)
    parser.add_argument("--img-size", type=int, default=OFFLINE_IMG_SIZE)
    parser.add_argument("--num-tokens", type=int, default=50, help="m, prompt tokens (paper: 50)")
    parser.add_argument("--num-prompts", type=int, default=8, help="K for the batched call")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians reported")
    parser.add_argument("--iterations", type=int, default=2, help="calls per variant per round")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--random-weights", action="store_true", help="skip weight download (speed only)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--smoke-test", action="store_true", help="tiny run to check the script works")
    args = parser.parse_args()
    if args.smoke_test:
        args.rounds, args.iterations, args.batch, args.num_prompts = 1, 1, 2, 2

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    backbone = _build_backbone(args).to(device=device, dtype=dtype)
    model = PromptedViT(backbone, num_prompt_tokens=args.num_tokens).to(device=device, dtype=dtype).eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, generator=generator).to(device, dtype)
    prompts = torch.rand(args.num_prompts, args.num_tokens, model.embed_dim, generator=generator) - 0.5
    prompts = (prompts * 2 * model.prompt_init_bound).to(device, dtype)
    tokens_bare = backbone.num_prefix_tokens + backbone.patch_embed.num_patches
    tokens_prompted = tokens_bare + args.num_tokens
    same_count = torch.randn(args.batch, tokens_prompted, model.embed_dim, generator=generator).to(
        device, dtype
    )

    variants: dict[str, Callable[[], object]] = {
        "bare": lambda: backbone.forward_features(x),
        "bare_same_tokens": lambda: backbone.norm(backbone.blocks(same_count)),
        "prompted_1": lambda: model.forward_features(x, prompts[0]),
        "prompted_K_batched": lambda: model.forward_features(x, prompts),
        "prompted_K_separate": lambda: [
            model.forward_features(x, prompts[k]) for k in range(args.num_prompts)
        ],
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    with torch.inference_mode():
        for fn in variants.values():  # warm-up
            fn()
        for _ in range(args.rounds):
            for name, fn in variants.items():
                samples[name].append(_time(fn, device, args.iterations))
    seconds = {name: statistics.median(values) for name, values in samples.items()}
    ips = {name: args.batch / s for name, s in seconds.items()}
    ips["prompted_K_batched"] *= args.num_prompts  # images x prompts per second
    ips["prompted_K_separate"] *= args.num_prompts

    per_token = (ips["prompted_1"] * tokens_prompted) / (ips["bare"] * tokens_bare)
    vs_same = ips["prompted_1"] / ips["bare_same_tokens"]
    batched = ips["prompted_K_batched"] / ips["prompted_K_separate"]
    name = getattr(backbone, "backbone_name", args.backbone)
    print(
        f"\nPrompted forward | backbone {name} @ {args.img_size}px | m={args.num_tokens} "
        f"K={args.num_prompts} "
        f"batch={args.batch} | {device.type} {args.dtype} | threads={torch.get_num_threads()} | "
        f"medians of {args.rounds} interleaved rounds"
    )
    rows = [
        ("(i)   bare timm forward_features", f"{ips['bare']:.1f} img/s", f"T0={tokens_bare}"),
        (
            "(i')  bare timm blocks, same tokens",
            f"{ips['bare_same_tokens']:.1f} img/s",
            f"T1={tokens_prompted}",
        ),
        ("(ii)  PromptedViT, 1 prompt", f"{ips['prompted_1']:.1f} img/s", f"T1={tokens_prompted}"),
        ("(iii) K prompts, one call", f"{ips['prompted_K_batched']:.1f} img*prompt/s", ""),
        ("(iii) K prompts, K calls", f"{ips['prompted_K_separate']:.1f} img*prompt/s", ""),
        ("ratio (ii)/(i) per token  [>= 0.9]", f"{per_token:.3f}", "PASS" if per_token >= 0.9 else "BELOW"),
        ("ratio (ii)/(i') same tokens", f"{vs_same:.3f}", ""),
        ("ratio (iii) batched/separate [>= 1.0]", f"{batched:.3f}", "PASS" if batched >= 1.0 else "BELOW"),
    ]
    width = max(len(r[0]) for r in rows)
    print("-" * (width + 40))
    for label, value, note in rows:
        print(f"{label:<{width}}  {value:>20}  {note}")
    print("-" * (width + 40))
    if args.json:
        payload = {
            "args": vars(args),
            "images_per_second": ips,
            "ratios": {
                "prompted_vs_bare_per_token": per_token,
                "prompted_vs_bare_same_tokens": vs_same,
                "batched_vs_separate": batched,
            },
        }
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2)


if __name__ == "__main__":
    main()

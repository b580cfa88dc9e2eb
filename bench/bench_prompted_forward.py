"""Prompted ViT forward speed vs a bare timm forward, and K prompts in one call vs K calls.

Measures, in one run and interleaved round by round (this machine is shared and noisy):

  (i)   bare timm ``forward_features`` (T0 = 1 + patches tokens)
  (i')  bare timm blocks + norm on a sequence of T1 = T0 + m tokens (same token count as (ii))
  (ii)  PromptedViT with one prompt of m tokens
  (iii) K prompts in one call vs K separate calls
  (iv)  with ``--compile``: (iii) through ``torch.compile`` (inductor), compile time reported

each at every ``--precision`` (the product's autocast: ``fp32`` and ``bf16`` by default), and
prints one table of medians with the ratios:

  (ii) vs (i) per token  = (ii images/s * T1) / (i images/s * T0)      target >= 0.9
  (ii) vs (i')           = (ii images/s) / (i' images/s)               (overhead of prompting)
  (iii) batched/separate = images*prompts/s of one call / of K calls   target >= 1.0
  share of the GEMM rate = (iii) batched FLOP/s / a dense GEMM's FLOP/s at the same precision,
                           measured in the same run (torch's FLOP counter gives the forward's
                           FLOPs per image)                             target >= 0.75 in bf16
  (iv) compiled / eager  = (iv) images*prompts/s / (iii)'s, and (iv)'s share of the GEMM rate

Usage:
  python bench/bench_prompted_forward.py                       # offline ViT-S/14 @ 112 px, CPU
  python bench/bench_prompted_forward.py --smoke-test          # a few seconds
  python bench/bench_prompted_forward.py --precision bf16 --compile   # + torch.compile (minutes to compile)
  python bench/bench_prompted_forward.py --backbone vit_base_patch16_224.augreg_in21k \
      --random-weights --img-size 224 --device cuda --precision bf16 --batch 128
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from hgprompt_ray.models import OFFLINE_BACKBONE, OFFLINE_IMG_SIZE, PromptedViT, autocast, load_backbone


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


def gemm_rate(device: torch.device, precision: str, size: int, iterations: int) -> float:
    """FLOP/s of a dense (size x size) @ (size x size) matmul under ``autocast(precision)``."""
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(size, size, generator=generator).to(device)
    b = torch.randn(size, size, generator=generator).to(device)
    with torch.inference_mode(), autocast(precision, device):
        a @ b  # warm-up
        seconds = _time(lambda: a @ b, device, iterations)
    return 2 * size**3 / seconds


def forward_flops(model: PromptedViT, x: torch.Tensor, prompts: torch.Tensor) -> float:
    """FLOPs of one K-prompt forward (torch's FLOP counter: matmuls and attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model.forward_features(x, prompts)
    return float(counter.get_total_flops())


def run_precision(args: argparse.Namespace, precision: str) -> dict[str, object]:
    device = torch.device(args.device)
    backbone = _build_backbone(args).to(device=device)
    model = PromptedViT(backbone, num_prompt_tokens=args.num_tokens).to(device=device).eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, generator=generator).to(device)
    prompts = torch.rand(args.num_prompts, args.num_tokens, model.embed_dim, generator=generator) - 0.5
    prompts = (prompts * 2 * model.prompt_init_bound).to(device)
    tokens_bare = backbone.num_prefix_tokens + backbone.patch_embed.num_patches
    tokens_prompted = tokens_bare + args.num_tokens
    same_count = torch.randn(args.batch, tokens_prompted, model.embed_dim, generator=generator).to(device)

    variants: dict[str, Callable[[], object]] = {
        "bare": lambda: backbone.forward_features(x),
        "bare_same_tokens": lambda: backbone.norm(backbone.blocks(same_count)),
        "prompted_1": lambda: model.forward_features(x, prompts[0]),
        "prompted_K_batched": lambda: model.forward_features(x, prompts),
        "prompted_K_separate": lambda: [
            model.forward_features(x, prompts[k]) for k in range(args.num_prompts)
        ],
    }
    compile_seconds = None
    if args.compile:
        compiled = torch.compile(model.forward_features, dynamic=False)
        variants["prompted_K_compiled"] = lambda: compiled(x, prompts)
        with torch.inference_mode(), autocast(precision, device):
            start = time.perf_counter()
            compiled(x, prompts)  # compiles for this precision and shape
            _sync(device)
            compile_seconds = time.perf_counter() - start
    samples: dict[str, list[float]] = {name: [] for name in variants}
    samples["gemm"] = []
    with torch.inference_mode(), autocast(precision, device):
        for fn in variants.values():  # warm-up
            fn()
        for _ in range(args.rounds):
            for name, fn in variants.items():
                samples[name].append(_time(fn, device, args.iterations))
            samples["gemm"].append(gemm_rate(device, precision, args.gemm_size, args.iterations))
    rate = statistics.median(samples.pop("gemm"))
    seconds = {name: statistics.median(values) for name, values in samples.items()}
    ips = {name: args.batch / value for name, value in seconds.items()}
    ips["prompted_K_batched"] *= args.num_prompts  # images x prompts per second
    ips["prompted_K_separate"] *= args.num_prompts
    if "prompted_K_compiled" in ips:
        ips["prompted_K_compiled"] *= args.num_prompts
    flops = forward_flops(model, x, prompts) / (args.batch * args.num_prompts)  # per image x prompt
    achieved = ips["prompted_K_batched"] * flops
    compiled_ratios = {}
    if "prompted_K_compiled" in ips:
        compiled_ratios = {
            "compiled_vs_eager": ips["prompted_K_compiled"] / ips["prompted_K_batched"],
            "compiled_share_of_gemm_rate": ips["prompted_K_compiled"] * flops / rate,
        }
    return {
        "compile_seconds": compile_seconds,
        "precision": precision,
        "images_per_second": ips,
        "tokens": {"bare": tokens_bare, "prompted": tokens_prompted},
        "gflop_per_image_prompt": flops / 1e9,
        "achieved_gflops": achieved / 1e9,
        "gemm_gflops": rate / 1e9,
        "ratios": {
            "prompted_vs_bare_per_token": (ips["prompted_1"] * tokens_prompted) / (ips["bare"] * tokens_bare),
            "prompted_vs_bare_same_tokens": ips["prompted_1"] / ips["bare_same_tokens"],
            "batched_vs_separate": ips["prompted_K_batched"] / ips["prompted_K_separate"],
            "share_of_gemm_rate": achieved / rate,
            **compiled_ratios,
        },
    }


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
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--gemm-size", type=int, default=2048, help="n of the n x n x n GEMM baseline")
    parser.add_argument("--random-weights", action="store_true", help="skip weight download (speed only)")
    parser.add_argument("--compile", action="store_true", help="also time (iii) through torch.compile")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--smoke-test", action="store_true", help="tiny run to check the script works")
    args = parser.parse_args()
    if args.smoke_test:
        args.rounds, args.iterations, args.batch, args.num_prompts, args.gemm_size = 1, 1, 2, 2, 256

    results = [run_precision(args, precision) for precision in args.precision]
    print(
        f"\nPrompted forward | backbone {args.backbone} @ {args.img_size}px | m={args.num_tokens} "
        f"K={args.num_prompts} batch={args.batch} | {args.device} | threads={torch.get_num_threads()} | "
        f"medians of {args.rounds} interleaved rounds"
    )
    header = f"{'':44s}" + "".join(f"{r['precision']:>14s}" for r in results)
    print(header)
    print("-" * len(header))

    def row(label: str, values: list[str]) -> None:
        print(f"{label:44s}" + "".join(f"{v:>14s}" for v in values))

    ips = [r["images_per_second"] for r in results]
    ratios = [r["ratios"] for r in results]
    row("(i)   bare timm forward_features, img/s", [f"{v['bare']:.1f}" for v in ips])
    row("(i')  bare blocks, same tokens, img/s", [f"{v['bare_same_tokens']:.1f}" for v in ips])
    row("(ii)  PromptedViT, 1 prompt, img/s", [f"{v['prompted_1']:.1f}" for v in ips])
    row("(iii) K prompts, one call, img*prompt/s", [f"{v['prompted_K_batched']:.1f}" for v in ips])
    row("(iii) K prompts, K calls, img*prompt/s", [f"{v['prompted_K_separate']:.1f}" for v in ips])
    row("GFLOP per image x prompt", [f"{r['gflop_per_image_prompt']:.2f}" for r in results])
    row("(iii) achieved GFLOP/s", [f"{r['achieved_gflops']:.0f}" for r in results])
    row(f"dense GEMM {args.gemm_size}^3 GFLOP/s, same run", [f"{r['gemm_gflops']:.0f}" for r in results])
    row("ratio (ii)/(i) per token  [>= 0.9]", [f"{r['prompted_vs_bare_per_token']:.3f}" for r in ratios])
    row("ratio (ii)/(i') same tokens", [f"{r['prompted_vs_bare_same_tokens']:.3f}" for r in ratios])
    row("ratio (iii) batched/separate [>= 1.0]", [f"{r['batched_vs_separate']:.3f}" for r in ratios])
    row("share of the GEMM rate  [>= 0.75 in bf16]", [f"{r['share_of_gemm_rate']:.2f}" for r in ratios])
    if args.compile:
        row("(iv)  K prompts, torch.compile, img*prompt/s", [f"{v['prompted_K_compiled']:.1f}" for v in ips])
        row("(iv)  compile time, s", [f"{r['compile_seconds']:.0f}" for r in results])
        row("ratio (iv) compiled / (iii) eager", [f"{r['compiled_vs_eager']:.3f}" for r in ratios])
        row("(iv) share of the GEMM rate  [>= 0.75 bf16]", [f"{r['compiled_share_of_gemm_rate']:.2f}" for r in ratios])
    by_name = {r["precision"]: r for r in results}
    if "fp32" in by_name and "bf16" in by_name:
        speedup = (
            by_name["bf16"]["images_per_second"]["prompted_K_batched"]
            / by_name["fp32"]["images_per_second"]["prompted_K_batched"]
        )
        row("bf16 / fp32 speed-up of (iii)", ["", f"{speedup:.2f}"])
    if "bf16" in by_name:
        share = max(by_name["bf16"]["ratios"]["share_of_gemm_rate"],
                    by_name["bf16"]["ratios"].get("compiled_share_of_gemm_rate", 0.0))  # fmt: skip
        print(
            f"bf16 goal (>= 75% of the bf16 GEMM rate): {'PASS' if share >= 0.75 else 'MISS'} ({share:.0%})"
        )
    print("-" * len(header))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"args": vars(args), "results": results}, handle, indent=2)


if __name__ == "__main__":
    main()

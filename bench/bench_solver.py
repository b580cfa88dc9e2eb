"""Exact precomputed alpha solver vs a naive autograd solver on the raw features and gradients.

Problem (defaults = the issue's): M = 11 prompts, N = 2000 samples, d = 768, 10 classes,
class-structured random features, per-sample gradients with p = 50 x 768 coordinates.

Both solvers run the *same* algorithm (``hgprompt_ray.core.simplex.minimize_on_simplex``: the
same starts, step rule and iteration budget); only the objective's evaluation differs:

* exact: ``ensemble_statistics`` + streamed ``GradientMoments`` computed once (the gradient
  stack is generated batch by batch and never held whole), then each step costs
  O(M^2 d^2 + d^3 + p M^2), independent of N.
* naive: each step forms sum_k alpha_k f_k (N x d) and sum_k alpha_k g_k (N x p) from the raw
  arrays, computes the Ledoit-Wolf H-score and the paper's uncentred L_align
  (v_i = 1/(N-1) sum_j (g^i_j - g^alpha_j)^2) from them, and differentiates with autograd
  (gradient checkpointing over coordinate chunks keeps its memory bounded). Its alignment
  normaliser is computed from the raw gradients too (sum_c (mean_i 1/(N-1) sum_j g^i_jc^2)^2).

The naive solver is too slow to run to convergence from every start on 2 cores, so both run a
fixed budget of ``--iterations`` steps (tolerance 0) from the uniform start, which makes the
per-step speed and the alpha agreement directly comparable; the exact solver's converged
multi-start solve is reported too. Each solver runs in its own subprocess so its peak RSS is its
own. Prints one table.

Usage:
  python bench/bench_solver.py                   # the issue's sizes (several minutes)
  python bench/bench_solver.py --smoke-test      # small sizes, seconds
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch


def _features(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([args.seed, 0])
    labels = rng.integers(0, args.classes, args.samples)
    strength = rng.uniform(0.1, 0.6, size=(args.prompts, 1, 1))
    centres = rng.normal(size=(args.prompts, args.classes, args.dim)) * strength
    noise = rng.normal(size=(args.prompts, args.samples, args.dim))
    return (centres[:, labels] + noise).astype(np.float32), labels


def _gradient_batches(args: argparse.Namespace):
    """Per-sample gradients (B, M, p) float32, batch by batch, identical in both processes."""
    scale = np.random.default_rng([args.seed, 1]).uniform(0.5, 2.0, size=(1, args.prompts, 1))
    p = args.tokens * args.dim
    for index, start in enumerate(range(0, args.samples, args.batch)):
        rng = np.random.default_rng([args.seed, 2, index])
        size = min(args.batch, args.samples - start)
        shared = rng.standard_normal((size, 1, p), dtype=np.float32)
        own = rng.standard_normal((size, args.prompts, p), dtype=np.float32)
        yield (1e-3 * (shared + own * scale)).astype(np.float32)


def _settings(args: argparse.Namespace, fixed: bool):
    from hgprompt_ray.core import SolverSettings

    if fixed:
        return SolverSettings(
            max_iterations=args.iterations, tolerance=1e-300, vertex_starts=False
        )  # no early stop
    return SolverSettings()


def run_exact(args: argparse.Namespace) -> dict[str, Any]:
    import warnings

    from hgprompt_ray.core import (
        SimplexConvergenceWarning,
        empty_gradient_moments,
        ensemble_statistics,
        gradient_second_moment,
        solve_weights,
        update_gradient_moments,
    )

    features, labels = _features(args)
    start = time.perf_counter()
    stats = ensemble_statistics(features, labels)
    moments = empty_gradient_moments(args.prompts, args.tokens * args.dim)
    for batch in _gradient_batches(args):
        moments = update_gradient_moments(moments, batch)
    second_moment = gradient_second_moment(moments)
    del moments
    precompute = time.perf_counter() - start
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SimplexConvergenceWarning)
        start = time.perf_counter()
        fixed = solve_weights(stats, second_moment, args.lam, _settings(args, fixed=True))
        fixed_seconds = time.perf_counter() - start
    start = time.perf_counter()
    full = solve_weights(stats, second_moment, args.lam, _settings(args, fixed=False))
    full_seconds = time.perf_counter() - start
    return {
        "precompute_s": precompute,
        "fixed_s": fixed_seconds,
        "fixed_iterations": fixed.iterations,
        "alpha": fixed.alpha.tolist(),
        "objective": fixed.objective,
        "full_s": full_seconds,
        "full_iterations": full.iterations,
        "full_converged": full.converged,
        "full_kkt_gap": full.kkt_gap,
        "full_objective": full.objective,
        "full_alpha": full.alpha.tolist(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_naive(args: argparse.Namespace) -> dict[str, Any]:
    from torch.utils.checkpoint import checkpoint

    from hgprompt_ray.core import minimize_on_simplex, regularized_h_score_torch, solver_starts

    features, labels = _features(args)
    feats = torch.from_numpy(features.astype(np.float64))  # (M, N, d)
    grads = torch.from_numpy(np.concatenate(list(_gradient_batches(args))))  # (N, M, p) float32
    chunk = args.chunk

    def chunk_variances(alpha: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
        block = block.double()  # (N, M, c)
        mixed = torch.einsum("k,nkc->nc", alpha, block)
        return (block - mixed[:, None, :]).pow(2).sum(dim=0) / (block.shape[0] - 1)  # (M, c), uncentred

    def alignment(alpha: torch.Tensor) -> torch.Tensor:
        parts = [
            checkpoint(chunk_variances, alpha, grads[:, :, i : i + chunk], use_reentrant=False)
            for i in range(0, grads.shape[2], chunk)
        ]
        variances = torch.cat(parts, dim=1)  # (M, p)
        mean = alpha @ variances
        return (variances - mean).pow(2).sum() / alpha.shape[0]

    scale_holder: dict[str, float] = {}

    def scale() -> float:  # alignment_scale from the raw gradients, as the exact solver uses
        if "value" not in scale_holder:
            total = 0.0
            for i in range(0, grads.shape[2], chunk):
                block = grads[:, :, i : i + chunk].double()
                second = block.pow(2).sum(dim=0) / (block.shape[0] - 1)  # (M, c) uncentred
                total += float((second.mean(dim=0) ** 2).sum())
            scale_holder["value"] = total
        return scale_holder["value"]

    def objective(alpha: torch.Tensor) -> torch.Tensor:
        values = []
        for a in alpha.unbind(0):
            combined = torch.einsum("k,knd->nd", a, feats)
            value = -regularized_h_score_torch(combined, labels)
            if args.lam > 0:
                value = value + args.lam * alignment(a) / scale()
            values.append(value)
        return torch.stack(values)

    settings = _settings(args, fixed=True)
    start = time.perf_counter()
    result = minimize_on_simplex(objective, solver_starts(args.prompts, settings), settings)
    seconds = time.perf_counter() - start
    return {
        "fixed_s": seconds,
        "fixed_iterations": result.iterations,
        "alpha": result.alpha.tolist(),
        "objective": result.objective,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=11)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--tokens", type=int, default=50, help="prompt tokens; p = tokens * dim")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--lam", type=float, default=1.0)
    parser.add_argument("--iterations", type=int, default=25, help="fixed step budget of the comparison")
    parser.add_argument("--batch", type=int, default=100, help="gradient batch size when streaming")
    parser.add_argument("--chunk", type=int, default=2048, help="naive: coordinates per checkpointed chunk")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    parser.add_argument("--smoke-test", action="store_true")
    parser.add_argument("--worker", choices=["exact", "naive"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke_test:
        args.prompts, args.samples, args.dim, args.tokens, args.iterations = 4, 200, 32, 4, 5
    if args.worker:
        result = run_exact(args) if args.worker == "exact" else run_naive(args)
        print(json.dumps(result))
        return

    forwarded = [a for a in sys.argv[1:] if a != "--smoke-test"]
    if args.smoke_test:
        forwarded += [
            "--prompts",
            "4",
            "--samples",
            "200",
            "--dim",
            "32",
            "--tokens",
            "4",
            "--iterations",
            "5",
        ]
    results = {}
    for worker in ("exact", "naive"):
        out = subprocess.run(
            [sys.executable, __file__, *forwarded, "--worker", worker],
            capture_output=True,
            text=True,
            check=True,
        )
        results[worker] = json.loads(out.stdout.strip().splitlines()[-1])
    exact, naive = results["exact"], results["naive"]
    per_step_exact = exact["fixed_s"] / exact["fixed_iterations"]
    per_step_naive = naive["fixed_s"] / naive["fixed_iterations"]
    alpha_diff = float(np.max(np.abs(np.array(exact["alpha"]) - np.array(naive["alpha"]))))
    speedup = naive["fixed_s"] / exact["fixed_s"]
    end_to_end = naive["fixed_s"] / (exact["fixed_s"] + exact["precompute_s"])
    naive_converged_estimate = per_step_naive * exact["full_iterations"] * (args.prompts + 1)
    p = args.tokens * args.dim
    print(
        f"\nAlpha solver | M={args.prompts} N={args.samples} d={args.dim} p={p} C={args.classes} "
        f"lambda={args.lam} | {torch.get_num_threads()} threads | same algorithm, "
        f"{args.iterations} steps from the uniform start"
    )
    rows = [
        ("exact: precompute (features + streamed gradient moments)", f"{exact['precompute_s']:.1f} s"),
        (
            f"exact: {exact['fixed_iterations']} steps",
            f"{exact['fixed_s']:.2f} s ({per_step_exact * 1e3:.0f} ms/step)",
        ),
        (
            f"naive: {naive['fixed_iterations']} steps",
            f"{naive['fixed_s']:.1f} s ({per_step_naive * 1e3:.0f} ms/step)",
        ),
        (
            "speed ratio naive/exact, solve only  [>= 10]",
            f"{speedup:.1f}x {'PASS' if speedup >= 10 else 'BELOW'}",
        ),
        ("speed ratio naive/exact incl. precompute", f"{end_to_end:.1f}x"),
        (
            "max |alpha_exact - alpha_naive|  [<= 1e-4]",
            f"{alpha_diff:.2e} {'PASS' if alpha_diff <= 1e-4 else 'ABOVE'}",
        ),
        ("peak RSS exact", f"{exact['peak_rss_mb']:.0f} MB"),
        ("peak RSS naive", f"{naive['peak_rss_mb']:.0f} MB"),
        (
            f"exact converged solve ({args.prompts + 1} starts)",
            f"{exact['full_s']:.1f} s, {exact['full_iterations']} steps, converged={exact['full_converged']}, "
            f"KKT gap {exact['full_kkt_gap']:.1e}",
        ),
        ("naive same solve, estimated from ms/step", f"~{naive_converged_estimate:.0f} s"),
    ]
    width = max(len(r[0]) for r in rows)
    print("-" * (width + 45))
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    print("-" * (width + 45))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"args": vars(args), "exact": exact, "naive": naive}, handle, indent=2)


if __name__ == "__main__":
    main()

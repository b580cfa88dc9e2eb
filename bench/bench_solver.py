"""The exact alpha solver against its goals (issue #19) and against a naive autograd solver.

Problem (defaults = the issue's): M = 11 prompts, N = 2000 samples, d = 768, 10 classes,
class-structured random features, per-sample gradients with p = 50 x 768 coordinates, lambda 1.

Exact solver: ``ensemble_statistics`` + streamed ``GradientMoments`` computed once (the gradient
stack is generated batch by batch and never held whole; generating it is timed apart from the
precompute), then ``EnsembleObjective`` (``hgprompt_ray.core.ensemble_objective``: packed pair
blocks, one Cholesky per start, the gradient by hand) inside ``minimize_on_simplex``.

Rows and goals:

* precompute of the statistics [<= 10 s];
* one solver step from the uniform start [<= 30 ms]: the median over ``--repeats`` runs of
  ``--iterations`` steps on the prepared objective; printed with its FLOP count
  (``EnsembleObjective.cost``), the achieved GFLOP/s and GB/s, and a float64 GEMM rate and a
  memory read rate measured in the same process (before and after the timed runs), and the
  roofline time they give (the pair blocks' bytes at the read rate + the other FLOPs at the
  GEMM rate): a single start's step is bound by reading the blocks, not by arithmetic;
* one batched evaluation of all 12 standard starts (what each multi-start iteration costs);
* the converged multi-start solve, ``solve_weights`` with default settings (uniform + every
  vertex = 12 starts), setup included [<= 10 s];
* exact vs naive [max |alpha difference| <= 1e-4]: both run the *same* algorithm
  (``minimize_on_simplex``, same start, step rule and budget of ``--compare-iterations``
  evaluations, tolerance 0), the naive one evaluating each step from the raw features and
  gradients: it forms sum_k alpha_k f_k (N x d) and sum_k alpha_k g_k (N x p), computes the
  Ledoit-Wolf H-score and the paper's uncentred L_align (v_i = 1/(N-1) sum_j (g^i_j - g^alpha_j)^2)
  from them and differentiates with autograd (gradient checkpointing over coordinate chunks
  keeps its memory bounded); its alignment normaliser comes from the raw gradients too. About a
  minute a step at the default sizes, hence the small budget; the speed ratio per step is
  reported [>= 10].

Each solver runs in its own subprocess so its peak RSS is its own. Prints one table.

Usage:
  python bench/bench_solver.py --json bench/results/solver.json > bench/results/solver.txt
  python bench/bench_solver.py --smoke-test      # small sizes, seconds
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch

GOALS = {"precompute_s": 10.0, "step_ms": 30.0, "full_s": 10.0, "alpha_diff": 1e-4, "speedup": 10.0}


def _features(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([args.seed, 0])
    labels = rng.integers(0, args.classes, args.samples)
    strength = rng.uniform(0.1, 0.6, size=(args.prompts, 1, 1))
    centres = rng.normal(size=(args.prompts, args.classes, args.dim)) * strength
    noise = rng.normal(size=(args.prompts, args.samples, args.dim))
    return (centres[:, labels] + noise).astype(np.float32), labels


def _gradient_batches(args: argparse.Namespace):
    """Per-sample gradients (B, M, p) float32, batch by batch, identical in both processes."""
    rng = np.random.default_rng([args.seed, 1])
    scale = rng.uniform(0.5, 2.0, size=(1, args.prompts, 1)).astype(np.float32)
    p = args.tokens * args.dim
    for index, start in enumerate(range(0, args.samples, args.batch)):
        rng = np.random.default_rng([args.seed, 2, index])
        size = min(args.batch, args.samples - start)
        shared = rng.standard_normal((size, 1, p), dtype=np.float32)
        own = rng.standard_normal((size, args.prompts, p), dtype=np.float32)
        own *= scale
        own += shared
        own *= np.float32(1e-3)
        yield own


def _settings(iterations: int | None):
    """A fixed budget with no early stop and the uniform start only, or the defaults."""
    from hgprompt_ray.core import SolverSettings

    if iterations is None:
        return SolverSettings()
    return SolverSettings(max_iterations=iterations, tolerance=1e-300, vertex_starts=False)


def _gemm_rate() -> float:
    """float64 GEMM GFLOP/s (2048^3, torch/MKL, best of 3)."""
    a = torch.randn(2048, 2048, dtype=torch.float64)
    best = float("inf")
    for _ in range(4):
        start = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - start)
    return 2 * 2048**3 / best / 1e9


def _read_rate() -> float:
    """Memory read GB/s: a float64 row vector times a (64, 2^19) matrix (256 MB), best of 3."""
    matrix = torch.ones(64, 1 << 19, dtype=torch.float64)
    row = torch.ones(1, 64, dtype=torch.float64)
    best = float("inf")
    for _ in range(4):
        start = time.perf_counter()
        row @ matrix
        best = min(best, time.perf_counter() - start)
    return matrix.numel() * 8 / best / 1e9


def _median_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def run_exact(args: argparse.Namespace) -> dict[str, Any]:
    import warnings

    from hgprompt_ray.core import (
        SimplexConvergenceWarning,
        alignment_scale,
        empty_gradient_moments,
        ensemble_statistics,
        gradient_second_moment,
        minimize_on_simplex,
        solve_weights,
        solver_starts,
        update_gradient_moments,
    )
    from hgprompt_ray.core.ensemble_objective import EnsembleObjective

    rates_before = (_gemm_rate(), _read_rate())
    features, labels = _features(args)
    start = time.perf_counter()
    stats = ensemble_statistics(features, labels)
    features_s = time.perf_counter() - start
    moments = empty_gradient_moments(args.prompts, args.tokens * args.dim)
    generation_s = update_s = 0.0
    batches = _gradient_batches(args)
    while True:
        start = time.perf_counter()
        batch = next(batches, None)
        generation_s += time.perf_counter() - start
        if batch is None:
            break
        start = time.perf_counter()
        moments = update_gradient_moments(moments, batch)
        update_s += time.perf_counter() - start
    start = time.perf_counter()
    second_moment = gradient_second_moment(moments)
    update_s += time.perf_counter() - start
    del moments

    start = time.perf_counter()
    objective = EnsembleObjective(stats, second_moment, args.lam, alignment_scale(second_moment))
    setup_s = time.perf_counter() - start
    fixed = _settings(args.iterations)
    starts = solver_starts(args.prompts, fixed)
    step_runs = []
    for _ in range(args.repeats):
        begin = time.perf_counter()
        stepped = minimize_on_simplex(objective, starts, fixed)
        step_runs.append((time.perf_counter() - begin) / stepped.iterations)
    all_starts = torch.from_numpy(solver_starts(args.prompts, _settings(None)))
    all_starts = 0.9 * all_starts + 0.1 / args.prompts  # inside the simplex, as the solver moves them
    batched_s = _median_time(lambda: objective.value_and_grad(all_starts), args.repeats)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SimplexConvergenceWarning)
        compared = solve_weights(stats, second_moment, args.lam, _settings(args.compare_iterations))
    full_runs, full_iterations = [], []
    for _ in range(args.repeats):
        begin = time.perf_counter()
        full = solve_weights(stats, second_moment, args.lam, _settings(None))
        full_runs.append(time.perf_counter() - begin)
        full_iterations.append(full.iterations)
    rates_after = (_gemm_rate(), _read_rate())
    return {
        "features_s": features_s,
        "gradient_moments_s": update_s,
        "precompute_s": features_s + update_s,
        "generation_s": generation_s,
        "setup_s": setup_s,
        "step_s": float(np.median(step_runs)),
        "step_runs_s": step_runs,
        "step_cost": objective.cost(1),
        "batched_starts": int(all_starts.shape[0]),
        "batched_s": batched_s,
        "batched_cost": objective.cost(int(all_starts.shape[0])),
        "gemm_gflops": [rates_before[0], rates_after[0]],
        "read_gbs": [rates_before[1], rates_after[1]],
        "alpha": compared.alpha.tolist(),
        "objective": compared.objective,
        "compare_iterations": compared.iterations,
        "full_s": float(np.median(full_runs)),
        "full_runs_s": full_runs,
        "full_iterations": full_iterations,
        "full_converged": full.converged,
        "full_kkt_gap": full.kkt_gap,
        "full_objective": full.objective,
        "full_alpha": full.alpha.tolist(),
        "fallbacks": objective.fallbacks,
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

    settings = _settings(args.compare_iterations)
    start = time.perf_counter()
    result = minimize_on_simplex(objective, solver_starts(args.prompts, settings), settings)
    seconds = time.perf_counter() - start
    return {
        "compare_s": seconds,
        "step_s": seconds / result.iterations,
        "compare_iterations": result.iterations,
        "alpha": result.alpha.tolist(),
        "objective": result.objective,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _verdict(passed: bool) -> str:
    return "PASS" if passed else "MISS"


def _table(args: argparse.Namespace, exact: dict[str, Any], naive: dict[str, Any]) -> list[tuple[str, str]]:
    gemm, read = min(exact["gemm_gflops"]), min(exact["read_gbs"])
    step, cost = exact["step_s"], exact["step_cost"]
    pairs, entries = args.prompts * (args.prompts + 1) // 2, args.dim * (args.dim + 1) // 2
    block_flops = 4.0 * pairs * entries  # the two passes over the blocks, counted in the bytes
    roofline = cost["bytes"] / (read * 1e9) + (cost["flops"] - block_flops) / (gemm * 1e9)
    batched, batched_cost = exact["batched_s"], exact["batched_cost"]
    alpha_exact, alpha_naive = np.array(exact["alpha"]), np.array(naive["alpha"])
    alpha_diff = float(np.max(np.abs(alpha_exact - alpha_naive)))
    moved = float(np.max(np.abs(alpha_exact - 1.0 / args.prompts)))
    speedup = naive["step_s"] / step
    return [
        (
            f"precompute: features + {exact['gradient_batches']} streamed gradient batches  [<= 10 s]",
            f"{exact['precompute_s']:.1f} s ({exact['features_s']:.1f} + {exact['gradient_moments_s']:.1f}) "
            f"{_verdict(exact['precompute_s'] <= GOALS['precompute_s'])}",
        ),
        ("  generating the bench's gradients (not part of it)", f"{exact['generation_s']:.1f} s"),
        ("solver setup (packed pair blocks, QR of R, scale)", f"{exact['setup_s']:.2f} s"),
        (
            "one step, uniform start  [<= 30 ms]",
            f"{step * 1e3:.1f} ms {_verdict(step * 1e3 <= GOALS['step_ms'])} "
            f"(median of {args.repeats} x {args.iterations} steps)",
        ),
        (
            "  FLOPs of one step: Cholesky d^3/3 + 2 passes over the blocks + solves",
            f"{cost['flops'] / 1e6:.0f} MFLOP, reads {cost['bytes'] / 1e6:.0f} MB",
        ),
        (
            "  achieved",
            f"{cost['flops'] / step / 1e9:.1f} GFLOP/s, {cost['bytes'] / step / 1e9:.1f} GB/s",
        ),
        (
            "  float64 GEMM / memory read, same run (min of before, after)",
            f"{gemm:.0f} GFLOP/s / {read:.1f} GB/s",
        ),
        (
            "  roofline: blocks at the read rate + the rest at the GEMM rate",
            f"{roofline * 1e3:.1f} ms (step = {step / roofline:.2f}x it)",
        ),
        (
            f"one batched evaluation, {exact['batched_starts']} starts",
            f"{batched * 1e3:.0f} ms, {batched_cost['flops'] / 1e9:.2f} GFLOP, "
            f"{batched_cost['flops'] / batched / 1e9:.0f} GFLOP/s ({batched_cost['flops'] / batched / 1e9 / gemm:.0%} of GEMM)",
        ),
        (
            f"converged solve, {args.prompts + 1} starts, setup included  [<= 10 s]",
            f"{exact['full_s']:.2f} s {_verdict(exact['full_s'] <= GOALS['full_s'])} (median of "
            f"{args.repeats}), iterations {'/'.join(map(str, exact['full_iterations']))}, "
            f"converged={exact['full_converged']}, KKT gap {exact['full_kkt_gap']:.1e}",
        ),
        (
            f"  per iteration ({args.prompts + 1} starts while all run, then fewer)",
            f"{exact['full_s'] / float(np.median(exact['full_iterations'])) * 1e3:.0f} ms",
        ),
        (f"naive: one step (of {naive['compare_iterations']})", f"{naive['step_s']:.1f} s"),
        (
            "speed ratio naive/exact per step  [>= 10]",
            f"{speedup:.0f}x {_verdict(speedup >= GOALS['speedup'])}",
        ),
        (
            f"max |alpha_exact - alpha_naive|, {args.compare_iterations} steps  [<= 1e-4]",
            f"{alpha_diff:.2e} {_verdict(alpha_diff <= GOALS['alpha_diff'])} "
            f"(alpha moved {moved:.3f} from uniform)",
        ),
        ("  |objective_exact - objective_naive|", f"{abs(exact['objective'] - naive['objective']):.1e}"),
        ("peak RSS exact / naive", f"{exact['peak_rss_mb']:.0f} MB / {naive['peak_rss_mb']:.0f} MB"),
    ]


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
    parser.add_argument("--iterations", type=int, default=25, help="steps of each timed exact run")
    parser.add_argument("--repeats", type=int, default=3, help="timed exact runs; the median is reported")
    parser.add_argument(
        "--compare-iterations", type=int, default=3, help="step budget of the exact-vs-naive comparison"
    )
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
    exact["gradient_batches"] = -(-args.samples // args.batch)
    p = args.tokens * args.dim
    print(f"# python bench/bench_solver.py {' '.join(sys.argv[1:])}   ({datetime.date.today()})")
    print(
        f"Alpha solver | M={args.prompts} N={args.samples} d={args.dim} p={p} C={args.classes} "
        f"lambda={args.lam} | {torch.get_num_threads()} threads | float64 throughout"
    )
    rows = _table(args, exact, naive)
    width = max(len(r[0]) for r in rows)
    print("-" * (width + 60))
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    print("-" * (width + 60))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"args": vars(args), "goals": GOALS, "exact": exact, "naive": naive}, handle, indent=2)


if __name__ == "__main__":
    main()

"""Library scale: the whole search on prompt libraries of K = 11, 50, 100 and 200 prompts.

The libraries are the shipped zoo (11 prompts) plus synthetic prompts made from it: each is a
Dirichlet(0.5) mix of three of the target's eligible zoo prompts plus Gaussian noise (0.1 x the
parents' spread), written with ``synthetic: true`` and its parents in the manifest, and with the
source task of its heaviest parent (so the related-task rule of the data registry still keeps the
target's own images out). Each K runs one cold search (empty extraction cache) in this process,
as ``launch/search.py`` would:

    extraction of every source's features on N samples of train800 and val200 (Ray Train)
    -> screening: every source ranked by its H-score, the best ``--screen-top`` K' kept
    -> gradients of the K' kept prompts only -> statistics (all pairs or on demand, logged)
    -> ``--trials`` Tune + Optuna trials with the val-probe metric

and reports each step's wall time (``best.json``'s ``seconds``), the peak resident memory of the
driver and of every Ray process (sampled every 0.25 s over this process's process tree; the sum
counts the object store's shared pages once per process that maps them), and the search's best
trial. Goals (issue #17): peak RSS <= 6 GB at K = 200; memory and statistics time growing no
faster than linearly in K after screening; the cold run at K = 200 within 30 minutes.

Usage:
  python bench/bench_library_scale.py                        # K = 11 50 100 200 (about 2.5 h here)
  python bench/bench_library_scale.py --smoke-test           # K = 11 14, N = 48, 4 trials
  python bench/bench_library_scale.py --json bench/results/library_scale.json
"""

from __future__ import annotations

import argparse
import logging
import math
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from hgprompt_ray.atomic import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
GB = 2**30


def build_library(zoo: Path, root: Path, size: int, target: str, seed: int) -> tuple[int, int]:
    """The zoo plus ``size - len(zoo)`` synthetic prompts in ``root`` (kept between runs: a
    smaller library of the same seed is a prefix of a larger one). Returns (prompts, synthetic)."""
    import torch

    from hgprompt_ray.data import related_tasks
    from hgprompt_ray.prompts import PromptLibrary

    if not root.exists():
        shutil.copytree(zoo, root, ignore=shutil.ignore_patterns("zero_shot", "README.md"))
    library = PromptLibrary(root)
    zoo_library = PromptLibrary(zoo)
    records = [r for r in zoo_library.records() if r.source_task not in {target, *related_tasks(target)}]
    if size <= len(library):
        return len(library), sum(r.synthetic for r in library.records())
    parents = {r.name: zoo_library.load(r.name).float() for r in records}
    names = [r.name for r in records]
    task_of = {r.name: r.source_task for r in records}
    first = records[0]
    rng = np.random.default_rng(seed)
    made = sum(r.synthetic for r in library.records())
    for index in range(len(zoo_library), size):  # the same draws whatever size was built before
        chosen = rng.choice(len(names), size=3, replace=False)
        weights = rng.dirichlet(np.full(3, 0.5))
        noise_seed = int(rng.integers(2**31))
        name = f"synthetic-{index:03d}"
        if name in library:
            continue
        mix = sum(float(w) * parents[names[i]] for w, i in zip(weights, chosen))
        spread = torch.stack([parents[names[i]] for i in chosen]).std()
        generator = torch.Generator().manual_seed(noise_seed)
        prompt = mix + 0.1 * spread * torch.randn(mix.shape, generator=generator)
        heaviest = names[chosen[int(np.argmax(weights))]]
        library.add(
            name,
            prompt,
            source_task=task_of[heaviest],
            backbone=first.backbone,
            img_size=first.img_size,
            synthetic=True,
            extra={
                "parents": {names[i]: round(float(w), 6) for w, i in zip(weights, chosen)},
                "noise": "0.1 x the parents' std, torch.randn",
                "noise_seed": noise_seed,
                "made_by": "bench/bench_library_scale.py",
            },
        )
        made += 1
    return len(PromptLibrary(root)), made


def _processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, RSS bytes, command line) of every process, from /proc (Linux)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = dict(row.split(":", 1) for row in status.splitlines() if ":" in row)
        rss = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
        table[int(entry.name)] = (int(fields.get("PPid", "0")), rss, line)
    return table


class MemoryMonitor:
    """Peak RSS of this process and of every process below it (Ray's GCS, raylet and workers),
    sampled on a thread from /proc."""

    def __init__(self, interval: float = 0.25) -> None:
        import os

        self._root = os.getpid()
        self.interval = interval
        self.peaks: dict[int, tuple[int, str]] = {}
        self.peak_sum = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _label(self, pid: int, line: str) -> str:
        if pid == self._root:
            return "driver"
        if line.startswith("ray::"):
            return line.split()[0]
        for name in ("gcs_server", "raylet", "dashboard", "log_monitor", "monitor.py", "runtime_env"):
            if name in line:
                return name
        return line.split()[0].rsplit("/", 1)[-1] if line else "?"

    def _sample(self) -> None:
        table = _processes()
        tree, frontier = {self._root}, [self._root]
        children: dict[int, list[int]] = {}
        for pid, (parent, _, _) in table.items():
            children.setdefault(parent, []).append(pid)
        while frontier:
            for child in children.get(frontier.pop(), []):
                if child not in tree:
                    tree.add(child)
                    frontier.append(child)
        total = 0
        for pid in tree:
            if pid not in table:
                continue
            _, rss, line = table[pid]
            total += rss
            if rss > self.peaks.get(pid, (0, ""))[0]:
                self.peaks[pid] = (rss, self._label(pid, line))
        self.peak_sum = max(self.peak_sum, total)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._sample()
            except Exception:  # a process that vanished mid-listing: sample again
                pass
            self._stop.wait(self.interval)

    def __enter__(self) -> MemoryMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def summary(self) -> dict[str, Any]:
        driver = max((rss for rss, label in self.peaks.values() if label == "driver"), default=0)
        others = sorted(
            ((rss, label) for rss, label in self.peaks.values() if label != "driver"), reverse=True
        )
        return {
            "driver_gb": driver / GB,
            "largest_ray_process_gb": others[0][0] / GB if others else 0.0,
            "largest_ray_process": others[0][1] if others else "",
            "largest_process_gb": max(driver, others[0][0] if others else 0) / GB,
            "sum_gb": self.peak_sum / GB,
            "top": [(label, round(rss / GB, 3)) for rss, label in others[:5]],
        }


def run_one(args: argparse.Namespace, size: int, work: Path) -> dict[str, Any]:
    from hgprompt_ray.tuning import SearchSpec, run_search
    from hgprompt_ray.tuning.plan import plan_search

    library = work / "library"
    prompts, synthetic = build_library(ROOT / "prompt_zoo" / "offline", library, size, args.target, args.seed)
    subset = work / f"library-{size}"
    if subset.exists():
        shutil.rmtree(subset)
    subset.mkdir(parents=True)
    from hgprompt_ray.prompts import PromptLibrary

    zoo = PromptLibrary(ROOT / "prompt_zoo" / "offline").names
    names = [*zoo, *(f"synthetic-{index:03d}" for index in range(len(zoo), size))]
    spec = SearchSpec(target=args.target, library=str(library), sources=tuple(names))
    sources = len(plan_search(SearchSpec(**{**spec.__dict__, "output": str(subset / "plan")})).prompts)
    screen = args.screen_top if args.screen_top < sources else None
    cache = work / f"cache-{size}"
    shutil.rmtree(cache, ignore_errors=True)  # cold: nothing extracted before
    spec = SearchSpec(
        target=args.target,
        library=str(library),
        sources=tuple(names),
        samples=args.samples,
        gradient_samples=args.gradient_samples,
        num_samples=args.trials,
        max_concurrent=args.max_concurrent,
        screen_top=screen,
        max_prompts=min(args.max_prompts, screen or sources),
        seed=args.seed,
        cache_dir=str(cache),
        output=str(subset / "search"),
    )
    start = time.perf_counter()
    with MemoryMonitor() as monitor:
        result = run_search(spec, progress=False)
    wall = time.perf_counter() - start
    best = result.best
    shutil.rmtree(cache, ignore_errors=True)
    return {
        "K": size,
        "library_prompts": prompts,
        "synthetic": len([n for n in names if n.startswith("synthetic-")]),
        "sources": sources,
        "searched": len(best["screening"]["kept"]) if best.get("screening") else sources,
        "statistics": best["statistics"]["mode"] if best.get("statistics") else "?",
        "statistics_reason": best["statistics"]["reason"] if best.get("statistics") else "",
        "seconds": best["seconds"],
        "wall_s": wall,
        "memory": monitor.summary(),
        "best_metric": float(best[best["metric"]]),
        "best_subset": best["subset"],
        "forwards": best["extraction"]["stats"].get("image_prompt_forwards"),
        "screening_forwards": (best["extraction"].get("screening_stats") or {}).get("image_prompt_forwards"),
        "total_synthetic_in_library": synthetic,
    }


def growth(rows: list[dict[str, Any]], value: Any) -> float:
    """Exponent b of value ~ K^b between the two largest K of the screened runs."""
    screened = [r for r in rows if r["searched"] < r["sources"]]
    if len(screened) < 2:
        return math.nan
    a, b = screened[0], screened[-1]
    va, vb = value(a), value(b)
    if va <= 0 or vb <= 0:
        return math.nan
    return math.log(vb / va) / math.log(b["sources"] / a["sources"])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[11, 50, 100, 200])
    parser.add_argument("--target", default="count")
    parser.add_argument("--samples", type=int, default=500, help="N per split (val200 has 200)")
    parser.add_argument("--gradient-samples", type=int, default=64)
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--screen-top", type=int, default=32, help="K' kept by the screening")
    parser.add_argument("--max-prompts", type=int, default=16, help="largest M")
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="/tmp/hgprompt-library-scale", help="libraries, caches, searches")
    parser.add_argument("--smoke-test", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.smoke_test:
        args.sizes, args.samples, args.gradient_samples, args.trials, args.screen_top = [11, 14], 48, 12, 4, 6
    import ray
    import torch

    logging.basicConfig(level=logging.WARNING)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    rows = []
    try:
        for size in args.sizes:
            rows.append(run_one(args, size, work))
            row = rows[-1]
            print(
                f"K={size}: {row['wall_s']:.0f} s, statistics {row['statistics']}, "
                f"peak {row['memory']['largest_process_gb']:.2f} GB",
                file=sys.stderr,
                flush=True,
            )
    finally:
        ray.shutdown()
    from hgprompt_ray.models.precision import cpu_bf16_flags

    rule = "-" * 132
    header = (
        f"Library scale | target {args.target}, N = {args.samples} (train800) + 200 (val200), "
        f"{args.gradient_samples} gradient samples | screen top K'={args.screen_top} by H-score, "
        f"M <= {args.max_prompts} | {args.trials} trials, val-probe | {args.num_cpus} CPUs, torch "
        f"{torch.__version__}, bf16 flags {cpu_bf16_flags()}"
    )
    lines = [
        header,
        rule,
        f"{'K':>4} {'srcs':>5} {'kept':>5} {'stats':>10} {'extract s':>10} {'screen s':>9} {'grads s':>8} "
        f"{'stats s':>8} {'trials s':>9} {'cold s':>8} {'driver GB':>10} {'Ray max GB':>11} {'sum GB':>7} "
        f"{'best val':>9}",
    ]
    for r in rows:
        s, m = r["seconds"], r["memory"]
        lines.append(
            f"{r['K']:>4} {r['sources']:>5} {r['searched']:>5} {r['statistics']:>10} "
            f"{s.get('extraction', 0):>10.1f} {s.get('screening', 0):>9.1f} {s.get('gradients', 0):>8.1f} "
            f"{s.get('statistics', 0):>8.1f} {s.get('trials', 0):>9.1f} {r['wall_s']:>8.1f} "
            f"{m['driver_gb']:>10.2f} {m['largest_ray_process_gb']:>11.2f} {m['sum_gb']:>7.2f} {r['best_metric']:>9.3f}"
        )
    lines.append(rule)
    largest = rows[-1]
    peak = largest["memory"]["largest_process_gb"]
    cold = largest["wall_s"] / 60
    stats_b = growth(rows, lambda r: r["seconds"].get("statistics", 0))
    mem_b = growth(rows, lambda r: r["memory"]["largest_process_gb"])
    extract_b = growth(rows, lambda r: r["seconds"].get("extraction", 0))
    screen_b = growth(rows, lambda r: r["seconds"].get("screening", 0))

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    lines += [
        f"peak RSS of one process at K={largest['K']} [<= 6 GB]: {peak:.2f} GB "
        f"({largest['memory']['largest_ray_process'] or 'driver'}) {verdict(peak <= 6)}; "
        f"largest five: {largest['memory']['top']}",
        (
            f"growth exponents b (value ~ K^b) between the smallest and largest screened K "
            f"[statistics, memory <= 1]: statistics {stats_b:.2f} {verdict(not stats_b > 1.1)}, "
            f"peak memory {mem_b:.2f} {verdict(not mem_b > 1.1)}; extraction {extract_b:.2f}, screening {screen_b:.2f}"
            if np.isfinite(stats_b)
            else "growth exponents: not measured (fewer than two screened K in this run)"
        ),
        f"cold end to end at K={largest['K']} [<= 30 min]: {cold:.1f} min {verdict(cold <= 30)}",
        f"statistics choice at K={largest['K']}: {largest['statistics_reason']}",
        rule,
    ]
    print("\n".join(lines))
    if args.json:
        atomic_write_json(args.json, {"table": lines, "args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Zero-shot transfer matrix of a prompt library: Parquet + CSV + heatmap PNG.

    python launch/zero_shot.py --prompts prompt_zoo/offline --out prompt_zoo/offline/zero_shot
    python launch/zero_shot.py --targets svhn ./my_images --max-test 1000 --out results/zs

For every target (default: every source task of the library) and every source prompt, a linear
probe is fitted on the target's train800 features under that prompt (C chosen on val200) and
scored on val200 (``val_accuracy``: the column that methods such as Single-Best and PANDA choose
by) and on test (``test_accuracy``, a seeded subset of ``--max-test`` images when the test split is
larger: the ground truth of the report's Spearman table, read by no method). The bare backbone is
the row ``(none)``. ``--split-seeds 0 1 2 3 4`` computes the columns of several train800/val200
draws (the init-probe protocol's seeds) with each distinct image forwarded once. Finished targets
(and draws) are kept under ``OUT/parts/`` so an interrupted run resumes where it stopped. Each row
records its prompt file's sha256: when the library grows, or a prompt is retrained under the same
name, a rerun computes only the new or changed sources' rows.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from hgprompt_ray.atomic import atomic_path
from hgprompt_ray.config import PRECISIONS
from hgprompt_ray.data import readable_here, resolve_target
from hgprompt_ray.paths import DEFAULT_LIBRARY
from hgprompt_ray.prompts import open_library
from hgprompt_ray.transfer.screening import write_screen
from launch._cli import UsageError, cli_main, configure_logging


def write_heatmap(frame: pd.DataFrame, path: Path) -> None:
    """Rows: sources (+ '(none)'), columns: targets, colour: test accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = frame.pivot(index="source", columns="target", values="test_accuracy")
    order = [s for s in table.index if s != "(none)"] + (["(none)"] if "(none)" in table.index else [])
    table = table.loc[order]
    figure, axis = plt.subplots(figsize=(1.0 + 0.75 * table.shape[1], 1.0 + 0.5 * table.shape[0]))
    image = axis.imshow(table.to_numpy(), cmap="viridis", vmin=0, vmax=1)
    axis.set_xticks(range(table.shape[1]), table.columns, rotation=60, ha="right", fontsize=8)
    axis.set_yticks(range(table.shape[0]), table.index, fontsize=8)
    for i in range(table.shape[0]):
        for j in range(table.shape[1]):
            value = table.iat[i, j]
            axis.text(
                j,
                i,
                f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=6,
                color="white" if value < 0.6 else "black",
            )
    axis.set_xlabel("target task (linear probe on train800, test accuracy)")
    axis.set_ylabel("source prompt")
    figure.colorbar(image, ax=axis, fraction=0.03)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)


def _with_split_seed(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows from before the ``split_seed`` column were computed on split draw 0."""
    seeds = frame["split_seed"] if "split_seed" in frame else pd.Series(0, index=frame.index)
    return frame.assign(split_seed=seeds.fillna(0).astype(int))


def run(argv: list[str] | None = None) -> int:
    configure_logging(None, verbose=True)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", default=DEFAULT_LIBRARY, help="prompt library")
    parser.add_argument(
        "--targets", nargs="*", default=None, help="tasks, folders or CSVs (default: the sources)"
    )
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-test", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--split-seeds", "--split-seed", type=int, nargs="+", default=[0],
                        help="train800/val200 draws (several: each distinct image is forwarded once)")
    parser.add_argument("--precision", choices=list(PRECISIONS), default="auto",
                        help="network precision (auto: bf16 where the CPU or GPU runs it natively)")
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args(argv)
    library = open_library(args.prompts)
    records = library.records()
    if not records:
        raise UsageError(f"prompt library {library.root} is empty. Fix: train or import prompts first.")
    backbones = {(r.backbone, r.img_size) for r in records}
    if len(backbones) != 1:
        raise UsageError(
            f"prompt library {library.root} mixes backbones/image sizes {sorted(backbones)}. "
            "Fix: use a library of one backbone."
        )
    backbone, img_size = backbones.pop()
    targets = args.targets
    if not targets:  # the library's tasks that can be read here (a missing one's prompt stays a source)
        targets, unreadable = readable_here(sorted({r.source_task for r in records}), data_root=args.data_root)
        for name, reason in unreadable.items():
            logging.warning("%s has no column: its data is not here (%s)", name, reason)
        if not targets:
            raise UsageError(f"no task of {library.root} can be read here: {unreadable}. "
                             "Fix: install the tasks' data (or --data-root), or pass --targets.")  # fmt: skip
    for target in targets:
        task = resolve_target(target, data_root=args.data_root)
        available, reason = task.availability()
        if not available:
            raise UsageError(f"target {target!r} is not available: {reason}")

    from hgprompt_ray.models import PromptedViT, load_backbone
    from hgprompt_ray.transfer.zero_shot import NO_PROMPT, current_rows, stale_rows, zero_shot_draws

    out = Path(args.out)
    parts = out / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    names = library.names
    model_backbone = load_backbone(backbone, img_size)
    prompts = library.load_many(names, backbone=backbone, embed_dim=model_backbone.embed_dim)
    model = PromptedViT(model_backbone, num_prompt_tokens=prompts.shape[1]).eval()
    checksums = {r.name: r.sha256 for r in records}
    for target in targets:
        part = parts / f"{resolve_target(target, data_root=args.data_root).info.name}.parquet"
        done = _with_split_seed(pd.read_parquet(part)) if part.is_file() else pd.DataFrame()
        sources, seeds = stale_rows(done, checksums, args.split_seeds)
        if not seeds:
            logging.info("skipping %s (done: %s)", target, part)
            continue
        logging.info("%s: %d of %d sources on split draws %s", target, len(sources), len(names), seeds)
        index = [names.index(n) for n in sources]
        rows = zero_shot_draws(model, prompts[index], sources, target, img_size=img_size, split_seeds=seeds,
                               max_test=args.max_test, batch_size=args.batch_size, data_root=args.data_root,
                               precision=args.precision)  # fmt: skip
        new = pd.DataFrame(rows).assign(sha256=lambda f: f["source"].map(checksums).fillna(""))
        if not done.empty:  # the recomputed (source, draw) rows replace their old ones
            done = done[~(done["split_seed"].isin(seeds) & done["source"].isin([*sources, NO_PROMPT]))]
        with atomic_path(part) as tmp:
            pd.concat([done, new], ignore_index=True).to_parquet(tmp, index=False)
    frame = pd.concat([_with_split_seed(pd.read_parquet(p)) for p in sorted(parts.glob("*.parquet"))],
                      ignore_index=True)  # fmt: skip
    frame = frame[current_rows(frame, checksums)]  # parts keep rows of prompts since removed or retrained
    with atomic_path(out / "zero_shot.parquet") as tmp:
        frame.to_parquet(tmp, index=False)
    with atomic_path(out / "zero_shot.csv") as tmp:
        frame.to_csv(tmp, index=False)
    screen = write_screen(frame, {r.name: r.source_task for r in records}, out)
    first = frame[frame["split_seed"] == args.split_seeds[0]]  # the heatmap and the printout: one draw
    write_heatmap(first, out / "zero_shot.png")
    for column in ("val_accuracy", "test_accuracy"):
        print(f"{column} (rows: source prompts, columns: targets; split seed {args.split_seeds[0]})")
        print(first.pivot(index="source", columns="target", values=column).round(3).to_string())
    if not screen.empty:
        print("the targets' screen (eligible sources' zero-shot test spread, points; screen.md says how)")
        print(screen.round(1).to_string())
    print(f"wrote {out / 'zero_shot.parquet'}, {out / 'zero_shot.csv'}, {out / 'zero_shot.png'}, {out / 'screen.csv'}")
    return 0


main = cli_main(run)

if __name__ == "__main__":
    raise SystemExit(main())

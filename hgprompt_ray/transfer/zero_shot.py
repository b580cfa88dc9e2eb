"""The zero-shot transfer matrix: how well each source prompt's features serve each target.

For a target and a source prompt P_i: extract CLS features of the target's train800, val200 and
test images under P_i (all prompts of the library in one K-prompt pass per batch), fit a linear
probe on train800 (C chosen on val200) and report its test accuracy. The bare backbone (no
prompt) is included as the reference row ``(none)``. This matrix is the ground truth against which
ensemble weights are judged (Spearman correlation of alpha with zero-shot accuracy).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Subset

from hgprompt_ray.models import PromptedViT, load_backbone
from hgprompt_ray.models.features import extract_cls_features
from hgprompt_ray.models.precision import autocast
from hgprompt_ray.prompts import PromptLibrary
from hgprompt_ray.transfer.linear_probe import linear_probe
from hgprompt_ray.transfer.splits import load_transfer_splits

__all__ = ["NO_PROMPT", "current_rows", "distinct_images", "evaluation_columns", "matrix_files", "stale_rows", "zero_shot_draws", "zero_shot_matrix", "zero_shot_target"]

logger = logging.getLogger(__name__)
NO_PROMPT = "(none)"


def distinct_images(draws: Sequence[Mapping[str, Any]]) -> tuple[list[tuple[Any, int]], list[dict[str, np.ndarray]]]:
    """Every distinct image of several split draws once, and where each split's images are in it.

    The splits of seeded draws of one pool overlap (five draws of a 2,000-image pool hold 7,500
    images, of at most 2,000 distinct ones); an image is its raw pixels (size, mode and bytes).

    Args:
        draws: per draw, split name -> an ``ImageSplit`` (or a ``Subset`` of one).

    Returns:
        (picks, positions): ``picks[u]`` = (split, index) to load distinct image u from;
        ``positions[k][name]`` = the distinct-image positions of draw k's split ``name``, in order.
    """
    picks: list[tuple[Any, int]] = []
    seen: dict[tuple[Any, ...], int] = {}
    positions = []
    for draw in draws:
        where: dict[str, np.ndarray] = {}
        for name, dataset in draw.items():
            base, indices = (dataset.dataset, list(dataset.indices)) if isinstance(dataset, Subset) else (dataset, range(len(dataset)))
            found = []
            for index in indices:
                image = base.image(index)
                key = (image.size, image.mode, hashlib.blake2b(image.tobytes(), digest_size=16).digest())
                if key not in seen:
                    seen[key] = len(picks)
                    picks.append((base, int(index)))
                found.append(seen[key])
            where[name] = np.asarray(found, dtype=np.int64)
        positions.append(where)
    return picks, positions


class _Picked(Dataset):
    """The distinct images, each under its split's transform (labels unused)."""

    def __init__(self, picks: list[tuple[Any, int]]) -> None:
        self.picks = picks

    def __len__(self) -> int:
        return len(self.picks)

    def __getitem__(self, position: int) -> tuple[Any, int]:
        split, index = self.picks[position]
        image = split.image(index)
        return (split.transform(image) if split.transform else image), 0


def zero_shot_draws(
    model: PromptedViT,
    prompts: torch.Tensor,
    names: Sequence[str],
    target: str,
    *,
    img_size: int,
    split_seeds: Sequence[int] = (0,),
    max_test: int | None = None,
    batch_size: int = 32,
    data_root: str | None = None,
    precision: str = "fp32",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Rows (source, target, test_accuracy, val_accuracy, c, num_test, split_seed, precision) for
    one target on each split draw in ``split_seeds``: every distinct image of the draws is passed
    through the network once (:func:`distinct_images`), under all K prompts and with none.

    Shape:
        prompts: (K, m, d), in the order of ``names``.
    """
    start = time.perf_counter()
    mean, std = model.backbone.pretrained_cfg["mean"], model.backbone.pretrained_cfg["std"]
    draws, labels, task = [], [], None
    for seed in split_seeds:
        task, splits, split_labels = load_transfer_splits(target, img_size=img_size, mean=mean, std=std,
                                                          split_seed=seed, max_test=max_test, data_root=data_root,
                                                          splits=("train800", "val200", "test"))  # fmt: skip
        draws.append(splits)
        labels.append(split_labels)
    picks, positions = distinct_images(draws)
    images = _Picked(picks)
    bare = PromptedViT(model.backbone, num_prompt_tokens=0).eval()
    device = next(model.parameters()).device
    with autocast(precision, device) as resolved:
        features = extract_cls_features(model, images, prompts=prompts, batch_size=batch_size,
                                        progress=progress, description=f"{task.name}: {len(images)} images")  # fmt: skip
        bare_features = extract_cls_features(bare, images, batch_size=batch_size)
    rows = []
    for seed, where, split_labels in zip(split_seeds, positions, labels):
        for index, name in enumerate([*names, NO_PROMPT]):
            pick = bare_features if name == NO_PROMPT else features[index]
            result = linear_probe(*[(pick[where[s]], split_labels[s]) for s in ("train800", "val200", "test")])
            rows.append({"source": name, "target": task.name, "test_accuracy": result.test_accuracy,
                         "val_accuracy": result.val_accuracy, "c": result.c,
                         "num_test": int(len(split_labels["test"])), "split_seed": int(seed),
                         "precision": resolved})  # fmt: skip
    total = sum(len(w) for draw in positions for w in draw.values())
    logger.info("zero-shot %s: %d sources x %d draws in %.0f s (%d distinct images of %d)", task.name, len(names),
                len(split_seeds), time.perf_counter() - start, len(images), total)  # fmt: skip
    return rows


def matrix_files(matrix: Path) -> list[Path]:
    """The files that hold a zero-shot matrix: ``matrix`` itself (a library's
    ``zero_shot/zero_shot.parquet``) and the per-target ``parts/*.parquet`` beside it, which
    ``launch/zero_shot.py`` writes as it goes (a run still going or stopped has only those), in that
    order; those that exist."""
    files = [matrix, *sorted((matrix.parent / "parts").glob("*.parquet"))]
    return [f for f in files if f.is_file()]


def read_matrix(matrix: Path, checksums: Mapping[str, str], extra: Sequence[Path] = ()) -> pd.DataFrame:
    """A library's zero-shot matrix as one frame (empty when it has no file): the rows of
    :func:`matrix_files`, ``split_seed`` filled in (absent: draw 0), the newest row per (source,
    target, draw, test size) among those that still describe the library (:func:`current_rows`
    with ``checksums``, name -> sha256), since a part is newer than the matrix. The report's
    screen and ``--leave-one-out``'s order both read it, so they agree.

    ``extra``: more column files, read the same way (an evaluation's own, :func:`evaluation_columns`);
    their rows fill only the (target, draw) pairs that the matrix's files lack: where both have a
    pair, the matrix's rows win. Every row names the file it came from (column ``file``)."""
    files, extra = matrix_files(matrix), [f for f in extra if f.is_file()]
    frames = [_current(files, checksums)] if files else []
    if extra:
        own = _current(extra, checksums)
        if frames:
            covered = pd.MultiIndex.from_frame(frames[0][["target", "split_seed"]].drop_duplicates())
            own = own[~pd.MultiIndex.from_frame(own[["target", "split_seed"]]).isin(covered)]
        frames.append(own)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _current(files: Sequence[Path], checksums: Mapping[str, str]) -> pd.DataFrame:
    """The rows of ``files`` (later files newer) that still describe the library, newest per key."""
    rows = pd.concat([pd.read_parquet(f).assign(file=str(f)) for f in files], ignore_index=True)
    rows = rows.assign(split_seed=rows["split_seed"].fillna(0) if "split_seed" in rows else 0)
    key = ["source", "target", "split_seed", *(["num_test"] if "num_test" in rows else [])]
    return rows[current_rows(rows, checksums)].drop_duplicates(key, keep="last").reset_index(drop=True)


def evaluation_columns(output: Path) -> list[Path]:
    """The zero-shot columns an evaluation computed itself, ``OUTPUT/zero_shot/<tag>.parquet``
    (``method_weights``: a target the library's matrix lacks, or a draw beyond its own), in name order."""
    return sorted((Path(output) / "zero_shot").glob("*.parquet"))


def current_rows(frame: pd.DataFrame, checksums: Mapping[str, str]) -> pd.Series:
    """Which rows still describe the library: the bare backbone's, and those of its prompts whose
    recorded ``sha256`` is the file's (rows from before the column, with none, count as current)."""
    recorded = frame["sha256"] if "sha256" in frame else pd.Series(np.nan, index=frame.index, dtype=object)
    current = frame["source"].map(checksums)
    return (frame["source"] == NO_PROMPT) | (current.notna() & (recorded.isna() | (recorded == current)))


def stale_rows(done: pd.DataFrame, checksums: Mapping[str, str], split_seeds: Sequence[int]) -> tuple[list[str], list[int]]:
    """What a target's rows lack for a library: ``(sources, split seeds)`` to compute.

    A source is missing on a draw when it has no row there, or when its row records a ``sha256``
    other than the library's file (the prompt was retrained under the same name). Rows written
    before the ``sha256`` column are kept as they are: nothing says what they were computed from.
    The bare backbone's row (``NO_PROMPT``) comes with every computation; a draw that lacks only it
    is computed again with every source.

    Args:
        done: the rows so far (columns ``source, split_seed`` and, when recorded, ``sha256``).
        checksums: the library's prompts, name -> sha256 of the file.
        split_seeds: the draws asked for.

    Returns:
        The sources missing on any of the returned draws (in ``checksums``' order) and those draws.
    """
    names, seeds, wanted = list(checksums), [], set()
    for seed in dict.fromkeys(split_seeds):
        valid, bare = set(), False
        if not done.empty:
            rows = done[done["split_seed"] == seed]
            valid = set(rows.loc[current_rows(rows, checksums), "source"])
            bare = bool((rows["source"] == NO_PROMPT).any())
        lacking = [n for n in names if n not in valid]
        if lacking or not bare:
            seeds.append(int(seed))
            wanted.update(lacking or names)
    return [n for n in names if n in wanted], seeds


def zero_shot_target(
    model: PromptedViT,
    prompts: torch.Tensor,
    names: Sequence[str],
    target: str,
    *,
    split_seed: int = 0,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """:func:`zero_shot_draws` on one split draw."""
    return zero_shot_draws(model, prompts, names, target, split_seeds=(split_seed,), **kwargs)


def zero_shot_matrix(
    library: PromptLibrary,
    targets: Sequence[str],
    *,
    backbone: str,
    img_size: int,
    sources: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Rows of the full matrix: every source prompt (and no prompt) on every target."""
    names = list(sources or library.names)
    model_backbone = load_backbone(backbone, img_size)
    prompts = library.load_many(names, backbone=backbone, embed_dim=model_backbone.embed_dim)
    model = PromptedViT(model_backbone, num_prompt_tokens=prompts.shape[1]).eval()
    rows: list[dict[str, Any]] = []
    for target in targets:
        rows.extend(zero_shot_target(model, prompts, names, target, img_size=img_size, **kwargs))
    return rows

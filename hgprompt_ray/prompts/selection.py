"""Which prompts of a library are a target's sources: the one place that decides it.

Rules, in order: the library must be intact (checksums); the prompt trained on the target itself
is left out unless asked, and so are prompts trained on a task that draws on the same images
under another labelling (``related``: the caller passes ``data.related_tasks(target)``; such a
prompt has seen the target's images, so transfer from it would leak); ``sources`` restricts the set by name; every source must share one
backbone and one image size (taken from the library when not given). The messages name the
command-line flags (``--prompts``, ``--sources``, ``--backbone``, ``--img-size``) because every
command reaches this function with them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hgprompt_ray.errors import IntegrityError, InvalidValueError
from hgprompt_ray.prompts.library import MANIFEST_NAME, PromptLibrary, PromptRecord

__all__ = ["LibrarySelection", "open_library", "select_sources"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LibrarySelection:
    """The sources chosen for one target.

    Attributes:
        library: the library folder (resolved).
        records: the chosen prompts, in library order.
        backbone: their common backbone.
        img_size: their common image size.
        left_out: prompts dropped because they were trained on the target itself or on a task
            with the same images (``related``).
    """

    library: Path
    records: tuple[PromptRecord, ...]
    backbone: str
    img_size: int
    left_out: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """The chosen prompts' names."""
        return tuple(r.name for r in self.records)

    @property
    def num_tokens(self) -> int:
        """Their prompt length m."""
        return int(self.records[0].num_tokens)


def open_library(path: str | Path) -> PromptLibrary:
    """A verified library, or an InvalidValueError naming ``--prompts`` and the fix."""
    root = Path(path).expanduser()
    if not (root / MANIFEST_NAME).is_file():
        raise InvalidValueError(
            f"--prompts {root} is not a prompt library (no manifest.json). Fix: pass a folder made by "
            "launch/train_sources.py or 'python -m hgprompt_ray.prompts import'."
        )
    library = PromptLibrary(root)
    problems = library.verify()
    if problems:
        raise IntegrityError(f"prompt library {root} is damaged: {problems[0]}")
    return library


def select_sources(
    library: PromptLibrary,
    target_name: str,
    *,
    sources: Sequence[str] | None = None,
    include_target_prompt: bool = False,
    backbone: str | None = None,
    img_size: int | None = None,
    related: Sequence[str] = (),
) -> LibrarySelection:
    """The target's sources (module docstring); raises InvalidValueError with the fix.

    Args:
        library: an opened library (see :func:`open_library`).
        target_name: the resolved target's registry name.
        sources: restrict to these prompt names (None: all).
        include_target_prompt: keep prompts trained on the target itself.
        backbone: required backbone (None: the library's only one).
        img_size: required image size (None: the prompts' only one).
        related: tasks that share the target's images under other labels; their prompts are
            left out with the target's own (``include_target_prompt`` keeps both).
    """
    root = library.root
    records = library.records()
    left_out: tuple[str, ...] = ()
    if not include_target_prompt:
        own = [r.name for r in records if r.source_task == target_name]
        same_images = [r.name for r in records if r.source_task in set(related)]
        left_out = tuple(own + same_images)
        records = [r for r in records if r.name not in set(left_out)]
        if own:
            logger.info(
                "leaving out %s: trained on the target itself (--include-target-prompt keeps it)", own
            )
        if same_images:
            logger.info(
                "leaving out %s: trained on the target's images under another labelling "
                "(--include-target-prompt keeps them)",
                same_images,
            )
    if sources is not None:
        unknown = sorted(set(sources) - set(library.names))
        if unknown:
            raise InvalidValueError(
                f"--sources {unknown} are not in prompt library {root}. Fix: choose from {library.names}."
            )
        records = [r for r in records if r.name in set(sources)]
    if len(records) < 2:
        raise InvalidValueError(
            f"prompt library {root} has {len(records)} usable prompt(s) for target {target_name!r}; "
            "an ensemble needs at least 2. Fix: add prompts (python -m hgprompt_ray.prompts import ...)."
        )
    backbones = {r.backbone for r in records}
    chosen = backbone or (backbones.pop() if len(backbones) == 1 else None)
    if chosen is None:
        raise InvalidValueError(
            f"prompt library {root} mixes backbones {sorted(backbones)}. Fix: pass --backbone."
        )
    records = [r for r in records if r.backbone == chosen]
    if len(records) < 2:
        raise InvalidValueError(
            f"prompt library {root} has {len(records)} prompt(s) for backbone {chosen!r}. "
            f"Fix: pass --backbone with one of {sorted({r.backbone for r in library.records()})}."
        )
    sizes = {r.img_size for r in records}
    size = img_size or (sizes.pop() if len(sizes) == 1 else None)
    if size is None or any(r.img_size != size for r in records):
        raise InvalidValueError(
            f"the prompts were trained at image sizes {sorted({r.img_size for r in records})}, "
            f"not all at --img-size {img_size}. Fix: pass matching prompts or --img-size."
        )
    return LibrarySelection(root.resolve(), tuple(records), chosen, int(size), left_out)

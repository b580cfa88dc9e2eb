"""The prompt library: a folder of safetensors prompt files and a JSON manifest.

Layout::

    LIBRARY/
        manifest.json          # {"schema_version": 2, "prompts": [PromptRecord, ...]}
        <name>.safetensors     # one tensor "prompt" of shape (m, d), float32

Every write (prompt file, then manifest) is atomic, and a lock file serialises concurrent
writers, so a crash or a failed import never leaves a half-written library. Nothing is
unpickled: prompts are safetensors, the manifest is JSON (its schema, versions and migration:
:mod:`hgprompt_ray.prompts.manifest`). Loading verifies the file's size and SHA-256 against the
manifest and checks m and d (and, when given, the backbone) against the caller's expectations.
Whole libraries travel to and from any ``pyarrow.fs`` location with :meth:`PromptLibrary.export`
and :meth:`PromptLibrary.import_` (:mod:`hgprompt_ray.prompts.sharing`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file

from hgprompt_ray.atomic import atomic_path, atomic_write_json
from hgprompt_ray.errors import IntegrityError, InvalidValueError, invalid_value
from hgprompt_ray.hashing import sha256_file
from hgprompt_ray.prompts.files import (
    TENSOR_KEY,
    check_compatible,
    check_prompt_name,
    checked_prompt_tensor,
    load_checked,
)
from hgprompt_ray.prompts.manifest import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    PromptRecord,
    manifest_payload,
    manifest_version,
    parse_manifest,
    validate_manifest,
)

if TYPE_CHECKING:
    from hgprompt_ray.prompts.selection import LibrarySelection

__all__ = ["MANIFEST_NAME", "SCHEMA_VERSION", "PromptLibrary", "PromptRecord"]

logger = logging.getLogger(__name__)


class PromptLibrary:
    """A prompt library on disk.

    Args:
        root: the library folder.
        create: create an empty library if the folder has none; otherwise a missing manifest
            is an error.
    """

    def __init__(self, root: str | Path, create: bool = False) -> None:
        self.root = Path(root).expanduser()
        self.manifest_path = self.root / MANIFEST_NAME
        if not self.manifest_path.is_file():
            if not create:
                raise FileNotFoundError(
                    f"No prompt library at {self.root} ({MANIFEST_NAME} is missing). Fix: check the "
                    "path, or create one with PromptLibrary(path, create=True) / "
                    "'python -m hgprompt_ray.prompts import'."
                )
            with self._locked():
                if not self.manifest_path.is_file():
                    atomic_write_json(self.manifest_path, manifest_payload([]))
        self._records = self._read_manifest()

    # ------------------------------------------------------------------ manifest
    def _file_size(self, file: str) -> int | None:
        path = self.root / file
        return path.stat().st_size if "/" not in file and path.is_file() else None

    def _read_manifest(self) -> dict[str, PromptRecord]:
        """The records, migrated in memory from an older version and checked against the schema."""
        return parse_manifest(self.manifest_path.read_bytes(), str(self.manifest_path), self._file_size)

    def _write_manifest(self, records: dict[str, PromptRecord]) -> None:
        payload = manifest_payload(records.values())
        validate_manifest(payload, str(self.manifest_path))  # never write what a reader would refuse
        atomic_write_json(self.manifest_path, payload)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def migrate(self) -> int:
        """Rewrite the manifest in the current schema version, after checking every prompt.

        Returns:
            The version the manifest had (nothing is written when it is already current).

        Raises:
            IntegrityError: a prompt is missing or damaged (the message names it); nothing written.
        """
        with self._locked():
            self._records = self._read_manifest()  # a manifest that is not JSON fails here, clearly
            version = manifest_version(json.loads(self.manifest_path.read_bytes()), str(self.manifest_path))
            problems = self.verify()
            if problems:
                raise IntegrityError(
                    f"{self.root} cannot be migrated: {problems[0]}. Fix: repair or remove that prompt first "
                    "(python -m hgprompt_ray.prompts verify / remove)."
                )
            if version < SCHEMA_VERSION:
                self._write_manifest(self._records)
                logger.info(
                    "Migrated %s from schema version %d to %d", self.manifest_path, version, SCHEMA_VERSION
                )
        return version

    def refresh(self) -> None:
        """Re-read the manifest (another process may have written it)."""
        self._records = self._read_manifest()

    # ------------------------------------------------------------------ queries
    @property
    def names(self) -> list[str]:
        """Prompt names, sorted."""
        return sorted(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, name: object) -> bool:
        return name in self._records

    def records(self) -> list[PromptRecord]:
        """All manifest entries, sorted by name."""
        return [self._records[name] for name in self.names]

    def record(self, name: str) -> PromptRecord:
        """The manifest entry of ``name``."""
        if name not in self._records:
            raise KeyError(
                f"No prompt named {name!r} in {self.root}. Known: {self.names or 'none'}. Fix: use one "
                "of those names or import the prompt first."
            )
        return self._records[name]

    # ------------------------------------------------------------------ writes
    def add(
        self,
        name: str,
        prompt: torch.Tensor,
        *,
        source_task: str,
        backbone: str,
        img_size: int,
        source_accuracy: float | None = None,
        extra: dict[str, Any] | None = None,
        overwrite: bool = False,
        synthetic: bool = False,
    ) -> PromptRecord:
        """Write a prompt file and its manifest entry atomically.

        Args:
            name: unique name; letters, digits, '.', '_', '-'.
            prompt: the prompt tokens.
            source_task: the task it was trained on.
            backbone: the backbone name it was trained with.
            img_size: the image size it was trained at.
            source_accuracy: accuracy on the source task, if known.
            extra: JSON-serialisable metadata (seed, command, ...; a synthetic prompt's parents).
            overwrite: replace an existing prompt of the same name instead of raising.
            synthetic: the prompt was made by mixing and perturbing other prompts (the scale
                bench), not trained on ``source_task``.

        Shape:
            prompt: (m, d) or (1, m, d).
        """
        check_prompt_name(name)
        tensor = checked_prompt_tensor(prompt, f"prompt {name!r}")
        if source_accuracy is not None and not (
            isinstance(source_accuracy, (int, float)) and 0.0 <= source_accuracy <= 1.0
        ):
            raise InvalidValueError(
                invalid_value(
                    "source_accuracy", source_accuracy, "must be in [0, 1] or None", "Pass a fraction."
                )
            )
        if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size <= 0:
            raise InvalidValueError(invalid_value("img_size", img_size, "must be a positive integer", ""))
        for what, text in (("source_task", source_task), ("backbone", backbone)):
            if not isinstance(text, str) or not text:
                raise InvalidValueError(invalid_value(what, text, "must be a non-empty string", ""))
        if not isinstance(synthetic, bool):
            raise TypeError(invalid_value("synthetic", synthetic, "must be True or False", ""))
        if extra is not None and not isinstance(extra, dict):
            raise TypeError(invalid_value("extra", type(extra).__name__, "must be a dict or None", ""))
        json.dumps(extra or {})  # fail before writing anything if extra is not serialisable
        with self._locked():
            records = self._read_manifest()
            if name in records and not overwrite:
                raise InvalidValueError(
                    invalid_value(
                        "name",
                        name,
                        f"must be unique in {self.root}",
                        "Choose another name, remove the old prompt, or pass overwrite=True.",
                    )
                )
            path = self.root / f"{name}.safetensors"
            with atomic_path(path) as tmp:
                save_file(
                    {TENSOR_KEY: tensor},
                    str(tmp),
                    metadata={"name": name, "source_task": source_task, "backbone": backbone},
                )
                checksum, size = sha256_file(tmp), tmp.stat().st_size
            record = PromptRecord(
                name=name,
                file=path.name,
                source_task=source_task,
                backbone=backbone,
                num_tokens=int(tensor.shape[0]),
                embed_dim=int(tensor.shape[1]),
                img_size=img_size,
                source_accuracy=None if source_accuracy is None else float(source_accuracy),
                sha256=checksum,
                created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                file_size=size,
                synthetic=synthetic,
                extra=dict(extra or {}),
            )
            records[name] = record
            self._write_manifest(records)
            self._records = records
        logger.info("Added prompt %s (%d x %d) to %s", name, record.num_tokens, record.embed_dim, self.root)
        return record

    def adopt(
        self, files: Sequence[tuple[PromptRecord, Path]], *, overwrite: bool = False
    ) -> list[PromptRecord]:
        """Move checked prompt files into the library with their records, in one manifest write.

        Args:
            files: (record, file) pairs; each file is already checked against its record and
                lies in this library's folder (a temporary name), so the move is a rename.
            overwrite: replace a prompt of the same name and other contents instead of raising.

        Returns:
            The records added or replaced (a prompt already here with the same SHA-256 is kept;
            its file is left where it was given, for the caller to delete).
        """
        with self._locked():
            records = self._read_manifest()
            clashes = [r.name for r, _ in files if r.name in records and records[r.name].sha256 != r.sha256]
            if clashes and not overwrite:
                raise InvalidValueError(
                    invalid_value(
                        "names",
                        clashes,
                        f"must not name other prompts already in {self.root}",
                        "Pass overwrite=True (--overwrite) to replace them, or leave them out (--names).",
                    )
                )
            changed = []
            for record, path in files:
                if record.name in records and records[record.name].sha256 == record.sha256:
                    continue
                record = dataclasses.replace(record, file=f"{record.name}.safetensors")
                taken = [r.name for r in records.values() if r.file == record.file and r.name != record.name]
                if taken:
                    raise IntegrityError(
                        f"{self.manifest_path}: prompt {taken[0]!r} uses the file {record.file}. "
                        f"Fix: rename or remove {taken[0]!r} before importing {record.name!r}."
                    )
                os.replace(path, self.root / record.file)
                records[record.name] = record
                changed.append(record)
            self._write_manifest(records)
            self._records = records
        return changed

    def export(self, uri: str, *, filesystem: Any = None, overwrite: bool = False) -> list[PromptRecord]:
        """Copy the whole library to ``uri`` (a folder, ``file://``, ``s3://`` ... any ``pyarrow.fs``
        location): :func:`hgprompt_ray.prompts.sharing.export_library`."""
        from hgprompt_ray.prompts.sharing import export_library

        return export_library(self, uri, filesystem=filesystem, overwrite=overwrite)

    @classmethod
    def import_(
        cls,
        uri: str,
        dest: str | Path,
        *,
        filesystem: Any = None,
        names: Sequence[str] | None = None,
        overwrite: bool = False,
    ) -> PromptLibrary:
        """Bring the library at ``uri`` (or its prompts ``names``) into the library ``dest``
        (created if absent): :func:`hgprompt_ray.prompts.sharing.import_library`."""
        from hgprompt_ray.prompts.sharing import import_library

        import_library(uri, dest, filesystem=filesystem, names=names, overwrite=overwrite)
        return cls(dest)

    def remove(self, name: str) -> None:
        """Remove a prompt's manifest entry, then its file."""
        with self._locked():
            records = self._read_manifest()
            if name not in records:
                raise KeyError(
                    f"No prompt named {name!r} in {self.root}. Known: {sorted(records) or 'none'}."
                )
            record = records.pop(name)
            self._write_manifest(records)
            self._records = records
            (self.root / record.file).unlink(missing_ok=True)

    # ------------------------------------------------------------------ reads
    def load(
        self,
        name: str,
        *,
        backbone: str | None = None,
        embed_dim: int | None = None,
        num_tokens: int | None = None,
    ) -> torch.Tensor:
        """Load one prompt after verifying its checksum, shape and compatibility.

        Args:
            name: the prompt's name.
            backbone: if given, the prompt must have been trained with this backbone.
            embed_dim: if given, d must equal it (the backbone's width).
            num_tokens: if given, m must equal it.

        Shape:
            returns: (m, d) float32.
        """
        record = self.record(name)
        path = self.root / record.file
        if not path.is_file():
            raise FileNotFoundError(
                f"Prompt file {path} (prompt {name!r}) is missing. Fix: restore the file or run "
                f"'python -m hgprompt_ray.prompts remove {self.root} {name}'."
            )
        tensor = load_checked(path, record)
        check_compatible(record, path, backbone=backbone, embed_dim=embed_dim, num_tokens=num_tokens)
        return tensor

    def load_many(
        self,
        names: Sequence[str],
        *,
        backbone: str | None = None,
        embed_dim: int | None = None,
    ) -> torch.Tensor:
        """Load several prompts of equal m and stack them.

        Shape:
            returns: (K, m, d) float32.
        """
        if not names:
            raise InvalidValueError(invalid_value("names", list(names), "must name at least one prompt", ""))
        tensors = [self.load(n, backbone=backbone, embed_dim=embed_dim) for n in names]
        lengths = {t.shape[0] for t in tensors}
        if len(lengths) != 1:
            raise InvalidValueError(
                invalid_value(
                    "names",
                    list(names),
                    f"must all have the same number of tokens to be stacked (got m in {sorted(lengths)})",
                    "Select prompts of one length.",
                )
            )
        return torch.stack(tensors)

    def select(self, target_name: str, **options: Any) -> LibrarySelection:
        """The sources for ``target_name``: see :func:`hgprompt_ray.prompts.selection.select_sources`."""
        from hgprompt_ray.prompts.selection import select_sources

        return select_sources(self, target_name, **options)

    def verify(self) -> list[str]:
        """Check every prompt (file present, checksum, readable, shape).

        Returns:
            One line per problem; an empty list when the library is sound.
        """
        problems: list[str] = []
        for name in self.names:
            try:
                tensor = self.load(name)
            except (FileNotFoundError, IntegrityError, InvalidValueError) as error:
                problems.append(f"{name}: {error}")
                continue
            if not torch.isfinite(tensor).all():
                problems.append(f"{name}: holds non-finite values")
        known = {record.file for record in self._records.values()}
        for stray in sorted(self.root.glob("*.safetensors")):
            if stray.name not in known:
                problems.append(f"{stray.name}: file not in the manifest (import it or delete it)")
        return problems

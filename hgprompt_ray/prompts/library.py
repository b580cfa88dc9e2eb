"""The prompt library: a folder of safetensors prompt files and a JSON manifest.

Layout::

    LIBRARY/
        manifest.json          # {"schema_version": 1, "prompts": [PromptRecord, ...]}
        <name>.safetensors     # one tensor "prompt" of shape (m, d), float32

Every write (prompt file, then manifest) is atomic, and a lock file serialises concurrent
writers, so a crash or a failed import never leaves a half-written library. Nothing is
unpickled: prompts are safetensors, the manifest is JSON. Loading verifies the file's SHA-256
against the manifest and checks m and d (and, when given, the backbone) against the caller's
expectations.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hgprompt_ray.atomic import atomic_path, atomic_write_json
from hgprompt_ray.errors import IntegrityError, InvalidValueError, invalid_value
from hgprompt_ray.hashing import sha256_file

if TYPE_CHECKING:
    from hgprompt_ray.prompts.selection import LibrarySelection

__all__ = ["MANIFEST_NAME", "SCHEMA_VERSION", "PromptLibrary", "PromptRecord"]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
_TENSOR_KEY = "prompt"
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class PromptRecord:
    """One prompt's manifest entry.

    Attributes:
        name: unique name in the library (also the file stem).
        file: file name relative to the library folder.
        source_task: the task the prompt was trained on.
        backbone: backbone name it was trained with (see ``load_backbone``).
        num_tokens: m.
        embed_dim: d.
        img_size: image size it was trained at.
        source_accuracy: its accuracy on the source task's test split, or None if unknown.
        sha256: checksum of the file.
        created: ISO-8601 UTC timestamp.
        extra: free-form metadata (training seed, command, epochs ...), JSON-serialisable.
    """

    name: str
    file: str
    source_task: str
    backbone: str
    num_tokens: int
    embed_dim: int
    img_size: int
    source_accuracy: float | None
    sha256: str
    created: str
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, entry: dict[str, Any], manifest: Path) -> PromptRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(n for n in names - set(entry) if n != "extra")
        if missing:
            raise IntegrityError(
                f"{manifest}: the entry {entry.get('name', entry)!r} lacks {missing}. Fix: restore "
                "the manifest from a backup or re-import the prompt."
            )
        return cls(**{k: v for k, v in entry.items() if k in names})


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise InvalidValueError(
            invalid_value(
                "name",
                name,
                "must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit",
                "Rename the prompt, e.g. 'digits-seed0'.",
            )
        )


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
                    atomic_write_json(self.manifest_path, {"schema_version": SCHEMA_VERSION, "prompts": []})
        self._records = self._read_manifest()

    # ------------------------------------------------------------------ manifest
    def _read_manifest(self) -> dict[str, PromptRecord]:
        try:
            payload = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise IntegrityError(
                f"{self.manifest_path} is not valid JSON ({error}). Fix: restore it from a backup; "
                "prompt files are intact and can be re-imported."
            ) from error
        version = payload.get("schema_version") if isinstance(payload, dict) else None
        if version != SCHEMA_VERSION:
            raise IntegrityError(
                invalid_value(
                    f"{self.manifest_path}: schema_version",
                    version,
                    f"must be {SCHEMA_VERSION} for this version of hgprompt-ray",
                    "Upgrade hgprompt-ray to read this library, or re-create it.",
                )
            )
        records: dict[str, PromptRecord] = {}
        for entry in payload.get("prompts", []):
            record = PromptRecord.from_json(entry, self.manifest_path)
            if record.name in records:
                raise IntegrityError(
                    f"{self.manifest_path}: the name {record.name!r} appears twice. Fix: remove one "
                    "entry from the manifest."
                )
            records[record.name] = record
        return records

    def _write_manifest(self, records: dict[str, PromptRecord]) -> None:
        payload = {
            "schema_version": SCHEMA_VERSION,
            "prompts": [dataclasses.asdict(records[name]) for name in sorted(records)],
        }
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
    ) -> PromptRecord:
        """Write a prompt file and its manifest entry atomically.

        Args:
            name: unique name; letters, digits, '.', '_', '-'.
            prompt: the prompt tokens.
            source_task: the task it was trained on.
            backbone: the backbone name it was trained with.
            img_size: the image size it was trained at.
            source_accuracy: accuracy on the source task, if known.
            extra: JSON-serialisable metadata (seed, command, ...).
            overwrite: replace an existing prompt of the same name instead of raising.

        Shape:
            prompt: (m, d) or (1, m, d).
        """
        _check_name(name)
        tensor = self._validate_tensor(prompt, f"prompt {name!r}")
        if source_accuracy is not None and not (
            isinstance(source_accuracy, (int, float)) and 0.0 <= source_accuracy <= 1.0
        ):
            raise InvalidValueError(
                invalid_value(
                    "source_accuracy", source_accuracy, "must be in [0, 1] or None", "Pass a fraction."
                )
            )
        if not isinstance(img_size, int) or img_size <= 0:
            raise InvalidValueError(invalid_value("img_size", img_size, "must be a positive integer", ""))
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
                    {_TENSOR_KEY: tensor},
                    str(tmp),
                    metadata={"name": name, "source_task": source_task, "backbone": backbone},
                )
            record = PromptRecord(
                name=name,
                file=path.name,
                source_task=source_task,
                backbone=backbone,
                num_tokens=int(tensor.shape[0]),
                embed_dim=int(tensor.shape[1]),
                img_size=img_size,
                source_accuracy=None if source_accuracy is None else float(source_accuracy),
                sha256=sha256_file(path),
                created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                extra=dict(extra or {}),
            )
            records[name] = record
            self._write_manifest(records)
            self._records = records
        logger.info("Added prompt %s (%d x %d) to %s", name, record.num_tokens, record.embed_dim, self.root)
        return record

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

    @staticmethod
    def _validate_tensor(prompt: Any, what: str) -> torch.Tensor:
        if not isinstance(prompt, torch.Tensor):
            raise TypeError(invalid_value(what, type(prompt).__name__, "must be a torch.Tensor", ""))
        tensor = prompt.detach().cpu()
        if tensor.dim() == 3 and tensor.shape[0] == 1:
            tensor = tensor[0]
        if tensor.dim() != 2 or tensor.shape[0] < 1 or tensor.shape[1] < 1:
            raise InvalidValueError(
                invalid_value(
                    f"{what} shape", tuple(prompt.shape), "must be (m, d) or (1, m, d) with m, d >= 1", ""
                )
            )
        if not tensor.is_floating_point() or not torch.isfinite(tensor).all():
            raise InvalidValueError(
                invalid_value(f"{what}", "non-finite or non-float values", "must be finite floats", "")
            )
        return tensor.to(torch.float32).contiguous()

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
        actual = sha256_file(path)
        if actual != record.sha256:
            raise IntegrityError(
                f"Checksum mismatch for {path}: the manifest records {record.sha256[:16]}..., the file "
                f"hashes to {actual[:16]}.... The file was changed or corrupted. Fix: restore it or "
                "re-import the prompt."
            )
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise IntegrityError(
                f"{path} is not a readable safetensors file ({error}). Fix: re-import the prompt."
            ) from error
        if _TENSOR_KEY not in tensors:
            raise IntegrityError(f"{path} holds no tensor named {_TENSOR_KEY!r}. Fix: re-import the prompt.")
        tensor = tensors[_TENSOR_KEY]
        if tuple(tensor.shape) != (record.num_tokens, record.embed_dim):
            raise IntegrityError(
                f"{path} has shape {tuple(tensor.shape)} but the manifest records "
                f"({record.num_tokens}, {record.embed_dim}). Fix: re-import the prompt."
            )
        self._check_expected(record, path, backbone=backbone, embed_dim=embed_dim, num_tokens=num_tokens)
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

    @staticmethod
    def _check_expected(
        record: PromptRecord,
        path: Path,
        *,
        backbone: str | None,
        embed_dim: int | None,
        num_tokens: int | None,
    ) -> None:
        if embed_dim is not None and record.embed_dim != embed_dim:
            raise InvalidValueError(
                f"Prompt {record.name!r} ({path}) has width d={record.embed_dim} but the backbone has "
                f"d={embed_dim}. Fix: use prompts trained on this backbone "
                f"({record.backbone!r} made this one)."
            )
        if num_tokens is not None and record.num_tokens != num_tokens:
            raise InvalidValueError(
                f"Prompt {record.name!r} ({path}) has m={record.num_tokens} tokens but m={num_tokens} "
                "was expected. Fix: build the model with the prompt's length."
            )
        if backbone is not None and record.backbone != backbone:
            raise InvalidValueError(
                f"Prompt {record.name!r} ({path}) was trained with backbone {record.backbone!r}, not "
                f"{backbone!r}. Fix: pass --backbone {record.backbone} or use prompts for {backbone!r}."
            )

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

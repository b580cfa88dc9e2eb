"""The prompt library's manifest: its records, its JSON schema, and the migration of old versions.

``manifest.json`` is the project's prompt-sharing format (README, "Prompt libraries")::

    {"schema_version": 2, "prompts": [PromptRecord, ...]}

Its schema is ``manifest.schema.json`` next to this module (JSON Schema 2020-12); every manifest
is checked against it when read, after migration, so a reader never works on an entry it does
not understand. Version history:

* **1** (the first release): name, file, source_task, backbone, num_tokens, embed_dim,
  img_size, source_accuracy, sha256, created, extra. A manifest without ``schema_version`` (or
  a bare list of entries) is read as version 1.
* **2**: adds ``file_size`` (bytes; a cut-off file is named as truncated before its checksum is
  computed) and ``synthetic`` (a prompt made by mixing and perturbing others, not trained on
  its source task); ``file`` must be a plain ``*.safetensors`` name in the library folder.

Migration happens on read, in memory (:func:`migrate_manifest`; reading never writes): version 1
entries get ``synthetic: false`` and the size of their file on disk (null when the file is
missing; loading it fails anyway). The next write, or ``python -m hgprompt_ray.prompts migrate
LIBRARY``, stores version 2. A manifest newer than this code is refused with "upgrade".
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from hgprompt_ray.errors import IntegrityError, invalid_value

__all__ = [
    "MANIFEST_NAME",
    "SCHEMA_FILE",
    "SCHEMA_VERSION",
    "PromptRecord",
    "manifest_payload",
    "manifest_schema",
    "manifest_version",
    "migrate_manifest",
    "parse_manifest",
    "validate_manifest",
]

SCHEMA_VERSION = 2
MANIFEST_NAME = "manifest.json"
SCHEMA_FILE = "manifest.schema.json"


@dataclass(frozen=True)
class PromptRecord:
    """One prompt's manifest entry (the fields of ``manifest.schema.json``).

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
        file_size: the file's size in bytes (None: unknown, migrated from version 1).
        synthetic: made by mixing and perturbing other prompts, not trained on ``source_task``.
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
    file_size: int | None = None
    synthetic: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The manifest entry."""
        return dataclasses.asdict(self)

    def check_file(self, size: int, sha256: str, where: str) -> None:
        """Raise IntegrityError unless a file's size and SHA-256 are the ones recorded here.

        Args:
            size: the file's size in bytes.
            sha256: its hex SHA-256.
            where: the file's path or URI, for the message.
        """
        fix = "Fix: restore it or re-import the prompt (a shared library: import it again)."
        if self.file_size is not None and size != self.file_size:
            state = "truncated" if size < self.file_size else "longer than recorded"
            raise IntegrityError(
                invalid_value(
                    f"{where} (prompt {self.name!r}): file_size",
                    size,
                    f"must be {self.file_size} bytes as the manifest records (the file is {state})",
                    fix,
                )
            )
        if sha256 != self.sha256:
            raise IntegrityError(
                invalid_value(
                    f"Checksum mismatch for {where} (prompt {self.name!r}): sha256",
                    f"{sha256[:16]}...",
                    f"must be {self.sha256[:16]}... as the manifest records (the file was changed or corrupted)",
                    fix,
                )
            )


@functools.lru_cache(maxsize=1)
def manifest_schema() -> dict[str, Any]:
    """The JSON schema of the current manifest version (``manifest.schema.json``)."""
    text = resources.files("hgprompt_ray.prompts").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    return dict(json.loads(text))


def _entries_v1(payload: Any) -> list[Any]:
    return list(payload) if isinstance(payload, list) else list(payload.get("prompts", []))


def _v1_to_v2(payload: Any, file_size: Callable[[str], int | None]) -> dict[str, Any]:
    """Version 1 -> 2: ``synthetic: false`` and ``file_size`` from the file (None if absent)."""
    entries = []
    for entry in _entries_v1(payload):
        if isinstance(entry, dict):
            entry = {"extra": {}, **entry, "synthetic": False}
            name = entry.get("file")
            entry["file_size"] = file_size(name) if isinstance(name, str) else None
        entries.append(entry)
    return {"schema_version": 2, "prompts": entries}


_MIGRATIONS: dict[int, Callable[[Any, Callable[[str], int | None]], dict[str, Any]]] = {1: _v1_to_v2}
"""version -> the step to version + 1. A new version adds one step here and a line to the history."""


def manifest_version(payload: Any, where: str = MANIFEST_NAME) -> int:
    """The schema version of a parsed manifest (1 when it has none); IntegrityError if unknown."""
    if isinstance(payload, list):
        return 1
    if not isinstance(payload, dict):
        raise IntegrityError(
            invalid_value(
                f"{where}", type(payload).__name__, "must be a JSON object", "Restore it from a backup."
            )
        )
    version = payload.get("schema_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
        raise IntegrityError(
            invalid_value(
                f"{where}: schema_version",
                version,
                f"must be at most {SCHEMA_VERSION} (an integer) for this version of hgprompt-ray",
                "Upgrade hgprompt-ray to read this library, or re-create it.",
            )
        )
    return version


def migrate_manifest(
    payload: Any, file_size: Callable[[str], int | None] = lambda name: None, where: str = MANIFEST_NAME
) -> dict[str, Any]:
    """A manifest of any known version, brought to :data:`SCHEMA_VERSION` (in memory).

    Args:
        payload: the parsed JSON (a version 1 or unversioned manifest, or a current one).
        file_size: the size in bytes of a file of the library, or None when it is missing (the
            version 1 -> 2 step records it).
        where: the manifest's location, for messages.

    Raises:
        IntegrityError: not a manifest, or a version newer than this code.
    """
    version = manifest_version(payload, where)
    while version < SCHEMA_VERSION:
        payload = _MIGRATIONS[version](payload, file_size)
        version += 1
    return dict(payload)


def _path(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(the manifest)"


def validate_manifest(payload: Any, where: str = MANIFEST_NAME) -> None:
    """Check a current-version manifest against ``manifest.schema.json``.

    Raises:
        IntegrityError: naming the entry's field, its value, the rule and the fix.
    """
    import jsonschema

    validator = jsonschema.Draft202012Validator(manifest_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(payload))
    if error is None:
        return
    value = error.instance
    if isinstance(value, (dict, list)):
        value = f"<{type(value).__name__} of {len(value)} item(s)>"
    raise IntegrityError(
        invalid_value(
            f"{where}: {_path(error.absolute_path)}",
            value,
            f"breaks the manifest schema (version {SCHEMA_VERSION}: {error.message})",
            "Fix: correct the entry (see hgprompt_ray/prompts/manifest.schema.json) or re-import the "
            "prompt into a new library.",
        )
    )


def parse_manifest(
    text: str | bytes, where: str, file_size: Callable[[str], int | None] = lambda name: None
) -> dict[str, PromptRecord]:
    """Records by name from a manifest's text: parsed, migrated, validated, names unique.

    Raises:
        IntegrityError: not JSON, an unknown version, a schema violation, a repeated name or file.
    """
    try:
        payload = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise IntegrityError(
            f"{where} is not valid JSON ({error}). Fix: restore it from a backup; prompt files are "
            "intact and can be re-imported."
        ) from error
    payload = migrate_manifest(payload, file_size, where)
    validate_manifest(payload, where)
    records: dict[str, PromptRecord] = {}
    files: set[str] = set()
    for entry in payload["prompts"]:
        record = PromptRecord(**entry)
        if record.name in records or record.file in files:
            repeated = "name" if record.name in records else "file"
            raise IntegrityError(
                invalid_value(
                    f"{where}: {repeated}",
                    getattr(record, repeated),
                    "must appear once",
                    "Fix: remove one of the entries from the manifest.",
                )
            )
        records[record.name] = record
        files.add(record.file)
    return records


def manifest_payload(records: Iterable[PromptRecord]) -> dict[str, Any]:
    """The current-version manifest of ``records`` (sorted by name)."""
    entries = sorted((record.to_json() for record in records), key=lambda entry: entry["name"])
    return {"schema_version": SCHEMA_VERSION, "prompts": entries}

"""Share a prompt library through any ``pyarrow.fs`` location: a local folder, ``file://``,
``s3://`` (with the user's AWS credentials), ``gs://``, ``hdfs://``, or a filesystem object
(e.g. a ``SubTreeFileSystem`` over a bucket prefix).

An exported library is the same folder as on disk (``manifest.json`` and one safetensors file
per prompt), so it can be read back by :func:`import_library` or copied by any tool.

* **Export** checks the whole library first (nothing is copied from a damaged one), writes each
  prompt file under a temporary name, then moves it into place, and writes the manifest last:
  a reader never finds a manifest whose files are not all there. Each file is hashed while it
  is copied and checked against the manifest.
* **Import** reads and migrates the remote manifest (any known version, checked against the
  schema), downloads the chosen prompts to temporary files in the destination folder, checks
  each (size, SHA-256, readable, shape), and only then moves them in with one manifest write
  (:meth:`PromptLibrary.adopt`): a corrupt or truncated download leaves the destination as it
  was. A prompt already there with the same checksum is kept; one with other contents is an
  error unless ``overwrite``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from hgprompt_ray.errors import IntegrityError, InvalidValueError, invalid_value
from hgprompt_ray.prompts.files import load_checked
from hgprompt_ray.prompts.library import PromptLibrary
from hgprompt_ray.prompts.manifest import MANIFEST_NAME, PromptRecord, manifest_payload, parse_manifest

__all__ = ["export_library", "import_library", "resolve_location"]

logger = logging.getLogger(__name__)
_CHUNK = 1 << 20


def resolve_location(uri: str | os.PathLike[str], filesystem: Any = None) -> tuple[Any, str]:
    """(filesystem, path) of a library location.

    Args:
        uri: a local path, or a URI ``pyarrow.fs.FileSystem.from_uri`` understands (``file://``,
            ``s3://bucket/prefix``, ...); with ``filesystem``, a path inside it.
        filesystem: a ``pyarrow.fs.FileSystem`` to use instead of the URI's.
    """
    text = os.fspath(uri)
    if filesystem is not None:
        if not isinstance(filesystem, pafs.FileSystem):
            raise TypeError(
                invalid_value("filesystem", type(filesystem).__name__, "must be a pyarrow.fs.FileSystem", "")
            )
        return filesystem, text.rstrip("/")
    if "://" not in text:
        return pafs.LocalFileSystem(), str(Path(text).expanduser().resolve())
    try:
        filesystem, path = pafs.FileSystem.from_uri(text)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as error:
        raise InvalidValueError(
            invalid_value(
                "uri",
                text,
                f"must be a location pyarrow.fs can open ({error})",
                "Fix: pass a folder, file:///abs/path or s3://bucket/prefix (with credentials set).",
            )
        ) from error
    return filesystem, path.rstrip("/")


def _is_file(filesystem: Any, path: str) -> bool:
    return bool(filesystem.get_file_info(path).type == pafs.FileType.File)


def _copy_to(filesystem: Any, source: Path, dest: str) -> tuple[int, str]:
    """Copy a local file to ``dest`` through a temporary name; returns (size, sha256)."""
    digest, size = hashlib.sha256(), 0
    parent, name = dest.rsplit("/", 1) if "/" in dest else ("", dest)
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp" if parent else f".{name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(source, "rb") as reader, filesystem.open_output_stream(tmp) as writer:
            while block := reader.read(_CHUNK):
                digest.update(block)
                size += len(block)
                writer.write(block)
        filesystem.move(tmp, dest)
    except BaseException:
        if _is_file(filesystem, tmp):
            filesystem.delete_file(tmp)
        raise
    return size, digest.hexdigest()


def export_library(
    library: PromptLibrary, uri: str, *, filesystem: Any = None, overwrite: bool = False
) -> list[PromptRecord]:
    """Copy ``library`` to ``uri`` (module docstring). Returns the records exported.

    Args:
        library: the library to share.
        uri: where (see :func:`resolve_location`).
        filesystem: a ``pyarrow.fs.FileSystem`` (then ``uri`` is a path inside it).
        overwrite: replace a library already at ``uri`` (its prompts not in ``library`` are
            deleted after the new manifest is written).

    Raises:
        IntegrityError: ``library`` is damaged, or a file changed while it was copied.
        InvalidValueError: ``uri`` already holds a library and ``overwrite`` is False.
    """
    problems = library.verify()
    if problems:
        raise IntegrityError(
            f"{library.root} is damaged, nothing was exported: {problems[0]}. Fix: repair or remove that "
            "prompt (python -m hgprompt_ray.prompts verify / remove)."
        )
    filesystem, base = resolve_location(uri, filesystem)
    manifest = f"{base}/{MANIFEST_NAME}"
    if _is_file(filesystem, manifest) and not overwrite:
        raise InvalidValueError(
            invalid_value(
                "uri",
                str(uri),
                "must not hold a prompt library already",
                "Fix: pass overwrite=True (--overwrite) to replace it, or choose another location.",
            )
        )
    filesystem.create_dir(base, recursive=True)
    records = library.records()
    for record in records:
        size, checksum = _copy_to(filesystem, library.root / record.file, f"{base}/{record.file}")
        record.check_file(size, checksum, str(library.root / record.file))
    text = (json.dumps(manifest_payload(records), indent=2, sort_keys=True) + "\n").encode()
    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder) / MANIFEST_NAME
        local.write_bytes(text)
        _copy_to(filesystem, local, manifest)
    if overwrite:
        keep = {record.file for record in records}
        for info in filesystem.get_file_info(pafs.FileSelector(base)):
            if info.type == pafs.FileType.File and info.base_name.endswith(".safetensors"):
                if info.base_name not in keep:
                    filesystem.delete_file(info.path)
    logger.info("Exported %d prompt(s) from %s to %s", len(records), library.root, uri)
    return records


def _download(filesystem: Any, source: str, folder: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=".import.", suffix=".tmp", dir=folder)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as writer, filesystem.open_input_stream(source) as reader:
            while block := reader.read(_CHUNK):
                writer.write(block)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def import_library(
    uri: str,
    dest: str | os.PathLike[str],
    *,
    filesystem: Any = None,
    names: Sequence[str] | None = None,
    overwrite: bool = False,
) -> list[PromptRecord]:
    """Bring the library at ``uri`` into the local library ``dest`` (module docstring).

    Args:
        uri: the shared library (see :func:`resolve_location`).
        dest: a local library folder, created if absent.
        filesystem: a ``pyarrow.fs.FileSystem`` (then ``uri`` is a path inside it).
        names: import only these prompts (None: all).
        overwrite: replace prompts of ``dest`` that have the same names and other contents.

    Returns:
        The records added or replaced (prompts already in ``dest`` unchanged are left out).

    Raises:
        InvalidValueError: no library at ``uri``, unknown ``names``, or a name clash.
        IntegrityError: a corrupt or truncated manifest or file (``dest`` is left unchanged).
    """
    filesystem, base = resolve_location(uri, filesystem)
    manifest = f"{base}/{MANIFEST_NAME}"
    if not _is_file(filesystem, manifest):
        raise InvalidValueError(
            invalid_value(
                "uri",
                str(uri),
                f"must hold a prompt library ({MANIFEST_NAME} is missing)",
                "Fix: check the location, or export a library there first.",
            )
        )
    with filesystem.open_input_stream(manifest) as reader:
        text = reader.read()

    def remote_size(file: str) -> int | None:
        info = filesystem.get_file_info(f"{base}/{file}")
        return int(info.size) if info.type == pafs.FileType.File else None

    records = parse_manifest(text, f"{uri}/{MANIFEST_NAME}", remote_size)
    chosen = list(records) if names is None else list(dict.fromkeys(names))
    unknown = sorted(set(chosen) - set(records))
    if unknown:
        raise InvalidValueError(
            invalid_value(
                "names", unknown, f"must be prompts of {uri}", f"Known: {', '.join(sorted(records))}."
            )
        )
    library = PromptLibrary(dest, create=True)
    downloads: list[tuple[PromptRecord, Path]] = []
    try:
        for name in chosen:
            record = records[name]
            source = f"{base}/{record.file}"
            if not _is_file(filesystem, source):
                raise IntegrityError(
                    f"{uri}: the prompt file {record.file} (prompt {name!r}) is missing. Fix: export the "
                    "library again, or import the other prompts with --names."
                )
            path = _download(filesystem, source, library.root)
            downloads.append((record, path))
            load_checked(path, record, where=f"{uri}/{record.file}")
        changed = library.adopt(downloads, overwrite=overwrite)
    finally:
        for _, path in downloads:
            path.unlink(missing_ok=True)  # adopted files were renamed away; the rest are temporary
    logger.info("Imported %d prompt(s) from %s into %s", len(changed), uri, library.root)
    return changed

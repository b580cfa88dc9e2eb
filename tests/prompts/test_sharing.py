"""Export and import of whole libraries through pyarrow.fs (local paths, file:// URIs, a
SubTreeFileSystem), with checksums verified on the way in."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import torch

from hgprompt_ray.errors import IntegrityError, InvalidValueError
from hgprompt_ray.prompts import MANIFEST_NAME, PromptLibrary, export_library, import_library
from hgprompt_ray.prompts.__main__ import main

BACKBONE = "dinov2-s-imgfocus"
DATA = Path(__file__).parent / "data"


def _library(root: Path, names=("a", "b", "c")) -> PromptLibrary:
    library = PromptLibrary(root, create=True)
    for i, name in enumerate(names):
        prompt = torch.randn(3, 8, generator=torch.Generator().manual_seed(i))
        library.add(
            name, prompt, source_task=f"task-{name}", backbone=BACKBONE, img_size=112, synthetic=i == 2
        )
    return library


def _files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.name != ".lock"}


def _same(library: PromptLibrary, other: PromptLibrary) -> None:
    assert other.records() == library.records()
    for name in library.names:
        assert torch.equal(other.load(name), library.load(name))
    assert other.verify() == []


@pytest.mark.parametrize("how", ["path", "local-filesystem", "file-uri"])
def test_export_then_import_round_trips(tmp_path, how):
    library = _library(tmp_path / "mine")
    shared = tmp_path / "shared" / "zoo"
    uri, filesystem = {
        "path": (str(shared), None),
        "local-filesystem": (str(shared), pafs.LocalFileSystem()),
        "file-uri": (shared.as_uri(), None),
    }[how]
    exported = library.export(uri, filesystem=filesystem)
    assert [r.name for r in exported] == ["a", "b", "c"]
    assert sorted(p.name for p in shared.iterdir()) == [
        "a.safetensors",
        "b.safetensors",
        "c.safetensors",
        MANIFEST_NAME,
    ]
    assert PromptLibrary(shared).records() == library.records()  # the export is a library folder itself
    imported = PromptLibrary.import_(uri, tmp_path / "theirs", filesystem=filesystem)
    _same(library, imported)
    assert imported.record("c").synthetic


def test_subtree_filesystem_as_a_bucket_prefix(tmp_path):
    library = _library(tmp_path / "mine")
    (tmp_path / "bucket").mkdir()
    bucket = pafs.SubTreeFileSystem(str(tmp_path / "bucket"), pafs.LocalFileSystem())
    export_library(library, "team/zoo", filesystem=bucket)
    assert (tmp_path / "bucket" / "team" / "zoo" / MANIFEST_NAME).is_file()
    changed = import_library("team/zoo", tmp_path / "theirs", filesystem=bucket, names=["b", "a"])
    assert sorted(r.name for r in changed) == ["a", "b"]
    theirs = PromptLibrary(tmp_path / "theirs")
    assert theirs.names == ["a", "b"] and torch.equal(theirs.load("b"), library.load("b"))
    again = import_library("team/zoo", tmp_path / "theirs", filesystem=bucket)
    assert [r.name for r in again] == ["c"]  # a and b are there with the same checksums
    assert PromptLibrary(tmp_path / "theirs").names == ["a", "b", "c"]


def test_export_refuses_an_occupied_location_and_overwrite_replaces_it(tmp_path):
    _library(tmp_path / "first", names=("a", "old"))
    second = _library(tmp_path / "second", names=("a", "b"))
    shared = tmp_path / "shared"
    PromptLibrary(tmp_path / "first").export(str(shared))
    before = _files(shared)
    with pytest.raises(InvalidValueError, match=r"uri must not hold a prompt library already.*overwrite"):
        second.export(str(shared))
    assert _files(shared) == before
    second.export(str(shared), overwrite=True)
    assert sorted(_files(shared)) == ["a.safetensors", "b.safetensors", MANIFEST_NAME]  # 'old' is gone
    _same(second, PromptLibrary(shared))


def test_export_of_a_damaged_library_writes_nothing(tmp_path):
    library = _library(tmp_path / "mine")
    (tmp_path / "mine" / "b.safetensors").write_bytes(b"cut")
    with pytest.raises(IntegrityError, match=r"is damaged, nothing was exported: b: .*truncated"):
        library.export(str(tmp_path / "shared"))
    assert not (tmp_path / "shared").exists()


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda data: data[:-9], r"b\.safetensors \(prompt 'b'\): file_size must be \d+ bytes .*truncated"),
        (
            lambda data: data[:-1] + bytes([data[-1] ^ 1]),
            r"Checksum mismatch for .*/b\.safetensors \(prompt 'b'\)",
        ),
    ],
)
def test_a_corrupt_or_truncated_download_leaves_the_destination_unchanged(tmp_path, damage, match):
    _library(tmp_path / "mine").export(str(tmp_path / "shared"))
    path = tmp_path / "shared" / "b.safetensors"
    path.write_bytes(damage(path.read_bytes()))
    dest = _library(tmp_path / "dest", names=("z",))
    before = _files(tmp_path / "dest")
    with pytest.raises(IntegrityError, match=match):
        import_library((tmp_path / "shared").as_uri(), tmp_path / "dest")
    assert _files(tmp_path / "dest") == before  # no prompt, no manifest change, no temporary file
    assert dest.names == ["z"]


def test_import_migrates_an_old_shared_library(tmp_path):
    shared = Path(shutil.copytree(DATA / "library_v1", tmp_path / "shared"))
    imported = PromptLibrary.import_(shared.as_uri(), tmp_path / "dest")
    assert imported.names == ["digits", "textures"] and imported.verify() == []
    manifest = json.loads((tmp_path / "dest" / MANIFEST_NAME).read_text())
    assert manifest["schema_version"] == 2 and manifest["prompts"][0]["file_size"] == 192


def test_import_names_clashes_and_missing_library(tmp_path):
    _library(tmp_path / "mine").export(str(tmp_path / "shared"))
    uri = str(tmp_path / "shared")
    with pytest.raises(
        InvalidValueError, match=r"names must be prompts of .* but got \['x'\]. Known: a, b, c"
    ):
        import_library(uri, tmp_path / "dest", names=["a", "x"])
    other = PromptLibrary(tmp_path / "dest", create=True)
    other.add("a", torch.zeros(3, 8), source_task="t", backbone=BACKBONE, img_size=112)
    with pytest.raises(
        InvalidValueError, match=r"names must not name other prompts already in .*\['a'\].*overwrite"
    ):
        import_library(uri, tmp_path / "dest")
    assert PromptLibrary(tmp_path / "dest").names == ["a"]
    changed = import_library(uri, tmp_path / "dest", overwrite=True)
    assert [r.name for r in changed] == ["a", "b", "c"]
    assert import_library(uri, tmp_path / "dest") == []  # the same prompts again: nothing to do
    _same(PromptLibrary(tmp_path / "shared"), PromptLibrary(tmp_path / "dest"))
    with pytest.raises(
        InvalidValueError, match=r"uri must hold a prompt library \(manifest.json is missing\)"
    ):
        import_library(str(tmp_path / "nowhere"), tmp_path / "dest")


def test_cli_export_to_and_import_from(tmp_path, capsys):
    library = _library(tmp_path / "mine")
    shared = (tmp_path / "shared").as_uri()
    assert main(["export", str(library.root), "--to", shared]) == 0
    assert "exported 3 prompt(s)" in capsys.readouterr().out
    assert main(["import", str(tmp_path / "dest"), "--from", shared, "--names", "c"]) == 0
    assert "imported 1 prompt(s)" in capsys.readouterr().out
    assert PromptLibrary(tmp_path / "dest").names == ["c"]
    assert main(["export", str(library.root), "--to", shared]) == 2
    assert "error: uri must not hold a prompt library already" in capsys.readouterr().err
    assert main(["export", str(library.root), "a", "out.npy", "--to", shared]) == 2
    assert "takes no NAME OUT" in capsys.readouterr().err
    assert main(["import", str(tmp_path / "dest"), "x.npy", "--from", shared]) == 2
    assert "takes no FILE" in capsys.readouterr().err
    assert main(["import", str(tmp_path / "dest"), "x.npy", "--name", "x"]) == 2
    assert "missing: --source-task, --backbone" in capsys.readouterr().err

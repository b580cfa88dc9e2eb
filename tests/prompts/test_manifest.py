"""The manifest: its JSON schema, the migration of old versions, size and checksum checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest
import torch

from hgprompt_ray.errors import IntegrityError, InvalidValueError
from hgprompt_ray.paths import DEFAULT_LIBRARY
from hgprompt_ray.prompts import MANIFEST_NAME, SCHEMA_VERSION, PromptLibrary
from hgprompt_ray.prompts.__main__ import main
from hgprompt_ray.prompts.manifest import manifest_schema, migrate_manifest, validate_manifest

DATA = Path(__file__).parent / "data"
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "hgprompt_ray" / "prompts" / "manifest.schema.json"
BACKBONE = "dinov2-s-imgfocus"


def _copy(example: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(DATA / example, tmp_path / example))


def _validator() -> jsonschema.Draft202012Validator:
    """The committed schema file itself (not the module's cached copy)."""
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_committed_schema_is_the_one_enforced_and_describes_the_current_version():
    schema = json.loads(SCHEMA_PATH.read_text())
    assert manifest_schema() == schema
    assert schema["properties"]["schema_version"] == {"const": SCHEMA_VERSION} == {"const": 2}


def test_shipped_zoo_is_migrated_to_the_current_version_and_valid():
    payload = json.loads((Path(DEFAULT_LIBRARY) / MANIFEST_NAME).read_text())
    assert payload["schema_version"] == SCHEMA_VERSION
    _validator().validate(payload)
    library = PromptLibrary(DEFAULT_LIBRARY)
    assert len(library) == 11 and not any(r.synthetic for r in library.records())
    assert all(r.file_size == (library.root / r.file).stat().st_size for r in library.records())


@pytest.mark.parametrize("example", ["library_v1", "library_unversioned"])
def test_old_manifest_is_read_migrated_in_memory_then_rewritten_by_migrate(tmp_path, example, capsys):
    root = _copy(example, tmp_path)
    before = (root / MANIFEST_NAME).read_bytes()
    library = PromptLibrary(root)
    assert library.names == ["digits", "textures"]
    assert (root / MANIFEST_NAME).read_bytes() == before  # reading never writes
    for record in library.records():
        assert record.synthetic is False and record.file_size == (root / record.file).stat().st_size
    assert library.record("textures").extra == ({"epochs": 3, "seed": 0} if example == "library_v1" else {})
    expected = torch.arange(8, dtype=torch.float32).reshape(2, 4) * 2 / 10
    assert torch.equal(library.load("textures"), expected)
    assert library.verify() == []
    assert main(["migrate", str(root)]) == 0
    assert "from schema version 1 to 2" in capsys.readouterr().out
    migrated = json.loads((root / MANIFEST_NAME).read_text())
    _validator().validate(migrated)
    assert migrated["schema_version"] == 2
    assert PromptLibrary(root).records() == library.records()
    assert PromptLibrary(root).migrate() == 2  # already current: nothing written
    assert json.loads((root / MANIFEST_NAME).read_text()) == migrated


def test_migration_keeps_a_missing_file_unknown_and_migrate_refuses_it(tmp_path):
    root = _copy("library_v1", tmp_path)
    (root / "digits.safetensors").unlink()
    library = PromptLibrary(root)
    assert library.record("digits").file_size is None
    with pytest.raises(FileNotFoundError, match="digits.safetensors .*is missing"):
        library.load("digits")
    before = (root / MANIFEST_NAME).read_bytes()
    with pytest.raises(IntegrityError, match=r"cannot be migrated: digits: .*Fix: repair or remove"):
        library.migrate()
    assert (root / MANIFEST_NAME).read_bytes() == before


def test_the_first_write_to_an_old_library_stores_the_current_version(tmp_path):
    root = _copy("library_v1", tmp_path)
    PromptLibrary(root).add("new", torch.ones(2, 4), source_task="t", backbone=BACKBONE, img_size=112)
    payload = json.loads((root / MANIFEST_NAME).read_text())
    _validator().validate(payload)
    assert [entry["name"] for entry in payload["prompts"]] == ["digits", "new", "textures"]


def _v2(tmp_path: Path) -> tuple[Path, dict]:
    root = _copy("library_v1", tmp_path)
    PromptLibrary(root).migrate()
    return root, json.loads((root / MANIFEST_NAME).read_text())


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            lambda e: e.update(sha256="abc"),
            r"prompts\[0\]\.sha256 breaks the manifest schema .* but got 'abc'",
        ),
        (lambda e: e.update(file="../evil.safetensors"), r"prompts\[0\]\.file breaks .* but got '\.\./evil"),
        (lambda e: e.update(num_tokens=0), r"prompts\[0\]\.num_tokens breaks .*minimum.* but got 0"),
        (lambda e: e.update(synthetic="yes"), r"prompts\[0\]\.synthetic breaks .*boolean"),
        (lambda e: e.update(colour="red"), r"prompts\[0\] breaks .*'colour' was unexpected"),
        (lambda e: e.pop("sha256"), r"prompts\[0\] breaks .*'sha256' is a required property"),
        (lambda e: e.update(source_accuracy=1.5), r"prompts\[0\]\.source_accuracy breaks .* but got 1\.5"),
    ],
)
def test_schema_violations_name_the_field_and_the_value(tmp_path, change, match):
    root, payload = _v2(tmp_path)
    change(payload["prompts"][0])
    (root / MANIFEST_NAME).write_text(json.dumps(payload))
    with pytest.raises(IntegrityError, match=match):
        PromptLibrary(root)
    with pytest.raises(jsonschema.ValidationError):  # the committed schema file says the same
        _validator().validate(payload)


def test_repeated_file_is_refused(tmp_path):
    root, payload = _v2(tmp_path)
    payload["prompts"][1]["file"] = payload["prompts"][0]["file"]
    (root / MANIFEST_NAME).write_text(json.dumps(payload))
    with pytest.raises(IntegrityError, match=r"file must appear once, but got 'digits.safetensors'"):
        PromptLibrary(root)


def test_not_a_manifest_and_a_future_version(tmp_path):
    with pytest.raises(IntegrityError, match="must be a JSON object, but got 'str'"):
        migrate_manifest("prompts")
    with pytest.raises(IntegrityError, match=r"schema_version must be at most 2 .* but got 3. Upgrade"):
        migrate_manifest({"schema_version": 3, "prompts": []})
    with pytest.raises(IntegrityError, match=r"schema_version must be at most 2 .* but got True"):
        migrate_manifest({"schema_version": True, "prompts": []})
    validate_manifest(migrate_manifest([]))  # a bare (unversioned) list of entries


@pytest.mark.parametrize(("keep", "state"), [(100, "truncated"), (None, "longer than recorded")])
def test_truncated_or_extended_file_is_refused_with_its_size(tmp_path, keep, state):
    root, _ = _v2(tmp_path)
    path = root / "digits.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep else data + b"\0")
    library = PromptLibrary(root)
    size = len(data[:keep]) if keep else len(data) + 1
    message = rf"digits\.safetensors \(prompt 'digits'\): file_size must be {len(data)} bytes .*\(the file is {state}\), but got {size}\. Fix: restore it"
    with pytest.raises(IntegrityError, match=message):
        library.load("digits")
    assert library.verify()[0].startswith("digits: ") and state in library.verify()[0]


def test_synthetic_entries_round_trip(tmp_path):
    library = PromptLibrary(tmp_path, create=True)
    extra = {"parents": ["digits", "textures"], "weights": [0.7, 0.3], "noise": 0.01, "seed": 4}
    record = library.add(
        "mix-0",
        torch.ones(2, 4),
        source_task="synthetic",
        backbone=BACKBONE,
        img_size=112,
        synthetic=True,
        extra=extra,
    )
    reopened = PromptLibrary(tmp_path)
    assert reopened.record("mix-0") == record and record.synthetic and record.extra == extra
    assert json.loads((tmp_path / MANIFEST_NAME).read_text())["prompts"][0]["synthetic"] is True
    with pytest.raises(TypeError, match="synthetic must be True or False"):
        library.add("x", torch.ones(2, 4), source_task="t", backbone=BACKBONE, img_size=112, synthetic="yes")
    with pytest.raises(InvalidValueError, match="source_task must be a non-empty string"):
        library.add("x", torch.ones(2, 4), source_task="", backbone=BACKBONE, img_size=112)
    assert PromptLibrary(tmp_path).names == ["mix-0"]

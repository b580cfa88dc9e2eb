"""The prompt library: round trip, atomic writes, and every bad input."""

from __future__ import annotations

import json
import multiprocessing

import pytest
import torch
from safetensors.torch import save_file

from hgprompt_ray.errors import IntegrityError, InvalidValueError
from hgprompt_ray.prompts import MANIFEST_NAME, SCHEMA_VERSION, PromptLibrary

BACKBONE = "dinov2-s-imgfocus"


def _prompt(seed: int = 0, m: int = 5, d: int = 8) -> torch.Tensor:
    return torch.randn(m, d, generator=torch.Generator().manual_seed(seed))


def _add(library: PromptLibrary, name: str, seed: int = 0, **overrides):
    kwargs = dict(source_task="digits", backbone=BACKBONE, img_size=112, source_accuracy=0.9)
    kwargs.update(overrides)
    return library.add(name, _prompt(seed, d=kwargs.pop("d", 8)), **kwargs)


def _snapshot(root):
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.name != ".lock"}


def test_round_trip(tmp_path):
    library = PromptLibrary(tmp_path / "lib", create=True)
    record = _add(library, "digits-s0", extra={"seed": 0, "epochs": 3})
    assert (record.num_tokens, record.embed_dim, record.backbone) == (5, 8, BACKBONE)
    reopened = PromptLibrary(tmp_path / "lib")
    assert reopened.names == ["digits-s0"] and len(reopened) == 1 and "digits-s0" in reopened
    assert reopened.record("digits-s0") == record
    loaded = reopened.load("digits-s0", backbone=BACKBONE, embed_dim=8, num_tokens=5)
    assert torch.equal(loaded, _prompt(0))
    manifest = json.loads((tmp_path / "lib" / MANIFEST_NAME).read_text())
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["prompts"][0]["extra"] == {"seed": 0, "epochs": 3}
    assert reopened.verify() == []


def test_load_many_stacks_and_accepts_batched_input(tmp_path):
    library = PromptLibrary(tmp_path, create=True)
    library.add("a", _prompt(1).unsqueeze(0), source_task="t", backbone=BACKBONE, img_size=112)
    _add(library, "b", seed=2)
    stacked = library.load_many(["b", "a"])
    assert stacked.shape == (2, 5, 8)
    assert torch.equal(stacked[1], _prompt(1))
    library.add("short", torch.zeros(3, 8), source_task="t", backbone=BACKBONE, img_size=112)
    with pytest.raises(InvalidValueError, match="same number of tokens"):
        library.load_many(["a", "short"])


def test_missing_library_says_how_to_create_one(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No prompt library at .*create=True"):
        PromptLibrary(tmp_path / "absent")


def test_duplicate_name_is_rejected_and_overwrite_replaces(tmp_path):
    library = PromptLibrary(tmp_path, create=True)
    _add(library, "p", seed=0)
    before = _snapshot(tmp_path)
    with pytest.raises(InvalidValueError, match=r"name must be unique .* but got 'p'.*overwrite=True"):
        _add(library, "p", seed=1)
    assert _snapshot(tmp_path) == before
    _add(library, "p", seed=1, overwrite=True)
    assert torch.equal(library.load("p"), _prompt(1))


def test_corrupt_file_names_the_file(tmp_path):
    library = PromptLibrary(tmp_path, create=True)
    record = _add(library, "p")
    path = tmp_path / record.file
    path.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(
        IntegrityError, match=r"p\.safetensors \(prompt 'p'\): file_size must be \d+ bytes .*truncated"
    ):
        library.load("p")
    # A corrupt file whose checksum and size were (wrongly) re-recorded is still caught by the reader.
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    from hgprompt_ray.hashing import sha256_file

    manifest["prompts"][0]["sha256"] = sha256_file(path)
    manifest["prompts"][0]["file_size"] = path.stat().st_size
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match=r"p\.safetensors is not a readable safetensors file"):
        PromptLibrary(tmp_path).load("p")


def test_checksum_mismatch_on_a_valid_but_different_tensor(tmp_path):
    library = PromptLibrary(tmp_path, create=True)
    record = _add(library, "p")
    metadata = {"name": "p", "source_task": "digits", "backbone": BACKBONE}  # the same size
    save_file({"prompt": torch.ones(5, 8)}, str(tmp_path / record.file), metadata=metadata)
    assert (tmp_path / record.file).stat().st_size == record.file_size
    with pytest.raises(IntegrityError, match="Checksum mismatch.*sha256 must be .*restore it or re-import"):
        library.load("p")
    assert any(line.startswith("p: Checksum mismatch") for line in library.verify())


def test_wrong_width_and_backbone_are_rejected(tmp_path):
    library = PromptLibrary(tmp_path, create=True)
    _add(library, "p")
    with pytest.raises(InvalidValueError, match=r"width d=8 but the backbone has d=384"):
        library.load("p", embed_dim=384)
    with pytest.raises(InvalidValueError, match=r"backbone 'dinov2-s-imgfocus', not 'vit_base.*--backbone"):
        library.load("p", backbone="vit_base_patch16_224")
    with pytest.raises(InvalidValueError, match=r"m=5 tokens but m=50"):
        library.load("p", num_tokens=50)


def test_missing_file(tmp_path):
    library = PromptLibrary(tmp_path, create=True)
    record = _add(library, "p")
    (tmp_path / record.file).unlink()
    with pytest.raises(FileNotFoundError, match=r"p\.safetensors .*is missing.*remove"):
        library.load("p")
    assert library.verify()[0].startswith("p: Prompt file")


def test_unknown_schema_version(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"schema_version": 99, "prompts": []}))
    with pytest.raises(IntegrityError, match=r"schema_version must be at most 2 .* but got 99. Upgrade"):
        PromptLibrary(tmp_path)


def test_invalid_manifest_json(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(IntegrityError, match="not valid JSON"):
        PromptLibrary(tmp_path)


@pytest.mark.parametrize(
    ("name", "prompt", "kwargs", "match"),
    [
        ("../evil", torch.zeros(2, 4), {}, "name must be"),
        ("ok", torch.zeros(2, 4, 4, 4), {}, r"shape must be \(m, d\)"),
        ("ok", torch.full((2, 4), float("nan")), {}, "must be finite"),
        ("ok", torch.zeros(2, 4, dtype=torch.int64), {}, "must be finite floats"),
        ("ok", torch.zeros(2, 4), {"source_accuracy": 1.5}, r"source_accuracy must be in \[0, 1\]"),
        ("ok", torch.zeros(2, 4), {"extra": {"bad": object()}}, "not JSON serializable"),
    ],
)
def test_bad_inputs_leave_the_library_unchanged(tmp_path, name, prompt, kwargs, match):
    library = PromptLibrary(tmp_path, create=True)
    _add(library, "keep")
    before = _snapshot(tmp_path)
    with pytest.raises((InvalidValueError, TypeError), match=match):
        library.add(name, prompt, source_task="t", backbone=BACKBONE, img_size=112, **kwargs)
    assert _snapshot(tmp_path) == before


def test_remove_and_unknown_name(tmp_path):
    library = PromptLibrary(tmp_path, create=True)
    record = _add(library, "p")
    _add(library, "q", seed=3)
    library.remove("p")
    assert library.names == ["q"] and not (tmp_path / record.file).exists()
    with pytest.raises(KeyError, match=r"No prompt named 'p'.*Known: \['q'\]"):
        library.load("p")


def test_verify_reports_stray_files(tmp_path):
    library = PromptLibrary(tmp_path, create=True)
    save_file({"prompt": torch.zeros(1, 1)}, str(tmp_path / "stray.safetensors"))
    assert library.verify() == ["stray.safetensors: file not in the manifest (import it or delete it)"]


def _add_in_process(root: str, index: int) -> None:
    library = PromptLibrary(root, create=True)
    library.add(
        f"p{index}", torch.full((2, 4), float(index)), source_task="t", backbone=BACKBONE, img_size=112
    )


def test_concurrent_writers_lose_nothing(tmp_path):
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_add_in_process, args=(str(tmp_path), i)) for i in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    library = PromptLibrary(tmp_path)
    assert library.names == ["p0", "p1", "p2", "p3"]
    assert library.verify() == []

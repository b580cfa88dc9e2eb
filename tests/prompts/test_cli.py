"""``python -m hgprompt_ray.prompts``: list, import, export, verify, remove, and bad inputs."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from hgprompt_ray.prompts import PromptLibrary
from hgprompt_ray.prompts.__main__ import main, read_prompt_file

BACKBONE = "dinov2-s-imgfocus"  # width 384


def _files(tmp_path):
    prompt = torch.randn(4, 384, generator=torch.Generator().manual_seed(0))
    save_file({"prompt": prompt}, str(tmp_path / "a.safetensors"))
    np.save(tmp_path / "b.npy", prompt.numpy()[None])  # (1, m, d)
    torch.save(prompt * 2, tmp_path / "c.pt")
    return prompt


def _import(library, path, name, *extra):
    return main(
        [
            "import",
            str(library),
            str(path),
            "--name",
            name,
            "--source-task",
            "digits",
            "--backbone",
            BACKBONE,
            *extra,
        ]
    )


def test_import_every_format_list_export_verify_remove(tmp_path, capsys):
    prompt = _files(tmp_path)
    library = tmp_path / "lib"
    assert _import(library, tmp_path / "a.safetensors", "a", "--accuracy", "0.9") == 0
    assert _import(library, tmp_path / "b.npy", "b") == 0
    assert _import(library, tmp_path / "c.pt", "c", "--img-size", "224") == 0
    opened = PromptLibrary(library)
    assert opened.names == ["a", "b", "c"]
    assert torch.equal(opened.load("b"), prompt) and torch.equal(opened.load("c"), prompt * 2)
    assert opened.record("a").img_size == 112 and opened.record("c").img_size == 224
    assert main(["list", str(library)]) == 0
    listing = capsys.readouterr().out
    assert "digits" in listing and "0.900" in listing and "3 prompt(s)" in listing
    for suffix in (".safetensors", ".npy", ".pt"):
        out = tmp_path / f"out{suffix}"
        assert main(["export", str(library), "a", str(out)]) == 0
        assert torch.equal(read_prompt_file(out), prompt)
    assert main(["verify", str(library)]) == 0
    assert main(["remove", str(library), "b"]) == 0
    assert PromptLibrary(library).names == ["a", "c"]


def test_verify_exits_1_on_a_corrupt_library(tmp_path, capsys):
    _files(tmp_path)
    _import(tmp_path / "lib", tmp_path / "a.safetensors", "a")
    (tmp_path / "lib" / "a.safetensors").write_bytes(b"garbage")
    assert main(["verify", str(tmp_path / "lib")]) == 1
    assert "file_size must be" in (out := capsys.readouterr().out) and "(the file is truncated)" in out


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: p / "missing.npy", "does not exist"),
        (
            lambda p: (np.save(p / "w.npy", np.zeros((4, 768), np.float32)), p / "w.npy")[1],
            r"needs \(m, 384\)",
        ),
        (
            lambda p: (
                np.save(p / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True),
                p / "o.npy",
            )[1],
            "could not be read",
        ),
        (
            lambda p: (
                torch.save({"a": torch.zeros(2, 384), "b": torch.zeros(2, 384)}, p / "two.pt"),
                p / "two.pt",
            )[1],
            "not a tensor",
        ),
        (lambda p: ((p / "x.txt").write_text("1"), p / "x.txt")[1], "unsupported suffix"),
        (
            lambda p: ((p / "bad.safetensors").write_bytes(b"\x00" * 20), p / "bad.safetensors")[1],
            "could not be read",
        ),
    ],
)
def test_bad_imports_exit_2_and_leave_the_library_unchanged(tmp_path, capsys, make, match):
    _files(tmp_path)
    library = tmp_path / "lib"
    _import(library, tmp_path / "a.safetensors", "keep")
    before = {p.name: p.read_bytes() for p in library.iterdir() if p.name != ".lock"}
    assert _import(library, make(tmp_path), "new") == 2
    error = capsys.readouterr().err
    assert re.search(match, error), error
    after = {p.name: p.read_bytes() for p in library.iterdir() if p.name != ".lock"}
    assert after == before


def test_pickled_pt_is_refused(tmp_path, capsys):
    class Payload:
        def __reduce__(self):
            return (print, ("executed!",))

    torch.save({"x": Payload()}, tmp_path / "evil.pt")
    assert _import(tmp_path / "lib", tmp_path / "evil.pt", "evil") == 2
    captured = capsys.readouterr()
    assert "executed!" not in captured.out and "could not be read" in captured.err


def test_duplicate_name_and_unknown_backbone(tmp_path, capsys):
    _files(tmp_path)
    library = tmp_path / "lib"
    assert _import(library, tmp_path / "a.safetensors", "a") == 0
    assert _import(library, tmp_path / "a.safetensors", "a") == 2
    assert "must be unique" in capsys.readouterr().err
    code = main(
        [
            "import",
            str(library),
            str(tmp_path / "a.safetensors"),
            "--name",
            "z",
            "--source-task",
            "t",
            "--backbone",
            "no_such_vit",
        ]
    )
    assert code == 2 and "must be a timm model name" in capsys.readouterr().err
    assert main(["remove", str(library), "ghost"]) == 2
    assert main(["list", str(tmp_path / "nolib")]) == 2


def test_report_renders_accuracies_and_probe_column(tmp_path, capsys):
    import json

    _files(tmp_path)
    library = tmp_path / "lib"
    _import(library, tmp_path / "a.safetensors", "a", "--accuracy", "0.8")
    probe = tmp_path / "probe.json"
    probe.write_text(json.dumps([{"task": "digits", "backbone": 0.93, "pixels": 0.9}]))
    assert main(["report", str(library), "--probe-json", str(probe), "--out", str(tmp_path / "R.md")]) == 0
    text = (tmp_path / "R.md").read_text()
    assert "| a | digits | dinov2-s-imgfocus | 4 | 112 | - | 0.800 | 0.930 |" in text
    later = tmp_path / "later.json"  # a second bench run: its row for a task replaces the first's
    later.write_text(json.dumps([{"task": "digits", "backbone": 0.95, "pixels": 0.9}]))
    out = str(tmp_path / "R.md")
    assert main(["report", str(library), "--probe-json", str(probe), str(later), "--out", out]) == 0
    assert "| 0.800 | 0.950 |" in (tmp_path / "R.md").read_text()

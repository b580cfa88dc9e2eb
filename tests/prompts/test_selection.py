"""select_sources: the one place that decides a target's sources."""

from __future__ import annotations

import pytest
import torch

from hgprompt_ray.errors import IntegrityError, InvalidValueError
from hgprompt_ray.prompts import PromptLibrary, open_library, select_sources


def _library(tmp_path, entries):
    library = PromptLibrary(tmp_path / "lib", create=True)
    for i, (name, task, backbone, size) in enumerate(entries):
        prompt = torch.randn(3, 8, generator=torch.Generator().manual_seed(i))
        library.add(name, prompt, source_task=task, backbone=backbone, img_size=size)
    return library


def test_own_prompt_left_out_and_sources_restrict(tmp_path):
    library = _library(tmp_path, [("a", "t1", "b", 32), ("b", "t2", "b", 32), ("c", "t3", "b", 32)])
    chosen = select_sources(library, "t1")
    assert chosen.names == ("b", "c") and chosen.left_out == ("a",)
    assert (chosen.backbone, chosen.img_size, chosen.num_tokens) == ("b", 32, 3)
    assert select_sources(library, "t1", include_target_prompt=True).names == ("a", "b", "c")
    assert library.select("t3", sources=["a", "b", "c"]).names == ("a", "b")
    with pytest.raises(InvalidValueError, match=r"--sources \['zz'\] are not in prompt library"):
        select_sources(library, "t1", sources=["b", "zz"])
    with pytest.raises(InvalidValueError, match=r"has 1 usable prompt\(s\)"):
        select_sources(library, "t1", sources=["a", "b"])


def test_mixed_backbones_and_sizes_need_a_choice(tmp_path):
    library = _library(tmp_path, [("a", "t1", "x", 32), ("b", "t2", "y", 32), ("c", "t3", "y", 32)])
    with pytest.raises(InvalidValueError, match="mixes backbones"):
        select_sources(library, "none")
    assert select_sources(library, "none", backbone="y").names == ("b", "c")
    with pytest.raises(InvalidValueError, match=r"has 1 prompt\(s\) for backbone 'x'"):
        select_sources(library, "none", backbone="x")
    sizes = _library(tmp_path / "s", [("a", "t1", "x", 32), ("b", "t2", "x", 64), ("c", "t3", "x", 64)])
    with pytest.raises(InvalidValueError, match="image sizes"):
        select_sources(sizes, "none")
    with pytest.raises(InvalidValueError, match="not all at --img-size 32"):
        select_sources(sizes, "none", img_size=32)  # sizes are checked, not filtered
    assert select_sources(sizes, "none", sources=["b", "c"], img_size=64).names == ("b", "c")


def test_open_library_refuses_a_folder_and_a_damaged_library(tmp_path):
    with pytest.raises(InvalidValueError, match="is not a prompt library"):
        open_library(tmp_path)
    library = _library(tmp_path, [("a", "t1", "b", 32), ("b", "t2", "b", 32)])
    (library.root / library.record("a").file).write_bytes(b"truncated")
    with pytest.raises(IntegrityError, match="is damaged"):
        open_library(library.root)

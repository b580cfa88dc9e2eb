"""Prompt files and tensors: checks of a name, a tensor to add, and a file against its record
(size, SHA-256, safetensors, shape) and against a caller's backbone."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from hgprompt_ray.errors import IntegrityError, InvalidValueError, invalid_value
from hgprompt_ray.hashing import sha256_file
from hgprompt_ray.prompts.manifest import PromptRecord

__all__ = [
    "NAME_PATTERN",
    "TENSOR_KEY",
    "check_compatible",
    "check_prompt_name",
    "checked_prompt_tensor",
    "load_checked",
]

TENSOR_KEY = "prompt"
"""The one tensor of a library's prompt file."""
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
"""A prompt's name (the manifest schema's ``name`` pattern)."""


def check_prompt_name(name: str) -> None:
    """Raise InvalidValueError unless ``name`` can name a prompt (and its file)."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise InvalidValueError(
            invalid_value(
                "name",
                name,
                "must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit",
                "Rename the prompt, e.g. 'digits-seed0'.",
            )
        )


def load_checked(path: Path, record: PromptRecord, where: str | None = None) -> torch.Tensor:
    """The prompt in ``path``, refused with an IntegrityError unless it is the file ``record``
    describes (size, then SHA-256, then a readable safetensors file holding one (m, d) tensor).

    Args:
        path: a local file (a library's, or a download not yet in the library).
        record: its manifest entry.
        where: how messages name the file (default: ``path``; an import names the URI).

    Shape:
        returns: (m, d) float32.
    """
    where = where or str(path)
    record.check_file(path.stat().st_size, sha256_file(path), where)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise IntegrityError(
            f"{where} is not a readable safetensors file ({error}). Fix: re-import the prompt."
        ) from error
    if TENSOR_KEY not in tensors:
        raise IntegrityError(f"{where} holds no tensor named {TENSOR_KEY!r}. Fix: re-import the prompt.")
    tensor = tensors[TENSOR_KEY]
    if tuple(tensor.shape) != (record.num_tokens, record.embed_dim):
        raise IntegrityError(
            f"{where} has shape {tuple(tensor.shape)} but the manifest records "
            f"({record.num_tokens}, {record.embed_dim}). Fix: re-import the prompt."
        )
    return tensor


def checked_prompt_tensor(prompt: Any, what: str) -> torch.Tensor:
    """``prompt`` as a contiguous float32 (m, d) tensor; TypeError/InvalidValueError naming ``what``."""
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


def check_compatible(
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

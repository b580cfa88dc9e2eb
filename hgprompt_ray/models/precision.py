"""Numeric precision of every network pass: ``auto | fp32 | bf16``, resolved once per process.

``auto`` means bf16 autocast where the hardware runs bf16 natively, float32 elsewhere:

- on CUDA, bf16 when ``torch.cuda.is_bf16_supported()`` (Ampere and later);
- on a CPU, bf16 when the CPU has native bf16 instructions (AMX-BF16 or AVX512-BF16), read from
  ``/proc/cpuinfo`` flags on Linux and from torch's own CPU capability report elsewhere.

Only the network runs under autocast (matmuls and attention in bf16, norms and softmax kept in
float32 by torch's autocast lists). Parameters, prompts and their gradients stay float32, and every
statistic computed from the network's outputs (covariances, H-scores, the alignment) is float64
downstream: ``features.float()`` leaves here. The resolved precision (never ``auto``) is part of
the extraction cache key, so bf16 and fp32 tables are never mixed.
"""

from __future__ import annotations

import contextlib
import functools
import platform
from collections.abc import Iterator
from pathlib import Path

import torch

from hgprompt_ray.config import PRECISIONS
from hgprompt_ray.errors import InvalidValueError, invalid_value

__all__ = ["PRECISIONS", "autocast", "cpu_bf16_flags", "native_bf16", "resolve_precision"]


@functools.cache
def cpu_bf16_flags() -> tuple[str, ...]:
    """The native bf16 instruction sets of this CPU: a subset of ``('amx_bf16', 'avx512_bf16')``."""
    flags: set[str] = set()
    cpuinfo = Path("/proc/cpuinfo")
    if platform.system() == "Linux" and cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
                break
    else:  # torch reports AVX512/AMX capability on x86 without /proc (e.g. Windows)
        capability = str(getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")())
        if "AMX" in capability.upper():
            flags.add("amx_bf16")
    return tuple(flag for flag in ("amx_bf16", "avx512_bf16") if flag in flags)


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` runs bf16 natively (so that ``auto`` picks bf16 there)."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return bool(cpu_bf16_flags())
    return False


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """``auto`` -> ``bf16`` or ``fp32`` for ``device``; ``fp32`` and ``bf16`` pass through.

    Raises:
        InvalidValueError: ``precision`` is not one of :data:`PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise InvalidValueError(
            invalid_value(
                "precision",
                precision,
                f"must be one of {list(PRECISIONS)}",
                "Use 'auto' (bf16 where the hardware has it), 'fp32' or 'bf16'.",
            )
        )
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


@contextlib.contextmanager
def autocast(precision: str, device: torch.device | str = "cpu") -> Iterator[str]:
    """Run the enclosed network code at ``precision`` on ``device``; yields the resolved name.

    ``fp32`` is a no-op (and switches off any enclosing autocast); ``bf16`` is
    ``torch.autocast(device_type, dtype=torch.bfloat16)``.
    """
    device = torch.device(device)
    resolved = resolve_precision(precision, device)
    device_type = device.type if device.type in ("cpu", "cuda") else "cpu"
    if resolved == "bf16":
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
            yield resolved
    else:
        with torch.autocast(device_type=device_type, enabled=False):
            yield resolved

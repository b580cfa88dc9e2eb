"""PANDA: prompt transfer plus knowledge distillation from every source-prompted model.

Zhong, Ding, Liu, Du, Jin, Tao, "PANDA: Prompt Transfer Meets Knowledge Distillation for
Efficient Model Adaptation", IEEE TKDE 2024 (NLP). The target prompt starts from the most
transferable source prompt and trains with the target loss plus a distillation loss toward the
source-prompted models, weighted by the sources' transferability:

    L = CE(head(s(x)), y) + beta * sum_i w_i || s(x) - f_i(x) ||^2 / d

Adaptation to vision, documented: in NLP the teachers' outputs live in the shared vocabulary;
the source prompts here come without a head for the target's classes, so the distilled output is
the frozen ViT's final-norm CLS feature under each source prompt, f_i(x) (the representation
that every head here reads), and the student's s(x) is the same feature under the target prompt.
Transferability w_i is the zero-shot val200 accuracy of source i on the target, normalised to the
simplex (the measure Single-Best ranks by). Since sum_i w_i = 1, the loss equals
||s - t||^2 / d + const with t = sum_i w_i f_i, so each image's teacher target t(x) is computed
once (one K-prompt pass, no gradient) and kept for the following epochs. ``panda_distill_weight``
is beta (>= 0; 0 reduces PANDA to prompt transfer from the best source).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from hgprompt_ray.errors import InvalidValueError, invalid_value
from hgprompt_ray.models import PromptedViT
from hgprompt_ray.transfer.methods.common import BuildContext, prompt_classifier
from hgprompt_ray.transfer.methods.inputs import WeightingInputs
from hgprompt_ray.transfer.methods.registry import MethodKind, TransferMethod, register_method


@dataclass(frozen=True)
class PandaSettings:
    """PANDA's setting."""

    panda_distill_weight: float = field(
        default=1.0, metadata={"help": "PANDA: weight beta >= 0 of the distillation loss"}
    )

    def __post_init__(self) -> None:
        value = self.panda_distill_weight
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
            raise InvalidValueError(
                invalid_value("panda_distill_weight", value, "must be a finite number >= 0",
                              "Pass --panda-distill-weight 1 (0 switches the distillation off).")  # fmt: skip
            )


def transferability_weights(inputs: WeightingInputs, seed: int = 0) -> np.ndarray:
    """w_i = zero-shot val200 accuracy of source i, normalised to sum 1."""
    accuracy = np.clip(np.array([inputs.zero_shot_val[s] for s in inputs.sources], dtype=np.float64), 0, None)
    return accuracy / accuracy.sum() if accuracy.sum() > 0 else np.full(len(accuracy), 1.0 / len(accuracy))


class PandaClassifier(nn.Module):
    """A prompted ViT trained with the target loss and the distillation toward the sources.

    Args:
        model: the prompted ViT with its head (its prompt starts at the best source).
        sources: the frozen source prompts (K, m, d).
        weights: the transferability weights (K,) on the simplex.
        beta: the distillation weight.
    """

    def __init__(self, model: PromptedViT, sources: torch.Tensor, weights: np.ndarray, beta: float) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("sources", sources.detach().clone().float())
        self.register_buffer("weights", torch.as_tensor(np.asarray(weights), dtype=torch.float32))
        self.beta = float(beta)
        self._teacher: dict[int, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)  # type: ignore[no-any-return]

    def teacher(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """t(x) = sum_i w_i f_i(x) for a batch, computed once per image index (module docstring)."""
        missing = [j for j, i in enumerate(indices.tolist()) if i not in self._teacher]
        if missing:
            with torch.no_grad():
                features = self.model.forward_features(x[missing], self.sources).float()  # (K, b, d)
                combined = torch.einsum("k,kbd->bd", self.weights, features)
            for j, row in zip(missing, combined):
                self._teacher[int(indices[j])] = row
        return torch.stack([self._teacher[int(i)] for i in indices.tolist()])

    def training_loss(self, x: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """CE of the head plus beta times the mean squared distance to the teacher target."""
        student = self.model.forward_features(x)
        loss = nn.functional.cross_entropy(self.model.head(student), labels)
        if self.beta > 0:
            target = self.teacher(x, indices).to(student.device)
            loss = loss + self.beta * (student.float() - target).pow(2).mean()
        return loss

    def train(self, mode: bool = True) -> PandaClassifier:
        super().train(mode)
        self.model.train(mode)  # keeps the backbone in eval mode
        return self


def build_panda(context: BuildContext) -> nn.Module:
    """The target prompt from the most transferable source, with the distillation toward all."""
    if context.sources is None or context.weights is None:
        raise InvalidValueError(invalid_value("sources", None, "and their weights are required for PANDA",
                                              "Pass the source prompts and the transferability weights."))  # fmt: skip
    settings = context.settings or PandaSettings()
    best = context.sources[int(np.argmax(context.weights))]
    model = prompt_classifier(context, prompt=best)
    return PandaClassifier(model, context.sources, context.weights, settings.panda_distill_weight)


METHOD = register_method(
    TransferMethod(
        name="panda",
        label="PANDA",
        kind=MethodKind.TUNING,
        paper="Zhong et al., PANDA: Prompt Transfer Meets Knowledge Distillation for Efficient Model "
        "Adaptation, IEEE TKDE 2024 (adapted to vision: feature distillation)",
        trains=("model.prompt", "model.head.*"),
        trains_text="prompt (from the best source) + head, distilled toward the sources",
        reads=("train800", "val200", "sources", "zero-shot val200"),
        weights=transferability_weights,
        build=build_panda,
        settings=PandaSettings,
        order=62,
    )
)

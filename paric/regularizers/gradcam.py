"""Regularise the classifier's own Grad-CAM towards the reference (GALS' ``gradcam`` baseline).

``match``: ‖P − A‖; ``suppress_outside``: ‖P − P ⊙ A‖ (only attention outside A costs), with A
resized to the classifier's feature grid and optional per-pixel confidence weights.
``energy_outside``: the share of the CAM's mass outside A, (Σ P(1−A) + ε)/(Σ P + ε). Why: both GALS
forms are minimised by an all-zero CAM (ReLU of negative evidence), and on the embedded benchmark
models collapse to it within an epoch (measured); here an empty CAM costs the most, 1.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field

from paric.models.cam import cam_from
from paric.registry import PluginOptions
from paric.regularizers.base import REGULARIZERS, Regularizer, StepInputs, norm_of

if TYPE_CHECKING:
    from paric.config import MethodConfig


class GradCAMOptions(PluginOptions):
    """``gradcam``'s options (before issue 29: the method keys ``cam_mode``, ``cam_norm``)."""

    mode: Literal["match", "suppress_outside", "energy_outside"] = Field(
        "energy_outside", description="‖P − A‖, ‖P − P ⊙ A‖, or the CAM's share of mass outside A (see the module)")
    norm: Literal["l1", "l2"] = Field("l1", description="match / suppress_outside: mean |·| or mean (·)²")


@REGULARIZERS.register("gradcam")
class GradCAMRegularizer(Regularizer):
    Options: ClassVar[type[BaseModel]] = GradCAMOptions
    needs_features = True
    cost = 3.0  # the CAM's gradient w.r.t. features, kept in the graph

    def __init__(self, weight: float, options: GradCAMOptions = GradCAMOptions()) -> None:
        super().__init__(weight)
        self.mode, self.norm = options.mode, options.norm

    @classmethod
    def from_method(cls, m: MethodConfig) -> "GradCAMRegularizer":
        return cls(m.weight, cls.options_of(m))

    def per_image(self, s: StepInputs) -> torch.Tensor:
        cam = cam_from(s.logits, s.features, s.y, create_graph=True)  # (B, h, w), graph to params
        grid = cam.shape[-2:]
        a = F.adaptive_avg_pool2d(s.ref.map.unsqueeze(1), grid).squeeze(1)
        w = F.adaptive_avg_pool2d(s.ref.weight.unsqueeze(1), grid).squeeze(1)
        if self.mode == "energy_outside":
            eps = 1e-6
            return ((cam * (1 - a) * w).flatten(1).sum(1) + eps) / ((cam * w).flatten(1).sum(1) + eps)
        diff = cam - a if self.mode == "match" else cam - cam * a
        return norm_of(diff * w, self.norm)

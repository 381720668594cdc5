"""GALS' main regulariser: penalise the input gradient outside the reference map.

L_att = mean | ∂T/∂x ⊙ (1 − A) ⊙ w |, with T the CE loss (GALS) or Σ_c log p_c (RRR, "right for the
right reasons"), taken with ``create_graph=True`` so the penalty trains the model (double backprop).
Why the RRR target: once the model is confident, ∂CE/∂x vanishes on most samples and the GALS form
stops constraining the shortcut; the log-probability gradient does not vanish.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from pydantic import BaseModel, Field

from paric.registry import PluginOptions
from paric.regularizers.base import REGULARIZERS, Regularizer, StepInputs, norm_of

if TYPE_CHECKING:
    from paric.config import MethodConfig


class GradientOutsideOptions(PluginOptions):
    """``gradient_outside``'s options (before issue 29: the method keys ``grad_target``, ``grad_norm``)."""

    target: Literal["ce", "log_prob"] = Field(
        "log_prob", description="input gradient of the CE (GALS) or of Σ log p (RRR)")
    norm: Literal["l1", "l2"] = Field("l1", description="per-image mean |·| or mean (·)² of the masked gradient")


@REGULARIZERS.register("gradient_outside")
class GradientOutside(Regularizer):
    Options: ClassVar[type[BaseModel]] = GradientOutsideOptions
    needs_input_grad = True
    cost = 3.5  # double backprop

    def __init__(self, weight: float, options: GradientOutsideOptions = GradientOutsideOptions()) -> None:
        super().__init__(weight)
        self.target, self.norm = options.target, options.norm

    @classmethod
    def from_method(cls, m: MethodConfig) -> "GradientOutside":
        return cls(m.weight, cls.options_of(m))

    def input_gradient(self, s: StepInputs) -> torch.Tensor:
        if self.target == "ce":
            t = s.ce.sum()
        else:
            t = torch.log_softmax(s.logits, dim=1).sum()
        (g,) = torch.autograd.grad(t, s.x, create_graph=True)
        return g

    def per_image(self, s: StepInputs) -> torch.Tensor:
        g = self.input_gradient(s)  # (B, 3, H, W)
        self.input_grad = g.detach()
        outside = ((1.0 - s.ref.map) * s.ref.weight).unsqueeze(1)  # broadcast over RGB
        return norm_of(g * outside, self.norm)

"""``background_swap``: the prediction must not change when what lies outside the reference changes.

L_att = mean_i ½[KL(p(x_i) ‖ p(x̃_i)) + KL(p(x̃_i) ‖ p(x_i))], x̃_i = x_i + (1 − A_i)·w_i·(x_j − x_i), with x_j
another image of the batch (its place, its object, its texture) and A_i the reference in [0, 1].

Why (our option beside GALS' exact form, not a published method): an input-gradient penalty
constrains the model only infinitesimally around each training image, and on the embedded
benchmark a model encodes the place with units that are flat on every training image, so the
penalty is met while the shortcut stays (README, collapse analysis). A finite counterfactual
cannot be met that way: if the output reads the background, swapping it moves the output. It costs
one extra forward/backward instead of double backprop's second-order graph.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field

from paric.registry import PluginOptions
from paric.regularizers.base import REGULARIZERS, Regularizer, StepInputs

if TYPE_CHECKING:
    from paric.config import MethodConfig


def counterfactual(x: torch.Tensor, ref_map: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Each image with its outside-the-reference part taken from the next image in the batch."""
    keep = 1.0 - (1.0 - ref_map) * weight  # 1 inside the reference (and where it is uncertain)
    return x * keep.unsqueeze(1) + x.roll(1, dims=0) * (1.0 - keep).unsqueeze(1)


class BackgroundSwapOptions(PluginOptions):
    """``background_swap``'s options (before issue 29: the method key ``swap_loss``)."""

    loss: Literal["kl", "ce"] = Field(
        "kl", description="symmetric KL between the image's and its counterfactual's prediction, or the "
        "counterfactual's CE")


@REGULARIZERS.register("background_swap")
class BackgroundSwap(Regularizer):
    Options: ClassVar[type[BaseModel]] = BackgroundSwapOptions
    cost = 2.0  # one more forward/backward

    def __init__(self, weight: float, options: BackgroundSwapOptions = BackgroundSwapOptions()) -> None:
        super().__init__(weight)
        self.loss = options.loss

    @classmethod
    def from_method(cls, m: MethodConfig) -> "BackgroundSwap":
        return cls(m.weight, cls.options_of(m))

    def per_image(self, s: StepInputs) -> torch.Tensor:
        if len(s.x) < 2:  # no other image to take a background from
            return s.logits.new_zeros(len(s.x))
        x_cf = counterfactual(s.x, s.ref.map, s.ref.weight)
        logits_cf = s.forward(x_cf) if s.forward is not None else s.model(x_cf)
        lq = F.log_softmax(logits_cf, dim=1)
        if self.loss == "ce":
            return F.nll_loss(lq, s.y, reduction="none")
        lp = F.log_softmax(s.logits, dim=1)
        return 0.5 * ((lp.exp() * (lp - lq)).sum(1) + (lq.exp() * (lq - lp)).sum(1))

"""What a regulariser sees at each step, and the interface all of them share.

Why one small interface: the training loop computes the forward pass once and hands each
regulariser exactly what it needs (input gradients, the classifier's features); adding LICO or a
new map source later means one module here, not another training loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar

import torch

from paric.models.classifier import Classifier
from paric.registry import Registry
from paric.regularizers.reference import Reference

if TYPE_CHECKING:
    from paric.config import MethodConfig


@dataclass
class StepInputs:
    """One training step's tensors. ``x`` requires grad when the regulariser asks for it."""

    model: Classifier
    x: torch.Tensor  # (B, 3, H, W) in [0, 1]
    y: torch.Tensor  # (B,)
    logits: torch.Tensor  # (B, C)
    features: torch.Tensor | None  # (B, C', h, w) at the model's cam_layer
    ce: torch.Tensor  # (B,) per-sample cross-entropy (already class/group weighted)
    ref: Reference | None
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None  # the (possibly DDP-wrapped) model's forward


class Regularizer:
    """An attention term λ·L_att added to the classification loss.

    Subclasses give ``per_image`` (B,) values; the term is λ times their mean over the images that
    have a reference. The last call's per-image values (``last``) and, for input-gradient
    regularisers, its input gradient (``input_grad``) are kept detached for the training
    diagnostics; both are reset at every call, so a skipped step never reports a stale one.
    """

    needs_input_grad: ClassVar[bool] = False
    needs_features: ClassVar[bool] = False
    #: relative cost of a training step with this term (1 = a plain step): final runs start costliest first
    cost: ClassVar[float] = 1.0

    def __init__(self, weight: float) -> None:
        self.weight = weight
        self.last: torch.Tensor | None = None
        self.input_grad: torch.Tensor | None = None

    @classmethod
    def from_method(cls, m: "MethodConfig") -> "Regularizer":
        """Build from a method's config (subclasses read their own keys)."""
        return cls(m.weight)

    def per_image(self, s: StepInputs) -> torch.Tensor:
        """L_att of each image (B,)."""
        raise NotImplementedError

    def penalty(self, s: StepInputs) -> torch.Tensor:
        """L_att for the batch (a scalar); images without a valid reference contribute zero."""
        per = self.per_image(s)
        self.last = per.detach()
        return masked_mean(per, s.ref.valid)

    def __call__(self, s: StepInputs) -> torch.Tensor:
        self.last = self.input_grad = None
        if self.weight == 0 or s.ref is None or not bool(s.ref.valid.any()):
            return s.logits.new_zeros(())
        return self.weight * self.penalty(s)


#: regularizer name (``MethodConfig.regularizer``) -> its class; a class joins with ``@REGULARIZERS.register``
REGULARIZERS: Registry[type[Regularizer]] = Registry("regularizer")


@REGULARIZERS.register("none")
class NoRegularizer(Regularizer):
    """``none`` (and ``upweight``, whose change is in the CE weights): no attention term."""

    def __init__(self, weight: float = 0.0) -> None:
        super().__init__(0.0)


def masked_mean(per_image: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over the images that have a reference; zero (with grad) when none has."""
    v = valid.to(per_image.dtype)
    return (per_image * v).sum() / v.sum().clamp_min(1.0)


def norm_of(t: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-image mean |t| (l1) or mean t² (l2) over all but the batch dim."""
    return (t.abs() if kind == "l1" else t.square()).flatten(1).mean(1)

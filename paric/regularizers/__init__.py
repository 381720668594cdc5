"""Attention regularisers (METHODS.md §1, §3): each a small module; built from a method config."""
from __future__ import annotations

from paric.config import MethodConfig
from paric.regularizers.balance import balance_weights
from paric.regularizers.base import NoRegularizer, Regularizer, StepInputs
from paric.regularizers.gradcam import GradCAMRegularizer
from paric.regularizers.gradient_outside import GradientOutside
from paric.regularizers.reference import Reference, build_reference, needed_columns


def build_regularizer(method: MethodConfig) -> Regularizer:
    """The attention term a method adds to its CE loss."""
    if method.regularizer == "none":
        return NoRegularizer()
    if method.regularizer == "gradient_outside":
        return GradientOutside(method.weight, method.grad_target, method.grad_norm)
    if method.regularizer == "gradcam":
        return GradCAMRegularizer(method.weight, method.cam_mode, method.cam_norm)
    raise ValueError(f"unknown regularizer {method.regularizer!r}")


__all__ = ["Reference", "Regularizer", "StepInputs", "balance_weights", "build_reference",
           "build_regularizer", "needed_columns"]

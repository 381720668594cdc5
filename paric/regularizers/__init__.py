"""Attention regularisers (METHODS.md §1, §3): each a small module; built from a method config."""
from __future__ import annotations

from typing import Callable

from paric.config import MethodConfig
from paric.regularizers.background_swap import BackgroundSwap
from paric.regularizers.balance import balance_weights
from paric.regularizers.base import NoRegularizer, Regularizer, StepInputs
from paric.regularizers.gradcam import GradCAMRegularizer
from paric.regularizers.gradient_outside import GradientOutside
from paric.regularizers.reference import Reference, build_reference, needed_columns


#: regularizer name -> builder from the method's config (a new regulariser: one module + one entry)
REGULARIZERS: dict[str, Callable[[MethodConfig], Regularizer]] = {
    "none": lambda m: NoRegularizer(),
    "gradient_outside": lambda m: GradientOutside(m.weight, m.grad_target, m.grad_norm),
    "gradcam": lambda m: GradCAMRegularizer(m.weight, m.cam_mode, m.cam_norm),
    "background_swap": lambda m: BackgroundSwap(m.weight, m.swap_loss),
}


def build_regularizer(method: MethodConfig) -> Regularizer:
    """The attention term a method adds to its CE loss."""
    if method.regularizer not in REGULARIZERS:
        raise ValueError(f"unknown regularizer {method.regularizer!r}; known: {sorted(REGULARIZERS)}")
    return REGULARIZERS[method.regularizer](method)


__all__ = ["Reference", "Regularizer", "StepInputs", "balance_weights", "build_reference",
           "build_regularizer", "needed_columns"]

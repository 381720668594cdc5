"""Attention regularisers (METHODS.md §1, §3): each a small module; built from a method config."""
from __future__ import annotations

from paric.config import MethodConfig
# each module registers its class in REGULARIZERS on import (a new regulariser: one module + its import here)
from paric.regularizers import abn, background_swap, gradcam, gradient_outside, lico  # noqa: F401
from paric.regularizers.balance import balance_weights
from paric.regularizers.base import REGULARIZERS, NoRegularizer, Regularizer, RunContext, StepInputs, total
from paric.regularizers.reference import Reference, build_reference, needed_columns


def build_regularizer(method: MethodConfig, context: RunContext | None = None) -> Regularizer:
    """The loss terms a method adds to its CE loss."""
    return REGULARIZERS.get(method.regularizer).build(method, context)


__all__ = ["REGULARIZERS", "NoRegularizer", "Reference", "Regularizer", "RunContext", "StepInputs", "balance_weights",
           "build_reference", "build_regularizer", "needed_columns", "total"]

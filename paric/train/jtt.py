"""Just Train Twice (Liu et al., 2021): train ERM for T epochs, take the training points it gets
wrong (the error set), then train again from scratch with the error set upsampled λ_up times.

Why upsampling rather than loss weights: the paper upsamples (each error point appears λ_up times
per epoch), so each epoch's batches are what its authors' were; the second run is otherwise an
ordinary run, selected by worst-group validation accuracy as the paper does (group labels on
validation only).
"""
from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from paric.registry import PluginOptions


class JttOptions(PluginOptions):
    """JTT's options (``two_stage_options``; before issue 29: the method keys ``jtt_epochs``, ``jtt_up``)."""

    epochs: int = Field(ge=1, description="epochs T of the first (ERM) stage whose misclassified training points "
                        "form the error set")
    up: int = Field(20, ge=1, description="the error set appears this many times per epoch (λ_up)")


@torch.no_grad()
def error_set(model: torch.nn.Module, batches) -> np.ndarray:
    """A boolean mask over the (prepared, unshuffled, unflipped) batches' rows: misclassified by ``model``."""
    model.eval()
    wrong = [(model(b["image"]).argmax(1) != b["label"]).cpu() for b in batches]
    return torch.cat(wrong).numpy()


def upsampled_rows(errors: np.ndarray, up: int) -> np.ndarray:
    """Row indices of the second stage's train set: every row once, and each error row ``up − 1`` more
    times (so λ_up times in all)."""
    extra = np.repeat(np.flatnonzero(errors), max(0, up - 1))
    return np.concatenate([np.arange(len(errors)), extra])

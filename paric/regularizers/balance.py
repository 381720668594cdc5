"""``upweight``: inverse-frequency weights for the cross-entropy (by class, or by group).

Why a separate module: it changes the classification loss, not the attention term, and it is
the baseline GALS compares against (class-reweighted CE).
"""
from __future__ import annotations

import numpy as np
import torch


def balance_weights(keys: np.ndarray, n: int) -> torch.Tensor:
    """Weight per key value (n of them) ∝ 1/count, scaled so the weighted mean over the data is 1.

    Values that never occur get weight 0 (they have no samples to weight).
    """
    counts = np.bincount(np.asarray(keys, dtype=np.int64), minlength=n).astype(np.float64)
    w = np.where(counts > 0, len(keys) / (np.count_nonzero(counts) * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)

"""Calibration: expected calibration error (equal-width confidence bins) and NLL."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """ECE = Σ_b |B_b|/N · |acc(B_b) − conf(B_b)| over ``bins`` equal-width bins of max-probability."""
    probs, y = np.asarray(probs, dtype=np.float64), np.asarray(y)
    conf, pred = probs.max(1), probs.argmax(1)
    correct = (pred == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            total += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(total)


def negative_log_likelihood(logits: np.ndarray, y: np.ndarray) -> float:
    return float(F.cross_entropy(torch.as_tensor(logits, dtype=torch.float64), torch.as_tensor(y)).item())

"""Group-robustness metrics: overall, per-group, mean-of-groups, worst-group, class-balanced.

Waterbirds groups are (label, place); "per-group" is the mean of the group accuracies and
worst-group their minimum. Class-balanced accuracy (mean per-class recall) needs no group labels,
which is why GALS selects epochs by it on validation data.
"""
from __future__ import annotations

import numpy as np


def _acc_by(keys: np.ndarray, correct: np.ndarray, n: int) -> list[float | None]:
    out: list[float | None] = []
    for k in range(n):
        sel = keys == k
        out.append(float(correct[sel].mean()) if sel.any() else None)
    return out


def group_metrics(pred: np.ndarray, y: np.ndarray, group: np.ndarray | None, n_classes: int,
                  n_groups: int | None = None) -> dict:
    """Accuracies of predictions ``pred`` against labels ``y``; groups absent from the data are
    reported as None and ignored in the mean/worst."""
    pred, y = np.asarray(pred), np.asarray(y)
    correct = (pred == y).astype(np.float64)
    per_class = _acc_by(y, correct, n_classes)
    present = [a for a in per_class if a is not None]
    out = {"acc": float(correct.mean()), "balanced_acc": float(np.mean(present)), "per_class_acc": per_class,
           "worst_class_acc": float(np.min(present))}
    if group is not None and n_groups:
        per_group = _acc_by(np.asarray(group), correct, n_groups)
        seen = [a for a in per_group if a is not None]
        out.update(per_group_acc=per_group, mean_group_acc=float(np.mean(seen)), worst_group_acc=float(np.min(seen)))
    return out


def balanced_accuracy(pred: np.ndarray, y: np.ndarray, n_classes: int) -> float:
    """Mean per-class recall: the model-selection objective (no group labels)."""
    return group_metrics(pred, y, None, n_classes)["balanced_acc"]

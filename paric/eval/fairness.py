"""Dataset-specific metrics of GALS' Food-101 and COCO apparent-gender benchmarks (METHODS.md §1).

Why separate from paric.eval.groups: these are not group accuracies. Food-101 red meat reports
the worst *class* accuracy; COCO reports how lopsided the gender predictions are:

- ratio = #woman predictions / #man predictions over the images labelled man or woman, and
  ratio Δ = |1 − ratio| (0 when the model predicts "woman" as often as "man" on the balanced test set);
- outcome divergence = Jensen–Shannon divergence (log base 2, so in [0, 1]) between the outcome
  distributions of the woman images and of the man images, the outcomes being
  [correct gender, wrong gender, other (e.g. "person")].

GALS computes the divergence with a hand-written KL that returns NaN when an outcome has zero
count; ``scipy.spatial.distance.jensenshannon`` (whose square is the divergence) handles zeros.
Plain numpy/scipy, no torch, no Ray.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.spatial.distance import jensenshannon


def per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> list[float | None]:
    """Recall of each class; None for a class absent from ``y_true``."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    out: list[float | None] = []
    for c in range(n_classes):
        sel = y_true == c
        out.append(float((y_pred[sel] == c).mean()) if sel.any() else None)
    return out


def worst_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Minimum per-class accuracy over the classes present (Food-101 red meat's second number)."""
    present = [a for a in per_class_accuracy(y_true, y_pred, n_classes) if a is not None]
    if not present:
        raise ValueError("worst_class_accuracy: y_true is empty")
    return float(min(present))


def _index(classes: Sequence[str], name: str) -> int:
    lowered = [c.lower() for c in classes]
    if name not in lowered:
        raise ValueError(f"classes {list(classes)} have no '{name}' class: expected COCO gender classes "
                         "[man, woman, person]")
    return lowered.index(name)


def gender_ratio(y_true: np.ndarray, y_pred: np.ndarray, man: int, woman: int) -> float:
    """#woman predictions / #man predictions on the images labelled man or woman (NaN if no man predictions)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    gendered = (y_true == man) | (y_true == woman)
    n_man = int((y_pred[gendered] == man).sum())
    n_woman = int((y_pred[gendered] == woman).sum())
    return float(n_woman / n_man) if n_man else float("nan")


def outcome_rates(y_true: np.ndarray, y_pred: np.ndarray, label: int, other_gender: int) -> np.ndarray:
    """[correct, wrong-gender, other] prediction rates over the images labelled ``label``."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    p = y_pred[y_true == label]
    if len(p) == 0:
        raise ValueError(f"no image has label {label}: the outcome divergence needs both genders")
    return np.array([(p == label).mean(), (p == other_gender).mean(), ((p != label) & (p != other_gender)).mean()])


def outcome_divergence(y_true: np.ndarray, y_pred: np.ndarray, man: int, woman: int) -> float:
    """Jensen–Shannon divergence (base 2) between the women's and the men's outcome rates."""
    w = outcome_rates(y_true, y_pred, woman, man)
    m = outcome_rates(y_true, y_pred, man, woman)
    return float(jensenshannon(w, m, base=2) ** 2)


def _same_shape(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true).astype(np.int64), np.asarray(y_pred).astype(np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    return y_true, y_pred


def class_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """Food-101's (GALS' red-meat subset): ``worst_class_acc`` and ``acc_<class>``."""
    y_true, y_pred = _same_shape(y_true, y_pred)
    per = per_class_accuracy(y_true, y_pred, len(classes))
    out = {"worst_class_acc": worst_class_accuracy(y_true, y_pred, len(classes))}
    out.update({f"acc_{c}": a for c, a in zip(classes, per) if a is not None})
    return out


def gender_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """COCO apparent gender's: ``ratio``, ``ratio_delta``, ``outcome_divergence``, ``acc_man``, ``acc_woman``."""
    y_true, y_pred = _same_shape(y_true, y_pred)
    man, woman = _index(classes, "man"), _index(classes, "woman")
    ratio = gender_ratio(y_true, y_pred, man, woman)
    per = per_class_accuracy(y_true, y_pred, len(classes))
    return {"ratio": ratio, "ratio_delta": abs(1.0 - ratio),
            "outcome_divergence": outcome_divergence(y_true, y_pred, man, woman),
            "acc_man": per[man] if per[man] is not None else float("nan"),
            "acc_woman": per[woman] if per[woman] is not None else float("nan")}

"""Deep Feature Reweighting (Kirichenko et al., 2023): keep a trained ERM backbone, retrain only its
last layer by ℓ1 logistic regression on group-balanced validation data.

Why the protocol below (DFR^Tr_Val as the authors run it): features are standardised with the
*training* embeddings' mean and std; C is chosen by worst-group accuracy on one half of validation
after fitting, for every C, on the *same* group-balanced subsample of the other half; the final
layer is the average of ``subsamples`` (the authors: 20) fits, each on a fresh group-balanced
subsample of the whole validation split. scikit-learn does the fits.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from pydantic import Field

from paric.eval.groups import group_metrics
from paric.registry import PluginOptions

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression

#: the protocol's form, in a DFR run's cache key: 2 is issue 28's (train-split standardisation, one tuning
#: subsample for every C, 20 fits), so a run refit under the earlier form is not reused
FORM_VERSION = 2


class DfrOptions(PluginOptions):
    """DFR's options (``posthoc_options``; before issue 29: the method keys ``dfr_c``, ``dfr_subsamples``)."""

    c: list[float] = Field([1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01], min_length=1,
                           description="the ℓ1 inverse strengths C tried (chosen on half of validation)")
    subsamples: int = Field(20, ge=1, description="group-balanced subsamples whose fits are averaged (the authors' 20)")


@torch.no_grad()
def penultimate(model: torch.nn.Module, head: torch.nn.Module, batches) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The inputs of ``head`` (the last layer) for prepared batches: (features, labels, groups)."""
    seen: list[torch.Tensor] = []
    handle = head.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0].detach().cpu()))
    ys, gs = [], []
    try:
        model.eval()
        for b in batches:
            model(b["image"])
            ys.append(b["label"].cpu())
            gs.append(b["group"].cpu())
    finally:
        handle.remove()
    return torch.cat(seen).double().numpy(), torch.cat(ys).numpy(), torch.cat(gs).numpy()


def balanced_subsample(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices with the same number of rows from every group present (the smallest group's count),
    drawn without replacement."""
    present = np.unique(groups)
    n = min(int((groups == g).sum()) for g in present)
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(groups == g), n, replace=False) for g in present]))


def _fit(X: np.ndarray, y: np.ndarray, c: float, seed: int) -> "LogisticRegression":
    from sklearn.linear_model import LogisticRegression  # here: every Ray worker imports the post-hoc registry

    return LogisticRegression(l1_ratio=1.0, C=c, solver="liblinear", random_state=seed).fit(X, y)  # ℓ1


@dataclass
class DfrFit:
    """The retrained last layer on *raw* features (standardisation folded in), and how C was chosen."""

    weight: np.ndarray  # (n_classes, D)
    bias: np.ndarray  # (n_classes,)
    c: float
    tune: dict[float, float] = field(default_factory=dict)  # C -> worst-group accuracy on the held-out half
    subsamples: list[np.ndarray] = field(default_factory=list)  # the rows each final fit saw


def _as_layer(coef: np.ndarray, intercept: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's coefficients as the rows of a softmax layer (binary: ±½ of the one row)."""
    if n_classes == 2 and coef.shape[0] == 1:
        return np.concatenate([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    return coef, intercept


def fit_dfr(feats: np.ndarray, y: np.ndarray, groups: np.ndarray, n_classes: int, n_groups: int,
            cs: list[float], subsamples: int, seed: int, train_feats: np.ndarray | None = None) -> DfrFit:
    """DFR on validation features; ``train_feats`` (the training split's) give the standardisation,
    as the authors' (None: validation's own); ``n_groups`` for the worst-group tuning metric."""
    rng = np.random.default_rng(seed)
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(feats if train_feats is None else train_feats)
    X = scaler.transform(feats)
    perm = rng.permutation(len(y))
    tune_rows, held = perm[: len(y) // 2], perm[len(y) // 2:]
    rows = tune_rows[balanced_subsample(groups[tune_rows], rng)]  # one subsample: every C sees the same rows
    tune: dict[float, float] = {}
    for c in cs:
        pred = _fit(X[rows], y[rows], c, seed).predict(X[held])
        tune[c] = group_metrics(pred, y[held], groups[held], n_classes, n_groups).get("worst_group_acc", 0.0)
    best = max(cs, key=lambda c: tune[c])  # the first (strongest-C) of ties
    coefs, intercepts, seen = [], [], []
    for _ in range(subsamples):
        rows = balanced_subsample(groups, rng)
        lr = _fit(X[rows], y[rows], best, seed)
        w, b = _as_layer(lr.coef_, lr.intercept_, n_classes)
        coefs.append(w)
        intercepts.append(b)
        seen.append(rows)
    w, b = np.mean(coefs, 0), np.mean(intercepts, 0)
    w_raw = w / scaler.scale_
    return DfrFit(w_raw, b - w_raw @ scaler.mean_, best, tune, seen)


def set_head(head: torch.nn.Linear, fit: DfrFit) -> None:
    """Write the retrained layer into the classifier's last layer."""
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(fit.weight, dtype=head.weight.dtype))
        head.bias.copy_(torch.as_tensor(fit.bias, dtype=head.bias.dtype))

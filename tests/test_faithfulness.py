"""Insertion / deletion AUC against a curve computed by hand on a toy model whose answer is known."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from paric.eval.faithfulness import auc, gradcam_faithfulness, insertion_deletion


class Linear(torch.nn.Module):
    """logit of class 1 = 4·(sum of the red channel over the left half) − 2; class 0's logit is 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = 4 * x[:, 0, :, :2].sum((1, 2)) - 2
        return torch.stack([torch.zeros_like(z), z], dim=1)


def _by_hand(x: np.ndarray, sal: np.ndarray, start: np.ndarray, end: np.ndarray, steps: int) -> float:
    order = sorted(range(sal.size), key=lambda i: -sal.flat[i])  # most salient first
    probs = []
    for k in range(steps + 1):
        img = start.copy()
        for i in order[:round(k * sal.size / steps)]:
            r, c = divmod(i, sal.shape[1])
            img[:, r, c] = end[:, r, c]
        z = 4 * img[0, :, :2].sum() - 2
        probs.append(1 / (1 + np.exp(-z)))
    return float(sum((probs[i] + probs[i + 1]) / 2 for i in range(steps)) / steps)


def test_insertion_and_deletion_match_the_hand_computed_curves():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 4, 4, generator=gen) * 0.5
    sal = torch.rand(2, 4, 4, generator=gen)
    blurred = torch.full_like(x, 0.1)
    mean = torch.full((1, 3, 1, 1), 0.2)
    y = torch.tensor([1, 1])
    ins, dele = insertion_deletion(Linear(), x, y, sal, blurred, mean, steps=8)
    for i in range(2):
        xi, si = x[i].numpy(), sal[i].numpy()
        assert abs(float(ins[i]) - _by_hand(xi, si, blurred[i].numpy(), xi, 8)) < 1e-6
        assert abs(float(dele[i]) - _by_hand(xi, si, xi, np.broadcast_to(mean[0].numpy(), xi.shape), 8)) < 1e-6


def test_a_map_on_the_evidence_beats_its_reverse():
    """The model reads only the left half: a map there inserts early and deletes early."""
    x = torch.ones(1, 3, 4, 4)
    y = torch.tensor([1])
    good = torch.zeros(1, 4, 4)
    good[:, :, :2] = 1.0
    ins_good, del_good = insertion_deletion(Linear(), x, y, good, torch.zeros_like(x), torch.zeros(1, 3, 1, 1), 8)
    ins_bad, del_bad = insertion_deletion(Linear(), x, y, 1 - good, torch.zeros_like(x), torch.zeros(1, 3, 1, 1), 8)
    assert float(ins_good - del_good) > float(ins_bad - del_bad) + 0.3


def test_auc_includes_both_end_points():
    assert torch.allclose(auc(torch.tensor([[0.0, 1.0, 1.0]])), torch.tensor([0.75]))
    assert torch.allclose(auc(torch.tensor([[1.0, 1.0]])), torch.tensor([1.0]))


def test_gradcam_faithfulness_runs_on_a_classifier():
    from paric.models import build_classifier

    model = build_classifier("small_resnet", 2, width=4, seed=0)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ins, dele = gradcam_faithfulness(model, x, torch.tensor([0, 1, 0]), torch.tensor([0.5, 0.5, 0.5]), steps=4)
    assert ins.shape == dele.shape == (3,) and bool(((ins >= 0) & (ins <= 1) & (dele >= 0) & (dele <= 1)).all())


def test_the_insertion_blur_is_rise_s_and_its_protocol_is_recorded():
    """Issue 28 item 8: RISE's 11-px kernel at σ = 5 for 224 px, scaled to the image; every constant
    is stored with the numbers."""
    from paric.config import EvalConfig
    from paric.eval.faithfulness import RISE_BLUR, blur_kernel, protocol

    assert EvalConfig().faith_blur == RISE_BLUR
    from pathlib import Path

    from paric.catalog import load_config

    default = load_config(Path(__file__).resolve().parents[1] / "conf" / "default.yaml")
    assert default.eval.faith_blur == pytest.approx(RISE_BLUR, rel=1e-5)  # the embedded default too
    sigma, kernel = blur_kernel(224, RISE_BLUR)
    assert sigma == pytest.approx(5.0) and kernel == 11
    assert blur_kernel(32, RISE_BLUR)[1] == 3  # at least 3 px at the benchmark's 32 px
    p = protocol(32, 16, RISE_BLUR, 200)
    assert p["steps"] == 16 and p["image_px"] == 32 and "kernel 3 px" in p["insertion_start"]
    assert {"order", "deletion_fill", "auc", "saliency"} <= set(p)

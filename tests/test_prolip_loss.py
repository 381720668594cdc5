"""ProLIP's losses against independent closed forms and Monte-Carlo estimates (issue 15)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.integrate import quad

from paric.vlm.prolip.loss import (ProlipLossWeights, csd, inclusion_loss, inclusion_score, ppcl_logits, ppcl_loss,
                                   prolip_loss, vib_loss)


def _dists(n: int = 4, d: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mu = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    return mu, torch.randn(n, d, generator=g, dtype=torch.float64) - 3


def test_csd_is_the_expected_squared_distance_of_samples():
    (m1, l1), (m2, l2) = _dists(seed=1), _dists(seed=2)
    g = torch.Generator().manual_seed(3)
    n = 200_000
    z1 = m1[0] + l1[0].mul(0.5).exp() * torch.randn(n, 6, generator=g, dtype=torch.float64)
    z2 = m2[1] + l2[1].mul(0.5).exp() * torch.randn(n, 6, generator=g, dtype=torch.float64)
    mc = float((z1 - z2).pow(2).sum(-1).mean())
    assert float(csd(m1, l1, m2, l2)[0, 1]) == pytest.approx(mc, rel=0.01)


def test_ppcl_is_the_siglip_pair_loss_over_b_and_its_logits_follow_csd():
    (mv, lv), (mt, lt) = _dists(seed=4), _dists(seed=5)
    s, b = torch.tensor(math.log(10.0), dtype=torch.float64), torch.tensor(-2.0, dtype=torch.float64)
    logits = ppcl_logits(mv, lv, mt, lt, s, b)
    total = 0.0
    for i in range(4):
        for j in range(4):
            y = 1.0 if i == j else -1.0
            total += math.log(1.0 + math.exp(-y * float(logits[i, j])))
    assert float(ppcl_loss(mv, lv, mt, lt, s, b)) == pytest.approx(total / 4, rel=1e-9)
    torch.testing.assert_close(logits, 10.0 * (1 - 0.5 * csd(mv, lv, mt, lt)) + b)  # unit-norm μ


def test_inclusion_score_is_the_papers_closed_form_of_the_gaussian_integral():
    """∫ exp(−u1(x−μ1)² − ½u2(x−μ2)²) dx = √(π/a)·exp(b²/(4a) − c): the exponent and −½ log a of I
    come from it (checked by quadrature); the log σ² terms are the paper's coefficients."""
    for m1, v1, m2, v2 in ((0.1, 0.05, -0.3, 0.4), (0.7, 1.3, 0.2, 0.02), (0.0, 0.3, 0.0, 0.3)):
        u1, u2 = 1 / v1, 1 / v2
        integral, _ = quad(lambda x: math.exp(-u1 * (x - m1) ** 2 - 0.5 * u2 * (x - m2) ** 2), -50, 50, points=[m1, m2])
        expected = -2 * math.log(v1) - math.log(v2) + math.log(integral) - 0.5 * math.log(math.pi)
        got = inclusion_score(*(torch.tensor([[x]], dtype=torch.float64) for x in (m1, math.log(v1), m2, math.log(v2))))
        assert float(got) == pytest.approx(expected, rel=1e-7, abs=1e-9)
        a, b, c = u1 + 0.5 * u2, 2 * m1 * u1 + m2 * u2, m1 ** 2 * u1 + 0.5 * m2 ** 2 * u2  # the raw form
        raw = -2 * math.log(v1) - math.log(v2) - 0.5 * math.log(a) + b * b / (4 * a) - c
        assert float(got) == pytest.approx(raw, rel=1e-9, abs=1e-9)


def test_a_narrow_gaussian_inside_a_wide_one_is_included_in_it():
    mu = torch.zeros(3, 5)
    narrow, wide = torch.full((3, 5), -4.0), torch.full((3, 5), 0.0)
    assert float((inclusion_score(mu, narrow, mu, wide) - inclusion_score(mu, wide, mu, narrow)).min()) > 0
    assert float(inclusion_loss(mu, narrow, mu, wide)) < float(inclusion_loss(mu, wide, mu, narrow))
    assert float(inclusion_loss(mu, narrow, mu, wide)) < 1e-3  # κ = 1000 saturates a clear inclusion


def _kl(mu: torch.Tensor, lv: torch.Tensor) -> torch.Tensor:
    return torch.distributions.kl_divergence(torch.distributions.Normal(mu, lv.mul(0.5).exp()),
                                             torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu)))


def test_vib_is_the_published_reduction_mean_over_elements_and_towers_added():
    """Issue 28 item 3: the published code averages the KL over B×D elements and adds the towers; the
    sum over D averaged over towers was D/2 times stronger at the same weight 1e-4."""
    (mv, lv), (mt, lt) = _dists(seed=6), _dists(seed=9)
    torch.testing.assert_close(vib_loss(mv, lv), _kl(mv, lv).mean())
    s, b = torch.tensor(1.0, dtype=torch.float64), torch.tensor(-10.0, dtype=torch.float64)
    out = prolip_loss((mv, lv), (mt, lt), s, b, ProlipLossWeights(0, 0, 1e-4))
    torch.testing.assert_close(out["vib"], _kl(mv, lv).mean() + _kl(mt, lt).mean())
    d = mv.shape[1]
    old_form = 0.5 * (_kl(mv, lv).sum(-1).mean() + _kl(mt, lt).sum(-1).mean())
    torch.testing.assert_close(old_form / out["vib"], torch.tensor(d / 2, dtype=torch.float64))


def test_original_in_masked_adds_the_image_and_text_terms():
    (mv, lv), (mt, lt) = _dists(seed=10), _dists(seed=11)
    s, b = torch.tensor(1.0, dtype=torch.float64), torch.tensor(-10.0, dtype=torch.float64)
    idx = torch.arange(2)
    mi, mtx = (mv[:2], lv[:2] + 1.0), (mt[:2], lt[:2] + 0.5)
    out = prolip_loss((mv, lv), (mt, lt), s, b, ProlipLossWeights(0, 1e-3, 0), mi, mtx, idx)
    expect = inclusion_loss(mv[:2], lv[:2], *mi) + inclusion_loss(mt[:2], lt[:2], *mtx)
    torch.testing.assert_close(out["incl_masked"], expect)


def test_the_total_adds_the_weighted_terms_and_its_gradients_are_finite():
    (mv, lv), (mt, lt) = _dists(seed=7), _dists(seed=8)
    for t in (mv, lv, mt, lt):
        t.requires_grad_(True)
    s, b = torch.tensor(1.0, dtype=torch.float64), torch.tensor(-10.0, dtype=torch.float64)
    only = prolip_loss((mv, lv), (mt, lt), s, b, ProlipLossWeights(0, 0, 0))
    assert float(only["loss"]) == pytest.approx(float(ppcl_loss(mv, lv, mt, lt, s, b)))
    assert float(only["incl_masked"]) == 0.0  # no masked copies
    idx = torch.arange(2)
    masked = (mv[:2].detach(), lv[:2].detach() + 1.0)
    out = prolip_loss((mv, lv), (mt, lt), s, b, ProlipLossWeights(1e-2, 1e-1, 1e-2), masked, masked, idx)
    parts = out["ppcl"] + 1e-2 * out["incl_image_text"] + 1e-1 * out["incl_masked"] + 1e-2 * out["vib"]
    assert float(out["loss"]) == pytest.approx(float(parts)) and float(out["incl_masked"]) > 0
    out["loss"].backward()
    assert all(np.isfinite(t.grad.numpy()).all() for t in (mv, lv, mt, lt))

"""GGD maths: NLL equals scipy's gennorm, sampling has the closed-form variance, gradients flow."""
import numpy as np
import pytest
import torch
from scipy.stats import gennorm

from paric.vlm.ggd import ggd_nll, ggd_variance, sample_ggd, sample_uniforms


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0, 3.7])
def test_nll_matches_scipy_gennorm(beta):
    rng = np.random.default_rng(0)
    x, mu, alpha = rng.normal(size=50), rng.normal(size=50), rng.uniform(0.1, 2.0, size=50)
    ours = ggd_nll(*(torch.tensor(v, dtype=torch.float64) for v in (x, mu, alpha)), torch.full((50,), beta, dtype=torch.float64))
    ref = -gennorm.logpdf(x, beta, loc=mu, scale=alpha)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("beta", [0.8, 2.0, 4.0])
def test_sample_moments_match_closed_form(beta):
    n = 40000
    u = torch.from_numpy(sample_uniforms(0, "moments", n, 1))
    mu, alpha = torch.tensor([0.3], dtype=torch.float64), torch.tensor([0.7], dtype=torch.float64)
    b = torch.tensor([beta], dtype=torch.float64)
    z = sample_ggd(mu, alpha, b, u)[:, 0]
    var = float(ggd_variance(alpha, b))
    assert float(z.mean()) == pytest.approx(0.3, abs=4 * (var / n) ** 0.5)
    assert float(z.var()) == pytest.approx(var, rel=0.05)


def test_sampler_is_reparameterised():
    u = torch.from_numpy(sample_uniforms(1, "grad", 16, 4)).float()
    mu = torch.zeros(4, requires_grad=True)
    alpha = torch.full((4,), 0.5, requires_grad=True)
    beta = torch.full((4,), 1.5, requires_grad=True)
    z = sample_ggd(mu, alpha, beta, u)
    z.pow(2).sum().backward()
    for p in (mu, alpha, beta):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_beta_gradient_matches_finite_difference():
    u = torch.from_numpy(sample_uniforms(2, "fd", 8, 3))
    mu, alpha = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    beta = torch.tensor([0.9, 1.7, 3.0], dtype=torch.float64, requires_grad=True)
    sample_ggd(mu, alpha, beta, u).sum().backward()
    eps = 1e-6
    fd = (sample_ggd(mu, alpha, beta.detach() + eps, u).sum(0) - sample_ggd(mu, alpha, beta.detach() - eps, u).sum(0)) / (2 * eps)
    np.testing.assert_allclose(beta.grad.numpy(), fd.numpy(), rtol=1e-4)


def test_uniforms_depend_only_on_seed_key_and_row():
    a = sample_uniforms(0, "img/1.jpg", 32, 8)
    b = sample_uniforms(0, "img/1.jpg", 5, 8)
    np.testing.assert_array_equal(a[:5], b)
    assert not np.array_equal(a, sample_uniforms(1, "img/1.jpg", 32, 8))
    assert not np.array_equal(a, sample_uniforms(0, "img/2.jpg", 32, 8))


@pytest.mark.parametrize("u_top", [1.0 - 1e-12, float(np.nextafter(np.float32(1.0), np.float32(0.0))), 1.0])
def test_a_uniform_at_the_float32_edge_gives_a_finite_sample(u_top):
    """sample_uniforms clips to 1 − 1e-12 in float64; cast to float32 that is exactly 1.0, where the
    inverse gamma CDF is inf (issue 28 item 4: an all-zero map after min-max)."""
    u = torch.tensor([[u_top, 0.7], [1e-12, 0.2], [0.5, 0.9]], dtype=torch.float64).float()
    if u_top == 1.0 - 1e-12:
        assert float(u[0, 0]) == 1.0  # the float64 clip really reaches float32's 1.0
    mu, alpha = torch.zeros(3), torch.ones(3)
    for beta in (0.5, 1.0, 2.0):
        z = sample_ggd(mu, alpha, torch.full((3,), beta), u)
        assert torch.isfinite(z).all(), (beta, z)
        assert abs(float(z[0])) > abs(float(z[2]))  # the far tail stays the largest draw
    # and through the float64 uniforms the samplers use: every row finite
    many = torch.from_numpy(sample_uniforms(0, "edge", 4, 8)).float()
    many[0, 0, 0] = 1.0
    assert torch.isfinite(sample_ggd(torch.zeros(8), torch.ones(8), torch.full((8,), 0.8), many)).all()

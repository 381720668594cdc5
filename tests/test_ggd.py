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


# ------------------------------------------------------------- the rejection draw (maps.gamma, issue 31)
from scipy import stats  # noqa: E402
from scipy.special import gammainc  # noqa: E402

from paric.vlm.ggd import GAMMA_DRAWS, REJECTION_TRIES, _gamma_from_uniform  # noqa: E402


@pytest.mark.parametrize("shape", [0.25, 0.6, 1.0, 1.7, 5.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rejection_draw_is_gamma_distributed(shape, dtype):
    """Marsaglia–Tsang with the shape < 1 boost, each element from its own keyed uniforms: the law is
    Gamma(shape, 1) (Kolmogorov–Smirnov against scipy; a wrong boost or accept test fails at n = 20000)."""
    n = 20000
    u = torch.from_numpy(sample_uniforms(0, f"ks{shape}", n, 1, GAMMA_DRAWS["rejection"].width))[:, 0].to(dtype)
    g = GAMMA_DRAWS["rejection"].draw(torch.full((n,), shape, dtype=dtype), u)
    assert g.dtype == dtype and torch.isfinite(g).all()
    assert stats.kstest(g.double().numpy(), stats.gamma(shape).cdf).pvalue > 1e-3
    assert float(g.mean()) == pytest.approx(shape, rel=0.05)


@pytest.mark.parametrize("beta", [0.8, 2.0, 4.0])
def test_rejection_samples_have_the_closed_form_moments(beta):
    n = 40000
    u = torch.from_numpy(sample_uniforms(0, "moments", n, 1, GAMMA_DRAWS["rejection"].width))
    mu, alpha = torch.tensor([0.3], dtype=torch.float64), torch.tensor([0.7], dtype=torch.float64)
    b = torch.tensor([beta], dtype=torch.float64)
    z = sample_ggd(mu, alpha, b, u, "rejection")[:, 0]
    var = float(ggd_variance(alpha, b))
    assert float(z.mean()) == pytest.approx(0.3, abs=4 * (var / n) ** 0.5)
    assert float(z.var()) == pytest.approx(var, rel=0.05)
    assert stats.kstest(z.numpy(), gennorm(beta, loc=0.3, scale=0.7).cdf).pvalue > 1e-3


def test_an_element_whose_tries_all_fail_takes_the_inverse_cdf_of_its_first_uniform():
    """Both Box–Muller normals far in the tail (u₂ tiny, angle π/4 or 5π/4: x ≈ ±5 twice) fail both
    accept tests; such an element (and only it) falls back to gammaincinv(shape, u₀), which keeps the
    draw exact."""
    a = torch.tensor([0.5, 0.5, 2.0], dtype=torch.float64)
    u = torch.tensor([[0.3, 0.5, 0.4, 0.1, 0.5, 0.5],          # an ordinary element
                      [0.3, 0.5, 1e-11, 0.125, 0.999, 0.999],  # x ≈ +5 twice: both rejected
                      [0.8, 0.5, 1e-11, 0.625, 0.999, 0.999]], dtype=torch.float64)  # x ≈ −5 twice
    assert REJECTION_TRIES == 2 and u.shape[-1] == GAMMA_DRAWS["rejection"].width
    g = GAMMA_DRAWS["rejection"].draw(a, u)
    inv = GAMMA_DRAWS["inverse"].draw(a, u)
    assert float(g[1]) == pytest.approx(float(inv[1]), rel=1e-12)
    assert float(g[2]) == pytest.approx(float(inv[2]), rel=1e-12)
    assert abs(float(g[0]) - float(inv[0])) > 1e-6  # the accepted element is Marsaglia–Tsang's own value


def test_rejection_gradient_is_the_implicit_one_at_the_drawn_value():
    """dG/dshape of a rejection draw is the inverse CDF's derivative at the drawn value's own CDF level
    (implicit reparameterisation): what the inverse draw would give for the uniform F(G; shape)."""
    shape = torch.tensor([0.6, 1.3, 2.5] * 4, dtype=torch.float64, requires_grad=True)
    u = torch.from_numpy(sample_uniforms(3, "implicit", 12, 1, GAMMA_DRAWS["rejection"].width))[:, 0]
    g = _gamma_from_uniform(shape, u, "rejection")
    (grad,) = torch.autograd.grad(g.sum(), shape)
    level = torch.from_numpy(gammainc(shape.detach().numpy(), g.detach().numpy()))
    u_inv = torch.stack([level, torch.full_like(level, 0.5)], dim=-1)
    eps = 1e-6
    fd = (_gamma_from_uniform(shape.detach() + eps, u_inv) - _gamma_from_uniform(shape.detach() - eps, u_inv)) / (2 * eps)
    np.testing.assert_allclose(grad.numpy(), fd.numpy(), rtol=1e-4)


def test_sample_ggd_refuses_uniforms_of_another_draws_width():
    u = torch.from_numpy(sample_uniforms(0, "w", 4, 3))  # width 2: the inverse draw's
    with pytest.raises(ValueError, match="'rejection' reads 6 uniforms per element, got 2"):
        sample_ggd(torch.zeros(3), torch.ones(3), torch.ones(3), u, "rejection")


def test_rejection_rows_depend_only_on_seed_key_and_row():
    """The sampled-maps contract survives the wider stream: the first k of K samples are a k-sample draw."""
    w = GAMMA_DRAWS["rejection"].width
    mu, alpha, beta = torch.zeros(8), torch.ones(8), torch.full((8,), 0.9)
    many = sample_ggd(mu, alpha, beta, torch.from_numpy(sample_uniforms(0, "img", 32, 8, w)).float(), "rejection")
    few = sample_ggd(mu, alpha, beta, torch.from_numpy(sample_uniforms(0, "img", 5, 8, w)).float(), "rejection")
    torch.testing.assert_close(many[:5], few, rtol=0, atol=0)


def test_the_library_default_draw_is_the_configs():
    """``paric.reference_maps`` and the samplers draw as ``maps.gamma``'s default does (config stays torch-free,
    so the two are written twice; this keeps them one)."""
    from paric.config.schema import MapsConfig
    from paric.vlm.ggd import DEFAULT_GAMMA_DRAW

    assert MapsConfig.model_fields["gamma"].default == DEFAULT_GAMMA_DRAW


def test_threaded_helpers_give_the_serial_values_bit_for_bit():
    """The keyed uniforms and dG/dconc are split over threads (issue 31) without changing a value:
    against ``np.stack`` of :func:`sample_uniforms` and torch's own serial ``_standard_gamma_grad``,
    with chunks small enough that both threads take part, and at one thread."""
    from paric.vlm.ggd import keyed_uniforms, standard_gamma_grad

    keys = [f"image\x1fimg{i}" for i in range(5)]
    serial = np.stack([sample_uniforms(3, k, 4, 7, 6, np.float32) for k in keys])
    torch.manual_seed(0)
    conc = torch.rand(3, 4, 1000) * 4 + 0.1
    g = torch._standard_gamma(conc)
    threads = torch.get_num_threads()
    try:
        for n in (2, 1):
            torch.set_num_threads(n)
            assert np.array_equal(keyed_uniforms(3, keys, 4, 7, 6, np.float32), serial)
            assert torch.equal(standard_gamma_grad(conc, g, min_chunk=100), torch._standard_gamma_grad(conc, g))
    finally:
        torch.set_num_threads(threads)

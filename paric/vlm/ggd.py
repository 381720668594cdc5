"""Generalized Gaussian (GGD) distribution maths for the ProbVLM adapters (METHODS.md §2).

Why a module of its own: the NLL, the variance and the reparameterised sampler are used by the
adapter loss, by PARIC's sampled maps and by the tests, and must agree with scipy's ``gennorm``.
Density: p(z) = β / (2 α Γ(1/β)) · exp(−(|z − μ| / α)^β).
"""
from __future__ import annotations

import hashlib
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from scipy.special import gammaincinv

LOG2 = math.log(2.0)


def ggd_nll(x: torch.Tensor, mu: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Elementwise negative log density, power form (|x−μ|/α)^β (not the product form of the
    public ProbVLM code).

    The residual is floored at 1e-12: at a residual of exactly 0 with β < 1, the gradient of
    resid**β is infinite and the chain rule through ``/ alpha`` turns it into NaN (0·∞), which
    poisoned whole adapter runs; the floor only changes residuals below 1e-12.
    """
    resid = ((x - mu).abs() / alpha).clamp_min(1e-12)
    return resid.pow(beta) - torch.log(beta) + torch.log(alpha) + torch.lgamma(1.0 / beta) + LOG2


def ggd_variance(alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Aleatoric variance σ² = α² Γ(3/β) / Γ(1/β)."""
    return alpha.pow(2) * torch.exp(torch.lgamma(3.0 / beta) - torch.lgamma(1.0 / beta))


def sample_uniforms(seed: int, key: str, k: int, dim: int) -> np.ndarray:
    """Uniforms (k, dim, 2) in (0,1) that depend only on (seed, key) and the row index.

    A counter-based Philox stream keyed by a hash of (seed, key) fills rows in order, so row j is
    the same whatever k is: the first k of K samples are a valid k-sample draw, and nothing
    depends on batch composition, worker count or order.
    """
    digest = hashlib.blake2b(f"{seed}\x1f{key}".encode(), digest_size=16).digest()
    gen = np.random.Generator(np.random.Philox(key=int.from_bytes(digest, "little")))
    u = gen.random((k, dim, 2))
    return np.clip(u, 1e-12, 1.0 - 1e-12)


def inverse_gamma_cdf(conc: np.ndarray, u: np.ndarray, min_chunk: int = 8192) -> np.ndarray:
    """``gammaincinv(conc, u)`` split over torch's intra-op thread count.

    Why: at ~1 µs per element it was a third of a ViT-B-32 sampled-maps batch on 2 cores; scipy's
    ufunc releases the GIL, so threads share the work. Elementwise, hence identical results.
    """
    conc, u = np.broadcast_arrays(conc, u)
    out = np.empty(u.shape, dtype=np.float64)
    flat_c, flat_u, flat_o = conc.reshape(-1), u.reshape(-1), out.reshape(-1)
    parts = max(1, min(torch.get_num_threads(), flat_o.size // min_chunk))
    bounds = np.linspace(0, flat_o.size, parts + 1).astype(int)

    def run(i: int) -> None:
        lo, hi = bounds[i], bounds[i + 1]
        gammaincinv(flat_c[lo:hi], flat_u[lo:hi], out=flat_o[lo:hi])

    if parts == 1:
        run(0)
    else:
        with ThreadPoolExecutor(parts) as pool:
            list(pool.map(run, range(parts)))
    return out


def _gamma_from_uniform(conc: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """G ~ Gamma(conc, 1) by inverse CDF, with the implicit reparameterisation gradient.

    The value comes from scipy's gammaincinv (deterministic in u); dG/dconc is torch's own
    ``_standard_gamma_grad`` (the same gradient ``Gamma.rsample`` uses), attached with a
    straight-through term so autograd sees it.
    """
    conc_d = conc.detach()
    conc_np = np.broadcast_to(conc_d.double().cpu().numpy(), u.shape)
    g = torch.from_numpy(inverse_gamma_cdf(conc_np, u.double().cpu().numpy())).to(conc.dtype).to(conc.device)
    g = g.clamp_min(torch.finfo(conc.dtype).tiny)
    if not conc.requires_grad:
        return g
    dg = torch._standard_gamma_grad(conc_d.expand_as(g).contiguous(), g)
    return g + (conc - conc_d) * dg


def open_unit(u: torch.Tensor) -> torch.Tensor:
    """``u`` clipped into (0, 1) *in its own dtype*.

    Why: :func:`sample_uniforms` clips to 1 − 1e-12 in float64, which a cast to float32 rounds to
    exactly 1.0 (every u ≥ 1 − 2⁻²⁵ does, ≈ 3e-8 per element); ``gammaincinv(·, 1)`` is inf, and
    the sample's map became NaN, then all zeros after min-max (≈ 1.2e-4 of the image samples at
    K = 32, d = 128; a text sample zeroed map k of every image).
    """
    tiny, below_one = torch.finfo(u.dtype).tiny, 1.0 - torch.finfo(u.dtype).eps / 2
    return u.clamp(tiny, below_one)


def sample_ggd(
    mu: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, uniforms: torch.Tensor
) -> torch.Tensor:
    """Reparameterised GGD sample z = μ + S · α · G^(1/β), G ~ Gamma(1/β, 1), S = ±1.

    ``mu/alpha/beta`` broadcast against ``uniforms[..., 0]``; ``uniforms[..., 0]`` drives G and
    ``uniforms[..., 1]`` the sign. Gradients reach μ, α and β, so a sample depends on whatever
    produced them (for PARIC: the image tower's activations).
    """
    u_g, u_s = open_unit(uniforms[..., 0]), uniforms[..., 1]
    shape = torch.broadcast_shapes(mu.shape, u_g.shape)
    conc = (1.0 / beta).expand(shape)
    g = _gamma_from_uniform(conc, u_g.expand(shape))
    sign = torch.where(u_s < 0.5, -1.0, 1.0).to(mu.dtype)
    return mu + sign * alpha * g.pow(1.0 / beta)

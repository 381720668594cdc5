"""Generalized Gaussian (GGD) distribution maths for the ProbVLM adapters (METHODS.md §2).

Why a module of its own: the NLL, the variance and the reparameterised sampler are used by the
adapter loss, by PARIC's sampled maps and by the tests, and must agree with scipy's ``gennorm``.
Density: p(z) = β / (2 α Γ(1/β)) · exp(−(|z − μ| / α)^β).
"""
from __future__ import annotations

import functools
import hashlib
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy.special import gammaincinv

LOG2 = math.log(2.0)


@functools.lru_cache(maxsize=None)
def _pool(threads: int) -> ThreadPoolExecutor:
    """One idle pool per thread count, kept for the process (a pool per call cost ~0.3 ms a batch)."""
    return ThreadPoolExecutor(threads, thread_name_prefix="paric-ggd")


def in_chunks(n: int, run: Callable[[int, int], None], min_chunk: int) -> None:
    """``run(lo, hi)`` over [0, n) in up to torch's intra-op thread count of contiguous chunks of at least
    ``min_chunk``, on threads. For elementwise work whose kernel is serial and releases the GIL (scipy's
    ufuncs, numpy's generators, some torch kernels): each element is computed as it would be in one call."""
    parts = max(1, min(torch.get_num_threads(), n // max(min_chunk, 1)))
    if parts == 1:
        run(0, n)
        return
    bounds = np.linspace(0, n, parts + 1).astype(int)
    list(_pool(parts).map(lambda i: run(bounds[i], bounds[i + 1]), range(parts)))


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


def sample_uniforms(seed: int, key: str, k: int, dim: int, width: int = 2,
                    dtype: type[np.floating] = np.float64) -> np.ndarray:
    """Uniforms (k, dim, width) in (0,1) that depend only on (seed, key) and the row index.

    A counter-based Philox stream keyed by a hash of (seed, key) fills rows in order, so row j is
    the same whatever k is: the first k of K samples are a valid k-sample draw, and nothing
    depends on batch composition, worker count or order. ``width`` and ``dtype``: uniforms per
    element and their precision (a :class:`GammaDraw`'s; they set the stream's layout, so another
    width or dtype gives other values).
    """
    out = np.empty((k, dim, width), dtype=dtype)
    _fill_uniforms(seed, key, out)
    return out


def _fill_uniforms(seed: int, key: str, out: np.ndarray) -> None:
    """:func:`sample_uniforms` written into ``out`` (its shape and dtype give k, dim, width and dtype)."""
    digest = hashlib.blake2b(f"{seed}\x1f{key}".encode(), digest_size=16).digest()
    gen = np.random.Generator(np.random.Philox(key=int.from_bytes(digest, "little")))
    gen.random(out.shape, dtype=out.dtype, out=out)
    np.clip(out, 1e-12, 1.0 - 1e-12, out=out)


def keyed_uniforms(seed: int, keys: list[str], k: int, dim: int, width: int = 2,
                   dtype: type[np.floating] = np.float64) -> np.ndarray:
    """``np.stack([sample_uniforms(seed, key, k, dim, width, dtype) for key in keys])``, the same values,
    filled in place by torch's intra-op thread count.

    Why: a batch of 64 images at K = 32, d = 128 is 1.6 M uniforms, ~7 ms of one thread on the default
    tower's sampled maps; numpy's generators fill without the GIL, so threads share the keys.
    """
    out = np.empty((len(keys), k, dim, width), dtype=dtype)

    def run(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            _fill_uniforms(seed, keys[i], out[i])

    in_chunks(len(keys), run, 1)
    return out


def inverse_gamma_cdf(conc: np.ndarray, u: np.ndarray, min_chunk: int = 8192) -> np.ndarray:
    """``gammaincinv(conc, u)`` split over torch's intra-op thread count.

    Why: at ~1 µs per element it was a third of a ViT-B-32 sampled-maps batch on 2 cores; scipy's
    ufunc releases the GIL, so threads share the work. Elementwise, hence identical results.
    """
    conc, u = np.broadcast_arrays(conc, u)
    out = np.empty(u.shape, dtype=np.float64)
    flat_c, flat_u, flat_o = conc.reshape(-1), u.reshape(-1), out.reshape(-1)

    def run(lo: int, hi: int) -> None:
        gammaincinv(flat_c[lo:hi], flat_u[lo:hi], out=flat_o[lo:hi])

    in_chunks(flat_o.size, run, min_chunk)
    return out


def _inverse_gamma(conc: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """G = F⁻¹(u[..., 0]; conc), float64: scipy's ``gammaincinv``, ~1 µs per element."""
    conc_np = np.broadcast_to(conc.detach().double().cpu().numpy(), u.shape[:-1])
    return torch.from_numpy(inverse_gamma_cdf(conc_np, u[..., 0].double().cpu().numpy())).to(u.device)


#: Marsaglia–Tsang candidates per element (two Box–Muller normals); an element whose candidates
#: are all rejected (≤ 0.25 % at the adapters' shapes) falls back to the inverse CDF
REJECTION_TRIES = 2


def _log(x: torch.Tensor) -> torch.Tensor:
    """ln x as log2(x)·ln 2 (the same value to an ulp): torch 2.14's float32 ``log`` measured ~100× slower
    than ``log2`` here (3.2 ms against 28 µs for 32 k elements, the cores shared with a pipeline)."""
    return torch.log2(x) * LOG2


def _rejection_gamma(conc: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """G ~ Gamma(conc, 1) by Marsaglia & Tsang's squeeze-free rejection (shape < 1 boosted by
    G(a) = G(a + 1)·U^(1/a)) in the uniforms' dtype, from the element's own uniforms only.

    Layout of ``u[..., :]``: 0 the boost's U (or, for an element whose tries all fail, the inverse
    CDF's: the two uses never meet, so it stays independent of the accept test), 1 the sign (read by
    :func:`sample_ggd`), 2–3 one Box–Muller pair, 4–5 the two accept tests. Exact in distribution:
    the first accepted try has the target law, and so does the fallback.
    """
    a = conc.detach().to(u.dtype).expand(u.shape[:-1]).contiguous()
    u = u.movedim(-1, 0).contiguous()  # one contiguous plane per uniform: vectorised log / cos
    boost = a < 1
    d = torch.where(boost, a + 1, a) - 1.0 / 3.0
    c = torch.rsqrt(9.0 * d)
    radius = torch.sqrt(-2.0 * _log(u[2]))
    angle = (2.0 * math.pi) * u[3]
    g = torch.full_like(a, math.nan)
    done = torch.zeros_like(boost)
    for i, x in enumerate((radius * torch.cos(angle), radius * torch.sin(angle))):
        v = (1.0 + c * x) ** 3
        positive = v > 0
        log_v = _log(torch.where(positive, v, torch.ones_like(v)))
        ok = positive & (_log(u[4 + i]) < 0.5 * x * x + d - d * v + d * log_v) & ~done
        g = torch.where(ok, d * v, g)
        done = done | ok
    g = torch.where(boost, g * u[0].pow(1.0 / a), g)
    if not bool(done.all()):
        missed = ~done
        g[missed] = torch.from_numpy(inverse_gamma_cdf(a[missed].double().cpu().numpy(),
                                                       u[0][missed].double().cpu().numpy())).to(g)
    return g


@dataclass(frozen=True)
class GammaDraw:
    """One way to draw G ~ Gamma(conc, 1) from an element's ``width`` uniforms (``maps.gamma``).

    Both draws are exact, seeded by the same keyed stream and differentiated the same way
    (implicit reparameterisation at the drawn value), so the maps differ only in which values a
    seed gives: ``inverse`` inverts the CDF (scipy's ``gammaincinv``, ~1 µs per element; the samples
    before issue 31), ``rejection`` runs Marsaglia–Tsang in torch (``benchmarks/bench_maps.py``: K = 32
    maps at 1.4–1.7× one map on the default tower, against 1.8–2.6× with the inverse draw).
    """

    draw: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    width: int
    #: the uniforms' precision: the inverse CDF reads float64; the rejection draw runs in float32 (the
    #: samples' dtype), and its stream is generated so, at half the cost
    dtype: type[np.floating] = np.float64


GAMMA_DRAWS: dict[str, GammaDraw] = {
    "inverse": GammaDraw(_inverse_gamma, 2),
    "rejection": GammaDraw(_rejection_gamma, 2 + 2 + REJECTION_TRIES, np.float32),
}


#: the draw GGDSampler, ReferenceMapper and paric.reference_maps use unless told (``maps.gamma``'s default)
DEFAULT_GAMMA_DRAW = "rejection"


def gamma_draw(name: str) -> GammaDraw:
    if name not in GAMMA_DRAWS:
        raise ValueError(f"maps.gamma: unknown '{name}', expected one of {sorted(GAMMA_DRAWS)}")
    return GAMMA_DRAWS[name]


def _gamma_from_uniform(conc: torch.Tensor, u: torch.Tensor, draw: str = "inverse") -> torch.Tensor:
    """G ~ Gamma(conc, 1) from uniforms ``u`` (..., width), with the implicit reparameterisation gradient.

    The value comes from the draw (deterministic in u); dG/dconc is torch's own
    ``_standard_gamma_grad`` (the same gradient ``Gamma.rsample`` uses), attached with a
    straight-through term so autograd sees it.
    """
    conc_d = conc.detach()
    g = gamma_draw(draw).draw(conc_d, u).to(conc.dtype).to(conc.device)
    g = g.clamp_min(torch.finfo(conc.dtype).tiny)
    if not conc.requires_grad:
        return g
    dg = standard_gamma_grad(conc_d.expand_as(g).contiguous(), g)
    return g + (conc - conc_d) * dg


def standard_gamma_grad(conc: torch.Tensor, g: torch.Tensor, min_chunk: int = 32768) -> torch.Tensor:
    """torch's ``_standard_gamma_grad(conc, g)`` (dG/dconc at the drawn G, the gradient ``Gamma.rsample``
    uses), split over torch's intra-op thread count: the same values, element by element.

    Why: torch runs it as a serial kernel (~40 ns per element, in double), 10.3 ms of a 64-image batch's
    K = 32 sampled maps on the default tower, a fifth of what they cost beyond one map; torch releases
    the GIL inside, so threads share the work.
    """
    flat_c, flat_g = conc.reshape(-1), g.reshape(-1)
    out = torch.empty_like(flat_g)

    def run(lo: int, hi: int) -> None:
        out[lo:hi] = torch._standard_gamma_grad(flat_c[lo:hi], flat_g[lo:hi])

    in_chunks(flat_g.numel(), run, min_chunk)
    return out.view(g.shape)


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
    mu: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, uniforms: torch.Tensor, gamma: str = "inverse"
) -> torch.Tensor:
    """Reparameterised GGD sample z = μ + S · α · G^(1/β), G ~ Gamma(1/β, 1), S = ±1.

    ``mu/alpha/beta`` broadcast against ``uniforms[..., 0]``; ``uniforms[..., 1]`` gives the sign and
    the others G (``gamma``: a :data:`GAMMA_DRAWS` name, whose ``width`` the last axis must have).
    Gradients reach μ, α and β, so a sample depends on whatever produced them (for PARIC: the image
    tower's activations).
    """
    width = gamma_draw(gamma).width
    if uniforms.shape[-1] != width:
        raise ValueError(f"gamma draw '{gamma}' reads {width} uniforms per element, got {uniforms.shape[-1]}")
    u_s = uniforms[..., 1]
    shape = torch.broadcast_shapes(mu.shape, u_s.shape)
    conc = (1.0 / beta).expand(shape)
    u = open_unit(uniforms).expand(*shape, width)
    g = _gamma_from_uniform(conc, u, gamma)
    sign = torch.where(u_s < 0.5, -1.0, 1.0).to(mu.dtype)
    return mu + sign * alpha * g.pow(1.0 / beta)

"""Entropic optimal transport for batches of small problems, in the log domain, differentiable.

Why our own solver beside POT: LICO solves one problem per image at every training step and LaZSL
one per (image, class); POT's solvers take one problem at a time, so a Python loop over the batch
would dominate the step. This one runs every problem of a batch at once on the device; it is
checked against ``ot.sinkhorn_log`` (POT) in the tests. Iterations are unrolled, so gradients flow
through the cost into whatever produced it (LICO's feature maps).
"""
from __future__ import annotations

import torch


def sinkhorn_log(cost: torch.Tensor, a: torch.Tensor, b: torch.Tensor, eps: float = 0.1, iters: int = 100,
                 tol: float | None = None) -> torch.Tensor:
    """Transport plans T (..., n, m) minimising ⟨T, cost⟩ − ε·H(T) with rows summing to ``a`` (..., n)
    and columns to ``b`` (..., m). Zero entries of ``a`` / ``b`` (padding, masked crops) get no mass.

    ``tol``: every 10 iterations, a problem whose row-marginal error (L1) is below it stops
    updating; the loop ends when all have. Each problem's plan is therefore the same whatever else
    is in the batch (the public LaZSL code stops on the batch's mean error). None runs all ``iters``.
    """
    if cost.shape[:-2] != a.shape[:-1] or cost.shape[:-2] != b.shape[:-1] or cost.shape[-2:] != (a.shape[-1],
                                                                                                b.shape[-1]):
        raise ValueError(f"cost {tuple(cost.shape)} does not match marginals a {tuple(a.shape)}, b {tuple(b.shape)}")
    log_k = -cost / eps
    log_a, log_b = a.log(), b.log()
    f = torch.zeros_like(a)
    g = torch.zeros_like(b)
    done = torch.zeros(cost.shape[:-2], dtype=torch.bool, device=cost.device)
    for i in range(iters):
        f_new = log_a - torch.logsumexp(log_k + g.unsqueeze(-2), dim=-1)
        g_new = log_b - torch.logsumexp(log_k + f_new.unsqueeze(-1), dim=-2)
        if tol is None:
            f, g = f_new, g_new
            continue
        keep = done.unsqueeze(-1)
        f, g = torch.where(keep, f, f_new), torch.where(keep, g, g_new)
        if i % 10 == 9:
            with torch.no_grad():
                rows = torch.exp(log_k + f.unsqueeze(-1) + g.unsqueeze(-2)).sum(-1)
                done = done | ((rows - a).abs().sum(-1) < tol)
            if bool(done.all()):
                break
    return torch.exp(log_k + f.unsqueeze(-1) + g.unsqueeze(-2))


def uniform(shape: tuple[int, ...], n: int, like: torch.Tensor) -> torch.Tensor:
    """Uniform marginals 1/n of shape (*shape, n)."""
    return like.new_full((*shape, n), 1.0 / n)

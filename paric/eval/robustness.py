"""Adversarial robustness: FGSM and PGD (L∞, in [0, 1] pixel space) accuracy.

Why in pixel space: the classifiers normalise inside ``forward``, so ε means the same thing for
every model and dataset.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _grad_sign(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), y)
    (g,) = torch.autograd.grad(loss, x)
    return g.sign()


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """One signed-gradient step of size ε."""
    return (x + eps * _grad_sign(model, x, y)).clamp(0, 1).detach()


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 10,
        step_size: float | None = None, seed: int = 0) -> torch.Tensor:
    """Projected gradient descent from a seeded uniform start inside the ε-ball."""
    step_size = step_size if step_size is not None else 2.5 * eps / steps
    gen = torch.Generator(device="cpu").manual_seed(seed)
    delta = (torch.rand(x.shape, generator=gen) * 2 - 1).to(x.device, x.dtype) * eps
    adv = (x + delta).clamp(0, 1)
    for _ in range(steps):
        adv = adv + step_size * _grad_sign(model, adv, y)
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1).detach()
    return adv

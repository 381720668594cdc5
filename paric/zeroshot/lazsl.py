"""LaZSL (METHODS.md §5): zero-shot classification by transporting mass between image crops and a
class's attribute descriptors; the plan says which region supports the class.

Why batched and seeded: the public code loops over classes in Python, draws crops from the global
numpy RNG and stops Sinkhorn on the batch's mean error, so its results depend on batch and worker
order. Here crops come from the (seed, image_id) stream, every (image, class) problem is solved at
once on the device, and each stops on its own error (:func:`paric.ot.sinkhorn_log`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import roi_align

from paric.ot import sinkhorn_log
from paric.vlm.ggd import sample_uniforms


@dataclass(frozen=True)
class LazslConfig:
    """The published settings at 224 px (M = 90 crops); fewer crops at the embedded 64 px."""

    crops: int = 90
    scale: tuple[float, float] = (0.6, 0.9)
    alpha: float = 0.8
    eps: float = 0.1
    iters: int = 100
    tol: float = 1e-2


def crop_boxes(image_ids: list[str], height: int, width: int, crops: int, seed: int,
               scale: tuple[float, float] = (0.6, 0.9)) -> torch.Tensor:
    """Square crops (B, M, 4) as [x0, y0, x1, y1] pixels, side U(scale)·min(H, W), from the
    (seed, image_id) stream: an image's crops do not depend on its batch or worker."""
    out = np.empty((len(image_ids), crops, 4))
    for i, image_id in enumerate(image_ids):
        u = sample_uniforms(seed, f"lazsl-crops\x1f{image_id}", crops, 2)  # (M, 2, 2)
        side = (scale[0] + (scale[1] - scale[0]) * u[:, 0, 0]) * min(height, width)
        x0, y0 = u[:, 1, 0] * (width - side), u[:, 1, 1] * (height - side)
        out[i] = np.stack([x0, y0, x0 + side, y0 + side], axis=1)
    return torch.from_numpy(out).float()


def crop_views(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """The crops (B, M, 3, size, size), resized bilinearly from the original image (boxes kept)."""
    B, M = boxes.shape[:2]
    views = roi_align(images, list(boxes.to(images)), output_size=size, spatial_scale=1.0, sampling_ratio=2,
                      aligned=True)
    return views.view(B, M, *views.shape[1:])


def crop_mass(g: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """(B, M): uniform over the crops at least as similar to the global view as the mean crop, 0 elsewhere."""
    sims = (r * g.unsqueeze(1)).sum(-1)
    keep = (sims >= sims.mean(1, keepdim=True)).to(r.dtype)
    return keep / keep.sum(1, keepdim=True)


@dataclass
class LazslOutput:
    scores: torch.Tensor  # (B, C) ⟨T_c, S̃⟩
    plans: torch.Tensor  # (B, C, M, N) transport plans
    fused: torch.Tensor  # (B, C, M, N) S̃, the fused similarities the plans transport over
    by_description: torch.Tensor  # (B, C) mean_n ⟨g, t_n⟩ (classification by description)


def classify(g: torch.Tensor, r: torch.Tensor, t: torch.Tensor, t_valid: torch.Tensor,
             cfg: LazslConfig = LazslConfig()) -> LazslOutput:
    """Scores of L2-normalised global views g (B, D), crops r (B, M, D) against descriptor embeddings
    t (C, N, D) of which ``t_valid`` (C, N) are real (the rest padding). OT in float32."""
    g, r, t = g.float(), r.float(), t.float()
    valid = t_valid.to(g)
    global_sim = torch.einsum("bd,cnd->bcn", g, t)
    fused = (1 - cfg.alpha) * global_sim.unsqueeze(2) + cfg.alpha * torch.einsum("bmd,cnd->bcmn", r, t)
    B, C, M, N = fused.shape
    a = crop_mass(g, r).unsqueeze(1).expand(B, C, M)
    b = (valid / valid.sum(-1, keepdim=True)).unsqueeze(0).expand(B, C, N)
    plans = sinkhorn_log(1 - fused, a, b, cfg.eps, cfg.iters, cfg.tol)
    by_description = (global_sim * valid).sum(-1) / valid.sum(-1)
    return LazslOutput((plans * fused).sum((-1, -2)), plans, fused, by_description)


def crop_weights(plans: torch.Tensor, classes: torch.Tensor, fused: torch.Tensor | None = None) -> torch.Tensor:
    """(B, M) per crop: the mass transported to ``classes``' descriptors (the issue's form), or with
    ``fused`` (B, C, M, N) the crop's *score contribution* Σ_n T_mn·S̃_mn.

    Why both: the plan's row marginal is the crop mass itself (uniform over the kept crops, whatever
    the class), so the transported mass says which crops were kept, not which carry the class; the
    contribution weighs each crop by how well it matches the class's descriptors (README).
    """
    idx = torch.arange(len(plans), device=plans.device)
    return (plans[idx, classes] * (fused[idx, classes] if fused is not None else 1.0)).sum(-1)


def relevance(weights: torch.Tensor, boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixel relevance (B, H, W) in [0, 1]: each crop's weight (:func:`crop_weights`, negatives as 0)
    painted over its box, summed, divided by the peak."""
    ys = torch.arange(height, dtype=boxes.dtype, device=boxes.device).view(1, 1, height, 1) + 0.5
    xs = torch.arange(width, dtype=boxes.dtype, device=boxes.device).view(1, 1, 1, width) + 0.5
    x0, y0, x1, y1 = (boxes[..., i].view(*boxes.shape[:2], 1, 1) for i in range(4))
    inside = ((xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)).to(weights)
    heat = (inside * weights.clamp_min(0).view(*weights.shape, 1, 1)).sum(1)
    peak = heat.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return heat / peak

"""Saliency faithfulness: insertion and deletion AUC (Petsiuk et al.'s RISE protocol, as LICO reports).

Pixels are revealed (insertion, starting from a blurred image: RISE's blur by default) or removed (deletion, replaced by
the mean colour of the evaluated images, the first ``eval.faith_max_images`` of the test split) in
order of decreasing saliency; the curve is the true class's probability after each step, from 0 %
to 100 % of the pixels, and its area is the trapezoid over the whole curve, both end points
included. A faithful map makes insertion rise early (high AUC) and deletion fall early (low AUC);
overall = insertion − deletion. Batched: every image of a batch and every step of the curve in
one forward per step.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

from paric.models.cam import classifier_gradcam


def curve(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, saliency: torch.Tensor, start: torch.Tensor,
          end: torch.Tensor, steps: int) -> torch.Tensor:
    """The true class's probability (B, steps + 1) as the image goes from ``start`` to ``end``, the
    most salient pixels first: after step k, the first round(k·HW/steps) pixels come from ``end``."""
    B, _, H, W = x.shape
    rank = torch.empty(B, H * W, dtype=torch.long, device=x.device)
    order = saliency.flatten(1).argsort(dim=1, descending=True, stable=True)
    rank.scatter_(1, order, torch.arange(H * W, device=x.device).expand(B, -1))
    rank = rank.view(B, 1, H, W)
    probs = []
    with torch.no_grad():
        for k in range(steps + 1):
            n = round(k * H * W / steps)
            img = torch.where(rank < n, end, start)
            probs.append(torch.softmax(model(img), dim=1).gather(1, y[:, None])[:, 0])
    return torch.stack(probs, dim=1)


def auc(values: torch.Tensor) -> torch.Tensor:
    """Trapezoid area (B,) of curves sampled at equal steps over [0, 1], both ends included."""
    steps = values.shape[1] - 1
    return (values[:, 1:] + values[:, :-1]).sum(1) / (2 * steps)


def insertion_deletion(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, saliency: torch.Tensor,
                       blurred: torch.Tensor, mean: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(insertion AUC, deletion AUC), each (B,), for saliency maps (B, H, W) at the image's size."""
    insertion = auc(curve(model, x, y, saliency, blurred, x, steps))
    deletion = auc(curve(model, x, y, saliency, x, mean.expand_as(x), steps))
    return insertion, deletion


#: RISE's insertion blur (Petsiuk et al.'s code): an 11-px kernel with σ = 5 at 224 px, scaled to the image
RISE_BLUR = 5 / 224


def blur_kernel(side: int, blur: float) -> tuple[float, int]:
    """(σ in px, odd kernel size) of the insertion blur at an image ``side`` px wide, σ = ``blur`` · side:
    the kernel is 2⌊σ⌋ + 1 (RISE's 11 px at σ = 5), at least 3."""
    sigma = blur * side
    return sigma, max(3, 2 * int(sigma) + 1)


def protocol(side: int, steps: int, blur: float, n_images: int) -> dict:
    """Every constant the insertion / deletion numbers depend on, stored beside them (results.json):
    without them two papers' AUCs cannot be compared."""
    sigma, kernel = blur_kernel(side, blur)
    return {"saliency": "the classifier's Grad-CAM of the true class, bilinear to the image",
            "order": "descending saliency (stable sort)", "steps": steps, "image_px": side, "images": n_images,
            "insertion_start": f"Gaussian blur, sigma {sigma:.3g} px (= {blur:.4g} x side), kernel {kernel} px",
            "deletion_fill": "the evaluated images' mean colour", "auc": "trapezoid over [0, 1], both ends"}


def gradcam_faithfulness(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, mean: torch.Tensor,
                         steps: int = 16, blur: float = RISE_BLUR) -> tuple[torch.Tensor, torch.Tensor]:
    """Insertion / deletion AUC of the classifier's own Grad-CAM for the true class (upsampled
    bilinearly to the image). ``blur`` is the Gaussian blur's σ as a share of the image side (RISE's
    by default, :func:`blur_kernel`); ``mean`` (3,) the dataset's mean colour in [0, 1]."""
    model.eval()
    with torch.enable_grad():
        _, cam = classifier_gradcam(model, x, y)
    sal = F.interpolate(cam.detach()[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    sigma, kernel = blur_kernel(x.shape[-1], blur)
    blurred = gaussian_blur(x, [kernel, kernel], [sigma, sigma])
    return insertion_deletion(model, x, y, sal, blurred, mean.view(1, 3, 1, 1).to(x), steps)

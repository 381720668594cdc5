"""The reference map a regulariser pulls towards, chosen by the method's config.

Why here and not at precompute time: GALS' map, PARIC's mean/median of the first k of K stored
samples, the uncertainty weights and oracle masks are all cheap functions of what the map store
holds, so a sweep over k or the aggregation never recomputes a map.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from paric.attention.reference import aggregate_samples
from paric.config import MethodConfig


@dataclass
class Reference:
    """Reference maps at the classifier's input size, all (B, H, W) in [0, 1].

    ``valid`` marks images that get an attention loss (GALS: none for an all-zero reference);
    ``weight`` is the per-pixel confidence (ones unless the method is uncertainty-weighted).
    """

    map: torch.Tensor
    weight: torch.Tensor
    valid: torch.Tensor


def _upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)


def resize_mask(mask: torch.Tensor, size: tuple[int, int], mode: str = "nearest") -> torch.Tensor:
    """(B, h, w) 0/1 masks at ``size``: ``nearest``, or ``any`` (GALS: bilinear, then every pixel
    with any object coverage counts as object, which grows the mask by up to a pixel)."""
    if mode == "nearest":
        return F.interpolate(mask.unsqueeze(1), size=size, mode="nearest").squeeze(1)
    up = F.interpolate(mask.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)
    return (up > 1e-6).to(mask.dtype)


def needed_columns(method: MethodConfig) -> list[str]:
    """Batch columns this method's reference reads (so loaders carry nothing else)."""
    return {"none": [], "det": ["map_det"], "mean": ["map_samples"], "median": ["map_samples"],
            "oracle": ["mask"]}[method.reference]


def build_reference(batch: dict[str, torch.Tensor], method: MethodConfig,
                    size: tuple[int, int]) -> Reference | None:
    """The method's reference for a batch (None for methods without one).

    Batch keys used: ``map_det`` (B, h, w), ``map_samples`` (B, K, h, w), ``mask`` (B, H, W).
    """
    if method.reference == "none":
        return None
    std = None
    if method.reference == "det":
        ref = batch["map_det"].float()
    elif method.reference == "oracle":
        ref = batch["mask"].float()
        if tuple(ref.shape[-2:]) != tuple(size):
            ref = resize_mask(ref, size, method.mask_resize)
    else:
        samples = batch["map_samples"].float()
        if method.k is not None:
            samples = samples[:, : method.k]
        mean, median, std = aggregate_samples(samples)
        ref = mean if method.reference == "mean" else median
    ref = _upsample(ref, size).clamp(0, 1)
    if method.renormalise and method.reference != "oracle":
        # GALS upsamples, then renormalises: bilinear upsampling of a coarse map lowers its peak
        ref = ref / ref.flatten(1).amax(1).clamp_min(1e-8).view(-1, 1, 1)
    if method.reference_floor > 0 and method.reference != "oracle":
        # only the map's core counts as the object: everything below the floor is background
        ref = ((ref - method.reference_floor) / (1.0 - method.reference_floor)).clamp(0, 1)
    if method.dilate > 0:
        k = 2 * method.dilate + 1
        ref = F.max_pool2d(ref.unsqueeze(1), k, stride=1, padding=method.dilate).squeeze(1)
    weight = torch.ones_like(ref)
    if method.uncertainty == "inverse_std":
        if std is None:
            raise ValueError("uncertainty='inverse_std' needs a sampled reference (mean or median)")
        weight = 1.0 / (1.0 + _upsample(std, size) / method.uncertainty_scale)
    valid = ref.flatten(1).amax(1) > 0
    return Reference(ref, weight, valid)

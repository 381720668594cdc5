"""The reference map a regulariser pulls towards, chosen by the method's config.

Why here and not at precompute time: GALS' map, PARIC's mean/median of the first k of K stored
samples, the uncertainty weights and oracle masks are all cheap functions of what the map store
holds, so a sweep over k or the aggregation never recomputes a map.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from paric.attention.reference import AGGREGATIONS, sample_spread
from paric.config import MethodConfig
from paric.registry import Registry


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


@dataclass(frozen=True)
class ReferenceKind:
    """How a method's ``reference`` reads the batch: the columns it needs and the raw map it makes
    (with the per-pixel spread when it aggregates samples). A new kind of reference (another
    source's map) is one entry in :data:`REFERENCES`."""

    columns: tuple[str, ...]
    read: Callable[[dict[str, torch.Tensor], MethodConfig, tuple[int, int]],
                   tuple[torch.Tensor, torch.Tensor | None]]
    is_map: bool = True  # a VLM map (renormalised / floored as the method says), not a ground-truth mask
    grid: int | None = None  # the grid a mask is pooled to (the map-quality ladder's rungs)

    @property
    def sampled(self) -> bool:
        """Whether it reads stored samples (so k, aggregation and uncertainty weighting apply)."""
        return any(c.endswith("samples") for c in self.columns)


def _column(name: str) -> ReferenceKind:
    return ReferenceKind((name,), lambda b, m, size: (b[name].float(), None))


def _aggregate(name: str, which: str) -> ReferenceKind:
    def read(b: dict[str, torch.Tensor], m: MethodConfig, size: tuple[int, int]):
        samples = b[name].float()
        if m.k is not None:
            samples = samples[:, : m.k]
        # only what the method reads: a median's sort over K costs more than the step's map work
        std = sample_spread(samples) if m.uncertainty == "inverse_std" else None
        return AGGREGATIONS[which](samples), std
    return ReferenceKind((name,), read)


def _oracle(b: dict[str, torch.Tensor], m: MethodConfig, size: tuple[int, int]):
    ref = b["mask"].float()
    if tuple(ref.shape[-2:]) != tuple(size):
        ref = resize_mask(ref, size, m.mask_resize)
    return ref, None


def pooled_mask(mask: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, H, W) 0/1 masks area-pooled to ``grid``×``grid``: a perfect map at a VLM's grid (each cell the
    object's share of it), the map-quality ladder's rungs. Upsampled like any map by :func:`build_reference`."""
    return F.adaptive_avg_pool2d(mask.float().unsqueeze(1), grid).squeeze(1)


def _ladder(grid: int) -> ReferenceKind:
    return ReferenceKind(("mask",), lambda b, m, size: (pooled_mask(b["mask"], grid), None), grid=grid)


#: the grids of the ladder's pooled-mask references (``mask<g>``); the full-resolution rung is ``oracle``
LADDER_GRIDS = (4, 8, 16)

#: ``MethodConfig.reference`` -> how it is read: GALS' map, PARIC's mean / median of the first k
#: stored samples, the ground-truth mask
REFERENCES: Registry[ReferenceKind] = Registry("reference")
REFERENCES.add("det", _column("map_det"))
REFERENCES.add("mean", _aggregate("map_samples", "mean"))
REFERENCES.add("median", _aggregate("map_samples", "median"))
REFERENCES.add("pn_mean", _aggregate("map_pn_samples", "mean"))  # PARIC's samples × the tower's ‖v‖ (ours)
REFERENCES.add("pn_median", _aggregate("map_pn_samples", "median"))
REFERENCES.add("lazsl", _column("map_lazsl"))  # LaZSL's transported mass (paric.zeroshot.source)
REFERENCES.add("lazsl_score", _column("map_lazsl_score"))  # each crop's share of LaZSL's class score
REFERENCES.add("prolip_mean", _aggregate("map_prolip_samples", "mean"))  # ProLIP's own samples (issue 15)
REFERENCES.add("prolip_median", _aggregate("map_prolip_samples", "median"))
REFERENCES.add("oracle", ReferenceKind(("mask",), _oracle, is_map=False))
for _g in LADDER_GRIDS:  # the ground-truth mask as a perfect map at a coarse grid (map-quality ladder)
    REFERENCES.add(f"mask{_g}", _ladder(_g))


def needed_columns(method: MethodConfig) -> list[str]:
    """Batch columns this method's reference reads (so loaders carry nothing else)."""
    return [] if method.reference == "none" else list(REFERENCES.get(method.reference).columns)


def build_reference(batch: dict[str, torch.Tensor], method: MethodConfig,
                    size: tuple[int, int]) -> Reference | None:
    """The method's reference for a batch (None for methods without one); the columns it reads are
    its :data:`REFERENCES` entry's."""
    if method.reference == "none":
        return None
    kind = REFERENCES.get(method.reference)
    ref, std = kind.read(batch, method, size)
    ref = _upsample(ref, size).clamp(0, 1)
    if method.renormalise and kind.is_map:
        # GALS upsamples, then renormalises: bilinear upsampling of a coarse map lowers its peak
        ref = ref / ref.flatten(1).amax(1).clamp_min(1e-8).view(-1, 1, 1)
    if method.reference_floor > 0 and kind.is_map:
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

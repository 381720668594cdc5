"""How well reference maps point at the object: energy-in-mask and the pointing game.

Why: before spending GPU hours regularising towards a map, check that the map is on the object
at all, against a uniform map (the floor) and a random-init tower's map (the control).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def upsample(maps: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) grid maps -> (N, H, W) float32, bilinear, as the classifier will see them."""
    t = torch.from_numpy(np.asarray(maps, dtype=np.float32))[:, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[:, 0].clamp_min(0)


def energy_in_mask(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per image: share of the (upsampled) map's mass inside the object mask; NaN for an all-zero map."""
    m = upsample(maps, masks.shape[-2:])
    inside = torch.from_numpy(np.asarray(masks) > 0)
    total = m.flatten(1).sum(1)
    share = (m * inside).flatten(1).sum(1) / total.clamp_min(1e-12)
    return torch.where(total > 0, share, torch.nan).numpy()


POINTING_RULE = ("a hit when any pixel at the (upsampled) map's maximum lies in the object mask (a tie counts, "
                 "as GALS and Quantus); an all-zero map is a miss")


def pointing_game(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per image: 1 if the map's maximum falls inside the mask, :data:`POINTING_RULE`.

    Why ties count: a plateau (a saturated map, a pooled mask) has no single argmax; the first index
    in memory order, used before issue 28, made the score depend on where the plateau starts."""
    m = upsample(maps, masks.shape[-2:]).flatten(1)
    peak = m.amax(1, keepdim=True)
    inside = torch.from_numpy(np.asarray(masks).reshape(len(masks), -1) > 0)
    hit = ((m == peak) & inside).any(1) & (peak[:, 0] > 0)
    return hit.numpy().astype(np.float64)


def mask_area(masks: np.ndarray) -> np.ndarray:
    """Per image mask area fraction: both scores of a uniform map (in expectation for pointing)."""
    return (np.asarray(masks) > 0).reshape(len(masks), -1).mean(1)


def summarise(maps_by_kind: dict[str, np.ndarray], masks: np.ndarray) -> dict[str, dict[str, float]]:
    """{"energy_in_mask": {kind: mean}, "pointing_game": {kind: mean}} with a "uniform" entry."""
    out: dict[str, dict[str, float]] = {"energy_in_mask": {}, "pointing_game": {}}
    for kind, maps in maps_by_kind.items():
        out["energy_in_mask"][kind] = float(np.nanmean(energy_in_mask(maps, masks)))
        out["pointing_game"][kind] = float(np.mean(pointing_game(maps, masks)))
    out["energy_in_mask"]["uniform"] = float(mask_area(masks).mean())
    # a uniform map is one plateau: under the tie rule it points at every non-empty mask
    out["pointing_game"]["uniform"] = float(np.mean(pointing_game(np.ones(np.shape(masks)), masks)))
    return out

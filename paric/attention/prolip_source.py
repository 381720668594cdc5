"""The ``prolip`` map source: K Grad-CAM maps from ProLIP's own embedding samples
(:class:`~paric.attention.prolip_sampler.ProlipSampler`), with their mean, median and spread, beside
PARIC's adapter samples in the same store (the comparison of the two samplers)."""
from __future__ import annotations

import numpy as np
import torch

from paric.attention.sources import MAP_SOURCES, Column, EngineSource, sample_columns
from paric.attention.prolip_sampler import ProlipSampler


@MAP_SOURCES.register("prolip")
class ProlipSource(EngineSource):
    columns = (Column("map_prolip_samples", "samples", "samples", "ProLIP samples"),
               Column("map_prolip_mean", "map", "reference", "ProLIP mean", in_figure=True),
               Column("map_prolip_median", "map", "reference", "ProLIP median"),
               Column("map_prolip_std", "map", "uncertainty", "ProLIP std", in_figure=True))
    family = "prolip"

    def sampler(self, device: torch.device) -> ProlipSampler:
        return ProlipSampler(self.cfg.maps.K, self.cfg.maps.seed)

    def to_columns(self, maps: torch.Tensor) -> dict[str, np.ndarray]:
        return sample_columns(maps, [c.name for c in self.columns])

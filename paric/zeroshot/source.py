"""The ``lazsl`` map source: LaZSL's transport plan as a language-guided reference map.

Why a map source: the plan between an image's crops and its class's descriptors says which crops
carry the class; painting each crop's transported mass over its box gives a pixel relevance that
the GALS regularisers can pull towards, beside Grad-CAM's maps. Training maps use each image's
label (as GALS' prompts name the object); val and test maps do too, so map quality scores the
same object. It is not a Grad-CAM map: the source computes its columns itself (a ``ComputedSource``).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from paric.attention.sources import MAP_SOURCES, Column, ComputedSource
from paric.vlm.factory import VLM
from paric.zeroshot.evaluate import LazslScorer, descriptor_table, descriptors_for, lazsl_config, table_id
from paric.zeroshot.lazsl import crop_weights, relevance


def to_grid(heat: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) relevance -> (B, h, w) at the store's grid (area average), peak renormalised to 1."""
    small = F.adaptive_avg_pool2d(heat.unsqueeze(1), grid).squeeze(1)
    return small / small.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)


@MAP_SOURCES.register("lazsl")
class LazslSource(ComputedSource):
    """Σ over crops of the mass transported to the label's descriptors, painted over each crop's box
    (``map_lazsl``), and each crop's contribution to the label's score (``map_lazsl_score``; see
    :func:`paric.zeroshot.lazsl.crop_weights` for why both)."""

    columns = (Column("map_lazsl", "map", "reference", "LaZSL mass", in_figure=True),
               Column("map_lazsl_score", "map", "reference", "LaZSL score"))
    zero_shot = True

    def provenance(self) -> dict:
        sec = self.cfg.lazsl
        table = descriptor_table(sec.descriptors)
        return {"descriptors": table_id(table, self.cfg.vlm.class_template), "class": "label",
                **sec.model_dump(exclude={"descriptors"})}  # the crops' seed: maps.seed, top level

    def setup(self, vlm: VLM, classes: list[str], grid: tuple[int, int]) -> None:
        sec = self.cfg.lazsl
        desc = descriptors_for(classes, sec.descriptors, self.cfg.vlm.class_template)
        self.scorer = LazslScorer(vlm, desc, lazsl_config(sec), self.cfg.maps.seed)
        self.grid = grid

    def compute(self, x: torch.Tensor, image_ids: list[str], labels: np.ndarray) -> dict[str, np.ndarray]:
        sc = self.scorer(x, image_ids)
        y = torch.as_tensor(labels, device=x.device)
        H, W = x.shape[-2:]
        mass = relevance(crop_weights(sc.out.plans, y), sc.boxes, H, W)
        score = relevance(crop_weights(sc.out.plans, y, sc.out.fused), sc.boxes, H, W)
        return {"map_lazsl": to_grid(mass, self.grid).cpu().numpy(),
                "map_lazsl_score": to_grid(score, self.grid).cpu().numpy()}

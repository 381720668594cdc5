"""Map-quality stage: energy-in-mask and pointing game of the stored maps, with controls.

Why: the README's claim that the reference maps point at the object is measured here, against
a uniform map and against the same architecture with random weights.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from paric import store
from paric.attention.reference import ReferenceMapper
from paric.attention.sources import declared_columns
from paric.config import Config
from paric.data import WaterbirdsDataset
from paric.eval.map_quality import POINTING_RULE, summarise
from paric.io import write_json
from paric.stages.runner import Stage, run_stage
from paric.vlm.families import VLM_FAMILIES


def control_maps(cfg: Config, root: Path, split: str, layer: str, batch_size: int = 64) -> np.ndarray:
    """Deterministic maps of a randomly initialised tower of the same architecture (the control)."""
    vlm = VLM_FAMILIES[cfg.vlm.family].load(cfg.vlm, pretrained=None, checkpoint=None, seed=cfg.run.seed + 1)
    dataset = WaterbirdsDataset(root, split, image_size=vlm.image_size, with_masks=False)
    mapper = ReferenceMapper(vlm, cfg.vlm.prompts, layer=layer)
    out = []
    for b in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(b, min(len(dataset), b + batch_size))]
        x = vlm.normalise(torch.from_numpy(np.stack([it["image"] for it in items])))
        out.append(mapper(x, [it["image_id"] for it in items]).det)
    return np.concatenate(out)


def pixel_spread(std: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """A sampling source's per-pixel std over its K maps (maps in [0, 1]): its mean over all pixels,
    inside the object and outside it (upsampled to the masks, as the classifier sees them)."""
    from paric.eval.map_quality import upsample

    std, m = upsample(std, masks.shape[-2:]).numpy(), np.asarray(masks) > 0
    return {"mean": float(std.mean()), "in_mask": float(std[m].mean()) if m.any() else float("nan"),
            "out_mask": float(std[~m].mean()) if (~m).any() else float("nan")}


def quality_stage(cfg: Config, root: Path, layer: str, control_split: str = "test") -> dict:
    """Score each split's stored maps against its object masks; write ``maps/quality.json``."""
    out_path = cfg.layout.quality()
    hashes = tuple(store.read_provenance(cfg.layout.maps(s)).get("hash", "") for s in cfg.maps.splits)

    def score() -> None:
        report: dict = {"splits": {}}
        cols = declared_columns(cfg.maps.sources).values()
        refs = [c for c in cols if c.role == "reference"]
        spreads = [c for c in cols if c.role == "uncertainty"]
        for split in cfg.maps.splits:
            ms = store.read_store(cfg.layout.maps(split),
                                  columns=["image_id", *[c.name for c in refs + spreads]])
            ds = WaterbirdsDataset(root, split, with_masks=True)
            if not len(ds) or ds[0]["mask"] is None:
                continue
            by_id = {ds.rows["img_filename"].iloc[i]: i for i in range(len(ds))}
            masks = np.stack([ds[by_id[i]]["mask"] for i in ms.image_id])
            kinds = {c.short: ms.maps[c.name] for c in refs}  # every reference column the sources declare
            if split == control_split:
                kinds["random_init_det"] = control_maps(cfg, root, split, layer)
            summary = summarise(kinds, masks)
            summary["pixel_std"] = {c.short: pixel_spread(ms.maps[c.name], masks) for c in spreads}
            summary["n"] = int(len(masks))
            report["splits"][split] = summary
        write_json(out_path, report)

    # the maps' provenance hashes hold the data, VLM, prompts and layer; the control tower's seed is run.seed's
    # and the pointing game's rule (issue 28 made ties count): a stored summary scored otherwise is redone
    stage = Stage("quality", out_path.parent / "quality", ("run.seed",), (*hashes, POINTING_RULE),
                  outputs=("../quality.json",),
                  shown=out_path)
    return run_stage(cfg, stage, score, lambda: json.loads(out_path.read_text()))

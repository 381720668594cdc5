"""The precompute pipeline up to and including the map store and its quality report.

Why one function: ``pipelines/precompute.py`` and (later) ``pipelines/full.py`` run the same
sequence; each step skips itself when its cached output matches the config.
"""
from __future__ import annotations

import logging

from paric.attention.gradcam import resolve_layer
from paric.catalog import MAP_SOURCES
from paric.config import Config
from paric.io import write_json
from paric.stages.precompute import precompute_splits
from paric.stages.prepare import adapter_stage, data_stage, set_threads, vlm_stage
from paric.stages.quality import quality_stage
from paric.stages.zeroshot import zeroshot_stage

log = logging.getLogger("paric")


def run_precompute(cfg: Config, progress: bool = True) -> dict:
    """data → VLM → adapters (when a source samples through them) → maps per split → map quality →
    zero-shot accuracy (CLIP, by description, LaZSL) when the ``lazsl`` source is configured."""
    set_threads(cfg)
    out = cfg.output_path()
    out.mkdir(parents=True, exist_ok=True)
    root = data_stage(cfg, progress)
    vlm_art = vlm_stage(cfg, root, progress)
    needs_adapters = any(MAP_SOURCES.get(name).needs_adapters for name in cfg.maps.sources)
    adapter_ckpt = adapter_stage(cfg, root, vlm_art, progress) if needs_adapters else None
    vlm = vlm_art.load()
    layer = resolve_layer(vlm.model.visual, vlm.image_size, cfg.vlm.saliency_layer).path
    stores = precompute_splits(cfg, root, list(cfg.maps.splits), vlm_art, adapter_ckpt, layer)
    quality = quality_stage(cfg, root, layer)
    zero = zeroshot_stage(cfg, root, vlm_art) if any(MAP_SOURCES.get(n).zero_shot for n in cfg.maps.sources) \
        else None
    summary = {"data": str(root), "vlm": str(vlm_art.checkpoint or vlm_art.pretrained),
               "adapters": str(adapter_ckpt) if adapter_ckpt else None, "maps": {s: str(p) for s, p in stores.items()},
               "quality": quality, "zero_shot": zero}
    write_json(out / "precompute_summary.json", summary)
    return summary

"""Zero-shot accuracy of three classifiers on one split: CLIP with the class prompt, classification
by description (mean over descriptors), and LaZSL (optimal transport between crops and descriptors).

No Ray: the VLM's image tower encodes the global view and its crops batch by batch.
"""
from __future__ import annotations

import numpy as np
import torch

from paric.data.descriptors import Descriptors
from paric.vlm.factory import VLM
from paric.zeroshot.lazsl import LazslConfig, classify, crop_boxes, crop_views


def encode_descriptors(vlm: VLM, desc: Descriptors) -> tuple[torch.Tensor, torch.Tensor]:
    """Descriptor embeddings (C, N, D), padded with zeros, and which of them are real (C, N)."""
    n = max(len(s) for s in desc.sentences)
    flat = vlm.encode_text([x for s in desc.sentences for x in s])
    t = flat.new_zeros(len(desc.sentences), n, flat.shape[-1])
    valid = torch.zeros(len(desc.sentences), n, dtype=torch.bool)
    i = 0
    for c, s in enumerate(desc.sentences):
        t[c, :len(s)] = flat[i:i + len(s)]
        valid[c, :len(s)] = True
        i += len(s)
    return t, valid


@torch.no_grad()
def zero_shot(vlm: VLM, images: torch.Tensor, labels: np.ndarray, image_ids: list[str], classes: list[str],
              desc: Descriptors, template: str, cfg: LazslConfig, seed: int, batch_size: int = 32) -> dict:
    """Accuracies of the three classifiers on ``images`` (N, S, S, 3) uint8 at the VLM's size."""
    prompts = vlm.encode_text([template.format(c.replace("_", " ")) for c in classes])
    t, valid = encode_descriptors(vlm, desc)
    preds: dict[str, list[np.ndarray]] = {"clip": [], "by_description": [], "lazsl": []}
    size = vlm.image_size
    for s in range(0, len(images), batch_size):
        x = vlm.normalise(images[s:s + batch_size])
        g = vlm.model.encode_image(x, normalize=True)
        boxes = crop_boxes(image_ids[s:s + batch_size], size, size, cfg.crops, seed, cfg.scale)
        views = crop_views(x, boxes, size)
        r = vlm.model.encode_image(views.flatten(0, 1), normalize=True).view(len(x), cfg.crops, -1)
        out = classify(g, r, t, valid, cfg)
        preds["clip"].append((g @ prompts.T).argmax(1).numpy())
        preds["by_description"].append(out.by_description.argmax(1).numpy())
        preds["lazsl"].append(out.scores.argmax(1).numpy())
    y = np.asarray(labels)
    return {"n": int(len(y)), "crops": cfg.crops, "fell_back": list(desc.fell_back),
            "acc": {k: float((np.concatenate(v) == y).mean()) for k, v in preds.items()}}

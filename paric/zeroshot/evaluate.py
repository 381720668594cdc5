"""Zero-shot accuracy of three classifiers on one split: CLIP with the class prompt, classification
by description (mean over descriptors), and LaZSL (optimal transport between crops and descriptors).

No Ray: the VLM's image tower encodes the global view and its crops batch by batch. The same
:class:`LazslScorer` serves the zero-shot stage and the ``lazsl`` map source, so the maps come
from exactly the plans whose accuracy is reported.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import torch

from paric.data.descriptors import SHAPE_DESCRIPTORS, Descriptors, build, load
from paric.vlm.factory import VLM
from paric.zeroshot.lazsl import LazslConfig, LazslOutput, classify, crop_boxes, crop_views


def descriptor_table(path: str | None) -> dict[str, list[str]]:
    """The user's descriptor file (``lazsl.descriptors``), else the embedded benchmark's shapes'."""
    return load(path) if path else SHAPE_DESCRIPTORS


def table_id(table: dict[str, list[str]], template: str) -> str:
    """Content id of a descriptor table and the fallback template (for cache keys and provenance)."""
    body = json.dumps({"table": table, "template": template}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


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


@dataclass
class Scored:
    """One batch through LaZSL: the global embeddings, the crops' boxes and the classifier's output."""

    g: torch.Tensor  # (B, D)
    boxes: torch.Tensor  # (B, M, 4) pixels of the VLM's input
    out: LazslOutput


class LazslScorer:
    """The VLM, the classes' descriptor embeddings and LaZSL's settings, ready for image batches."""

    def __init__(self, vlm: VLM, desc: Descriptors, cfg: LazslConfig, seed: int) -> None:
        self.vlm, self.desc, self.cfg, self.seed = vlm, desc, cfg, seed
        device = next(vlm.model.parameters()).device
        t, valid = encode_descriptors(vlm, desc)
        self.t, self.valid = t.to(device), valid.to(device)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, image_ids: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(global embeddings (B, D), crop embeddings (B, M, D), boxes (B, M, 4)) of normalised images
        (B, 3, S, S) at the VLM's size; the ids seed the crops. Independent of the classes."""
        size = x.shape[-1]
        g = self.vlm.model.encode_image(x, normalize=True)
        boxes = crop_boxes(image_ids, x.shape[-2], size, self.cfg.crops, self.seed, self.cfg.scale).to(x.device)
        views = crop_views(x, boxes, size)
        r = self.vlm.model.encode_image(views.flatten(0, 1), normalize=True).view(len(x), self.cfg.crops, -1)
        return g, r, boxes

    def __call__(self, x: torch.Tensor, image_ids: list[str]) -> Scored:
        g, r, boxes = self.encode(x, image_ids)
        return self.classify(g, r, boxes)

    def classify(self, g: torch.Tensor, r: torch.Tensor, boxes: torch.Tensor) -> Scored:
        """LaZSL on encoded views (:meth:`encode`) against these classes' descriptors."""
        return Scored(g, boxes, classify(g, r, self.t, self.valid, self.cfg))


@torch.no_grad()
def zero_shot(vlm: VLM, images: torch.Tensor, labels: np.ndarray, image_ids: list[str], classes: list[str],
              desc: Descriptors, template: str, cfg: LazslConfig, seed: int, batch_size: int = 32) -> dict:
    """Accuracies of the three classifiers on ``images`` (N, S, S, 3) uint8 at the VLM's size."""
    return zero_shot_tasks(vlm, images, image_ids, {"task": (classes, labels, desc)}, template, cfg, seed,
                           batch_size)["task"]


@torch.no_grad()
def zero_shot_tasks(vlm: VLM, images: torch.Tensor, image_ids: list[str],
                    tasks: dict[str, tuple[list[str], np.ndarray, Descriptors]], template: str, cfg: LazslConfig,
                    seed: int, batch_size: int = 32) -> dict[str, dict]:
    """:func:`zero_shot` for several label sets of the same images ({name: (classes, labels,
    descriptors)}): each batch's views are encoded once and classified for every task."""
    scorers = {name: LazslScorer(vlm, desc, cfg, seed) for name, (_, _, desc) in tasks.items()}
    prompts = {name: vlm.encode_text([template.format(c.replace("_", " ")) for c in classes])
               for name, (classes, _, _) in tasks.items()}
    preds = {name: {"clip": [], "by_description": [], "lazsl": []} for name in tasks}
    first = next(iter(scorers.values()))
    for s in range(0, len(images), batch_size):
        g, r, boxes = first.encode(vlm.normalise(images[s:s + batch_size]), image_ids[s:s + batch_size])
        for name, scorer in scorers.items():
            sc = scorer.classify(g, r, boxes)
            preds[name]["clip"].append((g @ prompts[name].T).argmax(1).cpu().numpy())
            preds[name]["by_description"].append(sc.out.by_description.argmax(1).cpu().numpy())
            preds[name]["lazsl"].append(sc.out.scores.argmax(1).cpu().numpy())
    out = {}
    for name, (classes, labels, desc) in tasks.items():
        y = np.asarray(labels)
        out[name] = {"n": int(len(y)), "crops": cfg.crops, "classes": list(classes), "fell_back": list(desc.fell_back),
                     "acc": {k: float((np.concatenate(v) == y).mean()) for k, v in preds[name].items()}}
    return out


def descriptors_for(classes: list[str], path: str | None, template: str) -> Descriptors:
    """The classes' sentences from ``lazsl.descriptors`` (or the shapes'), with the fallbacks named."""
    return build(classes, descriptor_table(path), template)


def lazsl_config(section) -> LazslConfig:
    """The algorithm's settings from the config's ``lazsl`` section (:class:`paric.config.LazslSection`)."""
    return LazslConfig(crops=section.crops, scale=(section.scale[0], section.scale[1]), alpha=section.alpha,
                       eps=section.eps, iters=section.iters, tol=section.tol)

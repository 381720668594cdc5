"""ProLIP pretraining on the caption corpus (PPCL + inclusion + VIB), its CSD zero-shot, and the
measurement of its text uncertainty.

Why here: the loop is the CLIP one (:func:`paric.vlm.pretrain.contrastive_pretrain`); what differs
is the objective, the masked copies the inclusion loss compares with their originals, and what is
worth reporting about a probabilistic VLM (does σ² say anything?).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from paric.config import PretrainConfig, ProlipConfig
from paric.vlm.factory import VLM
from paric.vlm.pretrain import contrastive_pretrain
from paric.vlm.prolip.factory import build_prolip, tokenizer_for
from paric.vlm.prolip.loss import ProlipLossWeights, prolip_loss

#: the issue's probe pair: a generic caption and a specific one
PROBES = ("a shape", "a circle on the water")


def mask_rows(n: int, units: int, share: float, gen: torch.Generator) -> torch.Tensor:
    """(n, units) bool: exactly round(share·units) (at least 1 when share > 0) random units per row."""
    k = 0 if share <= 0 else max(1, round(share * units))
    ranks = torch.rand(n, units, generator=gen).argsort(1).argsort(1)
    return ranks < k


def text_mask(tokens: torch.Tensor, share: float, gen: torch.Generator) -> torch.Tensor:
    """(B, L) bool: ``share`` of each caption's non-padding tokens, chosen at random."""
    valid = tokens != 0
    scores = torch.rand(tokens.shape, generator=gen).masked_fill(~valid, 2.0)
    ranks = scores.argsort(1).argsort(1)
    k = (valid.sum(1, keepdim=True).float() * share).round().long()
    return (ranks < k) & valid


def pretrain_prolip(name: str, images: torch.Tensor, captions: list[str], cfg: PretrainConfig, pcfg: ProlipConfig,
                    seed: int, out_path: Path, progress: bool = True) -> dict:
    """Train the ProLIP config ``name`` from scratch; save it (with its text log σ² source) to ``out_path``.

    Masked copies: the first ``masked_fraction`` of each batch (the published code's 12.5 %), with
    ``text_mask`` of the caption's tokens replaced and ``1 − image_keep`` of the patches / feature
    cells dropped; their randomness has its own stream, so the batches and flips are the CLIP loop's.
    """
    unc_from = pcfg.unc_from(published=False)
    model = build_prolip(name, seed, unc_from)
    tokens = tokenizer_for(name)(captions)
    weights = ProlipLossWeights(pcfg.inclusion_image_text, pcfg.inclusion_masked, pcfg.vib, pcfg.kappa)
    mgen = torch.Generator().manual_seed(seed + 7919)
    units = model.visual.drop_units()

    def step(x: torch.Tensor, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        tok = tokens[idx]
        img, txt = model.encode_image_dist(x), model.encode_text_dist(tok)
        m = math.ceil(pcfg.masked_fraction * len(idx)) if pcfg.inclusion_masked > 0 else 0
        masked_img = masked_txt = masked_index = None
        if m:
            masked_index = torch.arange(m)
            masked_img = model.encode_image_dist(x[:m], drop=mask_rows(m, units, 1 - pcfg.image_keep, mgen))
            masked_txt = model.encode_text_dist(tok[:m], replace=text_mask(tok[:m], pcfg.text_mask, mgen))
        return prolip_loss((img.mean, img.logvar), (txt.mean, txt.logvar), model.logit_scale, model.logit_bias,
                           weights, (masked_img.mean, masked_img.logvar) if m else None,
                           (masked_txt.mean, masked_txt.logvar) if m else None, masked_index)

    stats = contrastive_pretrain(model, name, images, step, cfg, seed, out_path, progress,
                                 extra={"text_unc_from": unc_from, "family": "prolip"})
    stats["text_unc_from"] = unc_from
    return stats


@torch.no_grad()
def text_variance(vlm: VLM, texts: list[str], batch_size: int = 512) -> np.ndarray:
    """Mean σ² over dimensions of each text's Gaussian."""
    device = next(vlm.model.parameters()).device
    out = []
    for i in range(0, len(texts), batch_size):
        tok = vlm.tokenizer(texts[i:i + batch_size]).to(device)
        out.append(vlm.model.encode_text_dist(tok).var.mean(-1).cpu().numpy())
    return np.concatenate(out)


def text_uncertainty_report(vlm: VLM, captions: list[str], generic_nouns: tuple[str, ...] = ("shape", "object")) -> dict:
    """Does text uncertainty rise for shorter, more generic captions (the paper's finding)? Over the
    corpus' distinct captions: Spearman ρ of mean σ² against length in words, generic-noun captions
    against those naming a shape, and the probe pair."""
    unique = sorted(set(captions))
    var = text_variance(vlm, unique)
    words = np.array([len(c.split()) for c in unique])
    generic = np.array([any(f" {n}" in f" {c}" for n in generic_nouns) for c in unique])
    probes = dict(zip(PROBES, text_variance(vlm, list(PROBES)).tolist()))
    rho = spearmanr(words, var).statistic if len(set(words)) > 1 else float("nan")
    return {"captions": len(unique), "spearman_words_vs_var": float(rho),
            "mean_var_generic": float(var[generic].mean()) if generic.any() else None,
            "mean_var_named": float(var[~generic].mean()) if (~generic).any() else None,
            "mean_var_by_words": {int(w): float(var[words == w].mean()) for w in np.unique(words)},
            "probes": probes, "probe_rises": bool(probes[PROBES[0]] > probes[PROBES[1]])}


@torch.no_grad()
def zero_shot_csd(vlm: VLM, images: torch.Tensor, labels: np.ndarray, class_names: list[str], template: str,
                  batch_size: int = 256) -> dict[str, float]:
    """Top-1 accuracy with CSD ranking (score μv·μc − ½ Σ σ²c; the image's own σ² is the same for
    every class) and with μ only."""
    device = next(vlm.model.parameters()).device
    tok = vlm.tokenizer([template.format(c) for c in class_names]).to(device)
    text = vlm.model.encode_text_dist(tok)
    preds: dict[str, list[np.ndarray]] = {"csd": [], "mu": []}
    for i in range(0, len(images), batch_size):
        mu = vlm.model.encode_image(vlm.normalise(images[i:i + batch_size]).to(device), normalize=True)
        sim = mu @ text.mean.T
        preds["mu"].append(sim.argmax(1).cpu().numpy())
        preds["csd"].append((sim - 0.5 * text.var.sum(-1)).argmax(1).cpu().numpy())
    y = np.asarray(labels)
    return {k: float((np.concatenate(v) == y).mean()) for k, v in preds.items()}

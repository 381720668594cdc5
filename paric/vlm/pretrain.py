"""Contrastive pretraining of a custom open_clip model on the embedded caption corpus.

Why: CLIP weights cannot be downloaded here, so the embedded default pretrains a tiny tower with
open_clip's own ``ClipLoss`` on image–caption pairs in which object and place are independent;
the checkpoint is keyed by a hash of its config and reused. ProLIP's pretraining
(:mod:`paric.vlm.prolip.pretrain`) runs the same loop with its own losses.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from tqdm.auto import tqdm

from paric.config import PretrainConfig
from paric.io import atomic_path
from paric.precision import autocast
from paric.schedule import warmup_cosine
from paric.vlm.factory import VLM, build_model, normalise_images


def pretrain_clip(
    name: str,
    images: torch.Tensor,
    captions: list[str],
    cfg: PretrainConfig,
    seed: int,
    out_path: Path,
    progress: bool = True,
) -> dict:
    """Train the open_clip model ``name`` from scratch on (images uint8 (N,H,W,3), captions) with
    ``ClipLoss``; save to ``out_path`` (see :func:`contrastive_pretrain`)."""
    model = build_model(name, seed)
    tokens = open_clip.get_tokenizer(name)(captions)
    loss_fn = ClipLoss()

    def step(x: torch.Tensor, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        with autocast(cfg.precision):  # the towers only: the loss in float32 (vlm.pretrain.precision)
            img_f = model.encode_image(x, normalize=True).float()
            txt_f = model.encode_text(tokens[idx], normalize=True).float()
        return {"loss": loss_fn(img_f, txt_f, model.logit_scale.exp())}

    return contrastive_pretrain(model, name, images, step, cfg, seed, out_path, progress)


def contrastive_pretrain(model: torch.nn.Module, name: str, images: torch.Tensor,
                         step_loss: Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]],
                         cfg: PretrainConfig, seed: int, out_path: Path, progress: bool = True,
                         extra: dict | None = None) -> dict:
    """The pretraining loop both VLM families share: AdamW, warmup-cosine, random flips, a clamped
    ``logit_scale``; ``step_loss(normalised images, their corpus rows)`` returns the losses ("loss" is
    optimised; the others are averaged into the stats).

    Returns training stats. The checkpoint (with ``extra``) is written to a temp name and renamed, so
    an interrupted run never leaves a truncated checkpoint where a finished one is expected.
    """
    model.train()
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    n = images.shape[0]
    steps_per_epoch = n // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"vlm.pretrain.batch_size={cfg.batch_size} exceeds the caption corpus size {n}")
    total = steps_per_epoch * cfg.epochs
    gen = torch.Generator().manual_seed(seed)
    step, t0, losses = 0, time.time(), []
    parts: dict[str, list[float]] = {}
    bar = tqdm(total=total, desc=f"pretrain {name}", disable=not progress, unit="step")
    for epoch in range(cfg.epochs):
        low_res = epoch < cfg.low_res_epochs
        order = torch.randperm(n, generator=gen)
        for i in range(steps_per_epoch):
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            x = normalise_images(images[idx])
            flip = torch.rand(len(idx), generator=gen) < 0.5  # shapes and places are flip-invariant
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            if low_res:
                x = F.interpolate(x, scale_factor=cfg.low_res_scale, mode="bilinear", antialias=True)
            for g in opt.param_groups:
                g["lr"] = warmup_cosine(step, total, cfg.warmup_steps, cfg.lr)
            out = step_loss(x, idx)
            loss = out["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            losses.append(float(loss.detach()))
            for k, v in out.items():
                if k != "loss":
                    parts.setdefault(k, []).append(float(v.detach()))
            step += 1
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    bar.close()
    model.eval()
    stats = {
        "steps": step,
        "seconds": round(time.time() - t0, 1),
        "final_loss": float(np.mean(losses[-20:])),
        "pairs": n,
        "epochs": cfg.epochs,
        "low_res_epochs": cfg.low_res_epochs,
        "precision": cfg.precision,
    }
    stats.update({f"final_{k}": float(np.mean(v[-20:])) for k, v in parts.items()})
    with atomic_path(out_path) as tmp:
        torch.save({"model": model.state_dict(), "name": name, "stats": stats, **(extra or {})}, tmp)
    return stats


@torch.no_grad()
def zero_shot_accuracy(vlm: VLM, images: torch.Tensor, labels: np.ndarray, class_names: list[str],
                       template: str, batch_size: int = 256) -> float:
    """Top-1 accuracy of classifying ``images`` by the nearest ``template.format(class)`` prompt."""
    text = vlm.encode_text([template.format(c) for c in class_names])
    preds = []
    for i in range(0, len(images), batch_size):
        f = vlm.model.encode_image(vlm.normalise(images[i : i + batch_size]), normalize=True)
        preds.append((f @ text.T).argmax(1).numpy())
    return float((np.concatenate(preds) == np.asarray(labels)).mean())

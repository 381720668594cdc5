"""Pretraining the classifier's backbone on the balanced caption corpus (the ImageNet stand-in).

Why: GALS fine-tunes an ImageNet ResNet, whose features already describe objects *and*
backgrounds; a classifier trained from scratch on the 95%-correlated split never learns the object
at all, and then no attention regulariser has anything to steer. Here the backbone learns, on
corpus images where object and place are independent, to name both the object's shape (or
'none') and the place: supervised multi-task labels read from ``captions.csv``.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from paric.config import ClassifierConfig
from paric.io import atomic_path
from paric.models.classifier import build_classifier
from paric.schedule import warmup_cosine


def pretrain_backbone(cfg: ClassifierConfig, images: torch.Tensor, shape: np.ndarray, place: np.ndarray,
                      n_shapes: int, n_places: int, seed: int, out_path: Path, progress: bool = True) -> dict:
    """Train a classifier with a (shape + place) head on uint8 images (N, H, W, 3); save its state.

    ``shape`` uses index ``n_shapes`` for 'no object'. Returns training stats.
    """
    torch.manual_seed(seed)
    model = build_classifier(cfg.arch, n_shapes + 1 + n_places, "none", cfg.width, seed)
    p = cfg.pretrain
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    n = len(images)
    steps = n // p.batch_size
    if steps == 0:
        raise ValueError(f"classifier.pretrain.batch_size={p.batch_size} exceeds the corpus size {n}")
    total = steps * p.epochs
    gen = torch.Generator().manual_seed(seed)
    y_shape, y_place = torch.as_tensor(shape).long(), torch.as_tensor(place).long()
    t0, step, hist = time.time(), 0, []
    bar = tqdm(total=total, desc="pretrain classifier backbone", disable=not progress, unit="step")
    model.train()
    for _ in range(p.epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(steps):
            idx = order[i * p.batch_size : (i + 1) * p.batch_size]
            x = images[idx].permute(0, 3, 1, 2).float().div_(255.0)
            if x.shape[-1] != cfg.image_size:
                x = F.interpolate(x, size=(cfg.image_size, cfg.image_size), mode="bilinear", antialias=True)
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            for g in opt.param_groups:
                g["lr"] = warmup_cosine(step, total, min(100, total // 10), p.lr)
            out = model(x)
            ls = F.cross_entropy(out[:, : n_shapes + 1], y_shape[idx])
            lp = F.cross_entropy(out[:, n_shapes + 1 :], y_place[idx])
            opt.zero_grad(set_to_none=True)
            (ls + lp if p.place_labels else ls).backward()
            opt.step()
            hist.append((float(ls.detach()), float((out[:, : n_shapes + 1].argmax(1) == y_shape[idx]).float().mean()),
                         float((out[:, n_shapes + 1 :].argmax(1) == y_place[idx]).float().mean())))
            step += 1
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(shape_acc=f"{np.mean([h[1] for h in hist[-20:]]):.2f}")
    bar.close()
    last = np.asarray(hist[-max(1, steps // 4):])
    stats = {"steps": step, "seconds": round(time.time() - t0, 1), "shape_loss": float(last[:, 0].mean()),
             "shape_acc": float(last[:, 1].mean()), "place_acc": float(last[:, 2].mean()), "pairs": n}
    with atomic_path(out_path) as tmp:
        torch.save({"model": model.state_dict(), "stats": stats}, tmp)
    return stats

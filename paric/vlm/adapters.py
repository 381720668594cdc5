"""ProbVLM-style probabilistic adapters over a frozen VLM's embeddings (METHODS.md §2).

Why: PARIC needs a distribution, not a point, for each image and text embedding. One adapter
per modality maps a unit-norm embedding e to a per-dimension GGD(μ, α, β). Both modalities are
trained on the same (unit-norm) scale, unlike the public code which scales image targets by ~100.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from paric.config import AdapterConfig
from paric.io import atomic_path
from paric.vlm.ggd import ggd_nll


def _head(dim: int, hidden: int, positive: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim)]
    if positive:
        # Softplus rather than ReLU: same positivity, but a unit cannot die at 0 (then α = ∞).
        layers.append(nn.Softplus())
    return nn.Sequential(*layers)


class ProbAdapter(nn.Module):
    """Residual MLP trunk + heads for μ, 1/α and β of a per-dimension GGD."""

    def __init__(self, dim: int, hidden: int = 256, dropout: float = 0.1,
                 alpha_range: tuple[float, float] = (1e-4, 5.0), beta_range: tuple[float, float] = (0.1, 5.0)):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(hidden, dim),
        )
        self.mu = _head(dim, hidden, positive=False)
        self.inv_alpha = _head(dim, hidden, positive=True)
        self.beta = _head(dim, hidden, positive=True)
        self.alpha_range = tuple(alpha_range)
        self.beta_range = tuple(beta_range)

    def forward(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.trunk(e) + e
        mu = self.mu(h)
        alpha = (1.0 / (self.inv_alpha(h) + 1e-6)).clamp(*self.alpha_range)
        beta = self.beta(h).clamp(*self.beta_range)
        return mu, alpha, beta


@dataclass
class AdapterPair:
    """The image and text adapters, trained together (the cross-modal term couples them)."""

    image: ProbAdapter
    text: ProbAdapter

    def eval(self) -> "AdapterPair":
        self.image.eval()
        self.text.eval()
        return self

    def state_dict(self) -> dict:
        return {"image": self.image.state_dict(), "text": self.text.state_dict()}


def build_adapters(dim: int, cfg: AdapterConfig) -> AdapterPair:
    kw = dict(hidden=cfg.hidden, dropout=cfg.dropout, alpha_range=cfg.alpha_range, beta_range=cfg.beta_range)
    return AdapterPair(ProbAdapter(dim, **kw), ProbAdapter(dim, **kw))


def adapter_loss(pair: AdapterPair, img: torch.Tensor, txt: torch.Tensor, cfg: AdapterConfig) -> dict[str, torch.Tensor]:
    """L1(μ, e) + λ_nll·NLL(e) per modality + λ_cross·(image dist scoring its caption and vice versa;
    with ``cross_l1``, ProbVLM's script's L1 between each mean and the other modality's embedding too)."""
    mi, ai, bi = pair.image(img)
    mt, at, bt = pair.text(txt)
    l1 = F.l1_loss(mi, img) + F.l1_loss(mt, txt)
    nll = ggd_nll(img, mi, ai, bi).mean() + ggd_nll(txt, mt, at, bt).mean()
    cross = ggd_nll(txt, mi, ai, bi).mean() + ggd_nll(img, mt, at, bt).mean()
    if cfg.cross_l1:
        cross = cross + F.l1_loss(mi, txt) + F.l1_loss(mt, img)
    total = l1 + cfg.lambda_nll * nll + cfg.lambda_cross * cross
    return {"loss": total, "l1": l1, "nll": nll, "cross": cross}


def train_adapters(img_emb: torch.Tensor, txt_emb: torch.Tensor, cfg: AdapterConfig, seed: int,
                   out_path: Path, progress: bool = True) -> tuple[AdapterPair, dict]:
    """Fit both adapters on paired unit-norm embeddings (N, d); hold out 10% to report NLL.

    The checkpoint is written atomically; returns the pair (in eval mode) and the stats.
    """
    if img_emb.shape != txt_emb.shape:
        raise ValueError(f"image/text embeddings differ in shape: {tuple(img_emb.shape)} vs {tuple(txt_emb.shape)}")
    torch.manual_seed(seed)
    n, dim = img_emb.shape
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    n_val = max(1, n // 10)
    val, tr = perm[:n_val], perm[n_val:]
    pair = build_adapters(dim, cfg)
    params = list(pair.image.parameters()) + list(pair.text.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr)
    steps = max(1, len(tr) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps)
    t0 = time.time()
    bar = tqdm(range(cfg.epochs), desc="adapters", disable=not progress, unit="epoch")
    for _ in bar:
        pair.image.train()
        pair.text.train()
        order = tr[torch.randperm(len(tr), generator=gen)]
        for i in range(steps):
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            losses = adapter_loss(pair, img_emb[idx], txt_emb[idx], cfg)
            opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            opt.step()
            sched.step()
        bar.set_postfix(loss=f"{float(losses['loss'].detach()):.3f}")
    pair.eval()
    with torch.no_grad():
        v = adapter_loss(pair, img_emb[val], txt_emb[val], cfg)
        mi, ai, bi = pair.image(img_emb[val])
    stats = {
        "seconds": round(time.time() - t0, 1),
        "pairs": int(n),
        "val_l1": float(v["l1"]),
        "val_nll": float(v["nll"]),
        "val_cross_nll": float(v["cross"]),
        "mean_alpha": float(ai.mean()),
        "mean_beta": float(bi.mean()),
    }
    with atomic_path(out_path) as tmp:
        torch.save({"adapters": pair.state_dict(), "dim": dim, "config": cfg.model_dump(), "stats": stats}, tmp)
    return pair, stats


def load_adapters(path: Path) -> AdapterPair:
    """Rebuild an :class:`AdapterPair` from a checkpoint written by :func:`train_adapters`."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    cfg = AdapterConfig.model_validate(state["config"])
    pair = build_adapters(int(state["dim"]), cfg)
    pair.image.load_state_dict(state["adapters"]["image"])
    pair.text.load_state_dict(state["adapters"]["text"])
    return pair.eval()


def embed_pairs(vlm, images: torch.Tensor, captions: list[str], batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm embeddings of (images uint8 (N,H,W,3), captions) from the frozen VLM."""
    imgs, txts = [], []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            imgs.append(vlm.model.encode_image(vlm.normalise(images[i : i + batch_size]), normalize=True))
            txts.append(vlm.encode_text(captions[i : i + batch_size]))
    return torch.cat(imgs), torch.cat(txts)


__all__ = ["ProbAdapter", "AdapterPair", "build_adapters", "adapter_loss", "train_adapters", "load_adapters",
           "embed_pairs"]

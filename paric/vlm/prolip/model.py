"""ProLIP's towers (METHODS.md §4), built from open_clip's blocks: each tower emits a diagonal
Gaussian N(μ, diag σ²) per input.

Why not open_clip's own towers with an extra head: the published model adds an [UNC] token beside
[CLS] (vision ``[CLS, UNC, patches]``, text ``tokens …, UNC, CLS``), so the positional tables and
the token layout differ; the transformer blocks, norms and tokenizer are open_clip's.

- μ: the L2-normalised projected [CLS] output (``encode_image`` / ``encode_text`` return it, so
  every consumer of a CLIP model (zero-shot, adapters, LaZSL) works on ProLIP unchanged).
- log σ²: a linear head whose bias starts at −10 (σ² ≈ 5e-5 at init), on the [UNC] output.
  The published text tower computes the [UNC] output and discards it, reading log σ² from the
  projected [CLS] instead; its weights depend on that, hence ``text_unc_from: unc | cls``.
- The published code has three more quirks its weights depend on, each an option here (default off,
  the paper's form; :mod:`paric.vlm.prolip.published` turns them on): the vision [CLS] goes through
  ``ln_post`` twice (``ln_post_twice``); the text tower attends without a causal mask
  (``causal=False``); its projection has a bias (``proj_bias``), and its norms use eps 1e-6.
- The CNN vision variant (the embedded benchmark's tiny tower, whose ViT did not learn shape)
  has no tokens: its [UNC] is a second pooled head over the last stage, beside the μ head.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Literal

import timm
import torch
import torch.nn.functional as F
from open_clip.transformer import LayerNorm, Transformer
from torch import nn

import paric.vlm.towers  # noqa: F401  registers the tiny timm trunks the CNN configs name

UNC_BIAS_INIT = -10.0


@dataclass
class Gaussian:
    """A batch of diagonal Gaussians: ``mean`` (B, D) unit-norm, ``logvar`` (B, D) = log σ²."""

    mean: torch.Tensor
    logvar: torch.Tensor

    @property
    def var(self) -> torch.Tensor:
        return self.logvar.exp()


def _unc_head(width: int, dim: int) -> nn.Linear:
    head = nn.Linear(width, dim)
    nn.init.normal_(head.weight, std=width ** -0.5 * 0.1)  # small: log σ² starts near the bias
    nn.init.constant_(head.bias, UNC_BIAS_INIT)
    return head


class ProlipViT(nn.Module):
    """Vision tokens ``[CLS, UNC, patches]`` (grid + 2 positions) through open_clip blocks.

    Attribute names follow open_clip's ``VisionTransformer`` (``conv1``, ``transformer.resblocks``,
    ``ln_post``, ``proj``, ``grid_size``), so the saliency layer resolves as for CLIP, with two
    leading non-patch tokens that Grad-CAM drops.
    """

    pool_type = "tok"
    attn_pool = None

    def __init__(self, image_size: int, patch_size: int, width: int, layers: int, heads: int, embed_dim: int,
                 mlp_ratio: float = 4.0, ln_post_twice: bool = False) -> None:
        super().__init__()
        self.image_size, self.patch_size, self.ln_post_twice = image_size, patch_size, ln_post_twice
        self.grid_size = (image_size // patch_size, image_size // patch_size)
        scale = width ** -0.5
        self.conv1 = nn.Conv2d(3, width, patch_size, patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.unc_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.grid_size[0] * self.grid_size[1] + 2, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, mlp_ratio)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, embed_dim))
        self.unc_head = _unc_head(width, embed_dim)

    def forward(self, x: torch.Tensor, drop: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(projected [CLS], log σ²) of images (B, 3, S, S). ``drop`` (B, n_patches) bool: patches left
        out of the attention (the inclusion loss's masked copies), by a key mask."""
        p = self.conv1(x).flatten(2).transpose(1, 2)  # (B, N, width)
        lead = torch.stack([self.class_embedding, self.unc_embedding]).to(p.dtype).expand(len(p), -1, -1)
        t = self.ln_pre(torch.cat([lead, p], dim=1) + self.positional_embedding.to(p.dtype))
        mask = None
        if drop is not None:
            keys = torch.cat([drop.new_zeros(len(drop), 2), drop], dim=1)  # (B, N + 2)
            heads = self.transformer.resblocks[0].attn.num_heads
            mask = torch.zeros(keys.shape, dtype=t.dtype, device=t.device).masked_fill(keys, float("-inf"))
            mask = mask[:, None, None, :].expand(-1, heads, t.shape[1], -1).reshape(-1, t.shape[1], t.shape[1])
        return self.embed_prefix(self.transformer(t, attn_mask=mask))

    def embed_prefix(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(projected [CLS], log σ²) from the last block's outputs at the leading tokens (B, ≥2, width);
        Grad-CAM's fast head (:class:`paric.attention.gradcam.ClsHead`) calls it on those two only."""
        cls, unc = self.ln_post(t[:, 0]), self.ln_post(t[:, 1])
        if self.ln_post_twice:  # the published tower's quirk: its [CLS] is normalised again
            cls = self.ln_post(cls)
        return cls @ self.proj, self.unc_head(unc)

    def drop_units(self) -> int:
        """Patches per image (the units a masked copy drops)."""
        return self.grid_size[0] * self.grid_size[1]


class ProlipCNN(nn.Module):
    """A timm CNN trunk with two pooled heads over its last stage: μ (``head``) and log σ² (``unc_head``).

    ``trunk`` is the name open_clip's timm tower uses, so the saliency layer resolves the same way.
    """

    def __init__(self, timm_model_name: str, image_size: int, embed_dim: int) -> None:
        super().__init__()
        self.image_size = image_size
        self.trunk = timm.create_model(timm_model_name, pretrained=False, num_classes=0, global_pool="")
        width = self.trunk.num_features
        self.head = nn.Linear(width, embed_dim, bias=False)
        self.unc_head = _unc_head(width, embed_dim)

    def forward(self, x: torch.Tensor, drop: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(projected pooled features, log σ²). ``drop`` (B, h·w) bool: feature cells left out of both
        pools (the inclusion loss's masked copies)."""
        f = self.trunk.forward_features(x).flatten(2)  # (B, C, h·w)
        if drop is None:
            pooled = f.mean(-1)
        else:
            keep = (~drop).to(f.dtype)[:, None, :]
            pooled = (f * keep).sum(-1) / keep.sum(-1).clamp_min(1.0)
        return self.head(pooled), self.unc_head(pooled)

    def drop_units(self) -> int:
        """Feature cells of the last stage at ``image_size`` (the units a masked copy drops)."""
        with torch.no_grad():
            f = self.trunk.forward_features(torch.zeros(1, 3, self.image_size, self.image_size,
                                                        device=self.head.weight.device))
        return int(f.shape[-1] * f.shape[-2])


class ProlipText(nn.Module):
    """Tokens, then [UNC] and [CLS] appended (context + 2 positions), causal attention by default: the
    appended tokens see the whole caption either way. μ from the projected [CLS]; log σ² from the
    [UNC] output (``unc_from='unc'``, the paper) or from the projected [CLS] (``'cls'``, the
    published code, whose head then maps embed_dim → embed_dim)."""

    def __init__(self, context_length: int, vocab_size: int, width: int, heads: int, layers: int, embed_dim: int,
                 unc_from: Literal["unc", "cls"] = "unc", mlp_ratio: float = 4.0, causal: bool = True,
                 proj_bias: bool = False, ln_eps: float = 1e-5) -> None:
        super().__init__()
        self.context_length, self.unc_from, self.causal = context_length, unc_from, causal
        scale = width ** -0.5
        self.token_embedding = nn.Embedding(vocab_size, width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.unc_embedding = nn.Parameter(scale * torch.randn(width))
        self.cls_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(0.01 * torch.randn(context_length + 2, width))
        norm = partial(LayerNorm, eps=ln_eps)
        self.transformer = Transformer(width, layers, heads, mlp_ratio, norm_layer=norm)
        self.ln_final = norm(width)
        # a bias-free matrix (our checkpoints) or, with proj_bias, a Linear (the published layout)
        self.text_projection = (nn.Linear(width, embed_dim) if proj_bias
                                else nn.Parameter(scale * torch.randn(width, embed_dim)))
        self.unc_head = _unc_head(width if unc_from == "unc" else embed_dim, embed_dim)
        n = context_length + 2
        self.register_buffer("attn_mask", torch.full((n, n), float("-inf")).triu_(1), persistent=False)

    def forward(self, tokens: torch.Tensor, replace: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(projected [CLS], log σ²) of tokens (B, L). ``replace`` (B, L) bool: token embeddings set to
        zero (the inclusion loss's masked captions)."""
        x = self.token_embedding(tokens)
        if replace is not None:
            x = x.masked_fill(replace[..., None], 0.0)
        tail = torch.stack([self.unc_embedding, self.cls_embedding]).to(x.dtype).expand(len(x), -1, -1)
        x = torch.cat([x, tail], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_final(self.transformer(x, attn_mask=self.attn_mask.to(x.dtype) if self.causal else None))
        proj = self.text_projection
        cls = proj(x[:, -1]) if isinstance(proj, nn.Linear) else x[:, -1] @ proj
        return cls, self.unc_head(x[:, -2] if self.unc_from == "unc" else cls)


class ProLIP(nn.Module):
    """Image and text towers with SigLIP's learnt scale and bias (b starts at −10).

    ``encode_*`` return μ like an open_clip model (so it is a drop-in VLM); ``encode_*_dist`` return
    the :class:`Gaussian` with unit-norm μ.
    """

    def __init__(self, embed_dim: int, vision_cfg: dict, text_cfg: dict) -> None:
        super().__init__()
        vision_cfg = dict(vision_cfg)
        kind = vision_cfg.pop("kind", "vit")
        self.visual = (ProlipCNN(embed_dim=embed_dim, **vision_cfg) if kind == "cnn"
                       else ProlipViT(embed_dim=embed_dim, **vision_cfg))
        self.text = ProlipText(embed_dim=embed_dim, **text_cfg)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.logit_bias = nn.Parameter(torch.tensor(-10.0))

    def encode_image_dist(self, x: torch.Tensor, drop: torch.Tensor | None = None) -> Gaussian:
        mu, logvar = self.visual(x, drop)
        return Gaussian(F.normalize(mu, dim=-1), logvar)

    def encode_text_dist(self, tokens: torch.Tensor, replace: torch.Tensor | None = None) -> Gaussian:
        mu, logvar = self.text(tokens, replace)
        return Gaussian(F.normalize(mu, dim=-1), logvar)

    def encode_image(self, x: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        mu, _ = self.visual(x)
        return F.normalize(mu, dim=-1) if normalize else mu

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        mu, _ = self.text(tokens)
        return F.normalize(mu, dim=-1) if normalize else mu

"""Grad-CAM on an open_clip visual tower, for many target scores at once.

Why: PARIC needs K (+1 deterministic) Grad-CAM maps per prompt per image. They share one
forward pass; the tower's activations at the saliency layer are turned into a leaf tensor by a
forward hook, so the gradients of all scores w.r.t. that leaf come from a single batched
vector–Jacobian product that only traverses the (cheap) part of the tower after the layer.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


@dataclass(frozen=True)
class SaliencyLayer:
    """Where Grad-CAM reads activations: a module path and how its output is laid out."""

    path: str
    layout: str  # "tokens" (B, N, C) with ``prefix`` leading non-patch tokens, or "conv" (B, C, H, W)
    grid: tuple[int, int]
    prefix: int = 0


def _probe_shape(visual: nn.Module, module: nn.Module, image_size: int) -> torch.Size:
    seen: dict[str, torch.Size] = {}
    def hook(_m, _i, out) -> None:
        seen["shape"] = out.shape

    handle = module.register_forward_hook(hook)
    was_training = visual.training
    visual.eval()
    with torch.no_grad():
        visual(torch.zeros(1, 3, image_size, image_size, device=next(visual.parameters()).device))
    visual.train(was_training)
    handle.remove()
    return seen["shape"]


def resolve_layer(visual: nn.Module, image_size: int, path: str = "auto") -> SaliencyLayer:
    """Pick the saliency layer of a visual tower.

    ``auto``: a ViT with average pooling -> output of the last block; with CLS pooling the last
    block's patch tokens never reach the output, so -> output of the block before (the input
    of the last block, which reaches [CLS] through its attention). A ModifiedResNet -> the last
    stage whose grid is at least 8×8 (``layer4`` at 224 px; earlier at small inputs).
    """
    if path == "auto":
        if hasattr(visual, "transformer"):
            blocks = len(visual.transformer.resblocks)
            pool = getattr(visual, "pool_type", "tok")
            idx = blocks - 1 if pool == "avg" or blocks == 1 else blocks - 2
            path = f"transformer.resblocks.{idx}"
        elif hasattr(visual, "layer4"):
            path = "layer4"
            for name in ("layer4", "layer3", "layer2", "layer1"):
                shape = _probe_shape(visual, visual.get_submodule(name), image_size)
                path = name
                if min(shape[-2:]) >= 8:
                    break
        else:
            raise ValueError(f"vlm.saliency_layer: cannot choose a layer automatically for {type(visual).__name__}")
    try:
        module = visual.get_submodule(path)
    except AttributeError as exc:
        raise ValueError(f"vlm.saliency_layer: '{path}' is not a module of the visual tower") from exc
    shape = _probe_shape(visual, module, image_size)
    if len(shape) == 4:
        return SaliencyLayer(path, "conv", (int(shape[2]), int(shape[3])))
    if len(shape) == 3:
        gh, gw = (int(g) for g in visual.grid_size)
        return SaliencyLayer(path, "tokens", (gh, gw), prefix=int(shape[1]) - gh * gw)
    raise ValueError(f"vlm.saliency_layer: '{path}' outputs shape {tuple(shape)}, expected 3-D tokens or 4-D maps")


def cls_head(visual: nn.Module, layer: SaliencyLayer) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """For a [CLS]-pooled ViT read at the input of its last block: the map from that input to the
    embedding, evaluated for the [CLS] query only.

    Why: autograd through the full last block costs a block's backward per target score (K+1 of
    them); only the [CLS] row reaches the output, so the keys/values of all tokens and the query,
    MLP and head of one token are enough. Exactly equal to the tower's own forward (tested).
    Returns None when the tower does not have this form (the generic path is used then).
    """
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if (blocks is None or getattr(visual, "pool_type", None) != "tok" or getattr(visual, "attn_pool", None) is not None
            or len(blocks) < 2 or layer.path != f"transformer.resblocks.{len(blocks) - 2}"):
        return None
    last = blocks[-1]
    attn = getattr(last, "attn", None)
    if not isinstance(attn, nn.MultiheadAttention) or not attn.batch_first or not hasattr(last, "ls_1"):
        return None

    def head(x: torch.Tensor) -> torch.Tensor:
        y = last.ln_1(x)
        h = x[:, :1] + last.ls_1(attn(y[:, :1], y, y, need_weights=False)[0])
        h = h + last.ls_2(last.mlp(last.ln_2(h)))
        pooled = visual.ln_post(h[:, 0])
        return pooled @ visual.proj if visual.proj is not None else pooled

    return head


@contextmanager
def capture_as_leaf(visual: nn.Module, layer: SaliencyLayer):
    """Within the context, the layer's output is replaced by a detached leaf that requires grad
    (stored in the yielded dict under "acts"), so autograd graphs start there."""
    store: dict[str, torch.Tensor] = {}

    def hook(_m, _i, out):
        leaf = out.detach().requires_grad_(True)
        store["acts"] = leaf
        return leaf

    handle = visual.get_submodule(layer.path).register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def to_channels_last_grid(t: torch.Tensor, layer: SaliencyLayer) -> torch.Tensor:
    """Activations or gradients (..., layer output) -> (..., H*W, C) over the patch grid."""
    if layer.layout == "tokens":
        return t[..., layer.prefix :, :]
    return t.flatten(-2).transpose(-1, -2)


def gradcam(acts: torch.Tensor, grads: torch.Tensor, layer: SaliencyLayer) -> torch.Tensor:
    """Grad-CAM: w_c = mean over the grid of ∂s/∂A_c; map = ReLU(Σ_c w_c A_c).

    ``acts``: (B, ...) layer output; ``grads``: (V, B, ...) for V target scores.
    Returns (V, B, H, W) unnormalised maps.
    """
    a = to_channels_last_grid(acts, layer)  # (B, P, C)
    g = to_channels_last_grid(grads, layer)  # (V, B, P, C)
    w = g.mean(dim=-2)  # (V, B, C)
    cam = torch.einsum("vbc,bpc->vbp", w, a).clamp_min(0)
    return cam.reshape(*cam.shape[:2], *layer.grid)


def minmax_normalise(maps: torch.Tensor) -> torch.Tensor:
    """(m − min)/(max − min) over the last two dims, out of place; an all-constant map -> zeros."""
    flat = maps.flatten(-2)
    lo = flat.min(-1, keepdim=True).values
    hi = flat.max(-1, keepdim=True).values
    span = hi - lo
    out = torch.where(span > 0, (flat - lo) / span.clamp_min(1e-12), torch.zeros_like(flat))
    return out.view_as(maps)


def batched_vjp(scores: torch.Tensor, leaf: torch.Tensor) -> torch.Tensor:
    """Gradients of every column of ``scores`` (B, V) w.r.t. ``leaf``, in one batched VJP.

    Scores of different images do not interact (no batch statistics in eval mode), so the
    gradient of Σ_b scores[b, v] w.r.t. ``leaf`` holds every image's gradient for target v.
    Returns (V, *leaf.shape).
    """
    v = scores.shape[1]
    eye = torch.eye(v, dtype=scores.dtype, device=scores.device)
    grad_outputs = eye.unsqueeze(1).expand(v, scores.shape[0], v)
    (grads,) = torch.autograd.grad(scores, leaf, grad_outputs=grad_outputs, is_grads_batched=True)
    return grads


def looped_vjp(scores: torch.Tensor, leaf: torch.Tensor) -> torch.Tensor:
    """Reference implementation of :func:`batched_vjp`: one backward pass per target."""
    out = []
    for j in range(scores.shape[1]):
        (g,) = torch.autograd.grad(scores[:, j].sum(), leaf, retain_graph=True)
        out.append(g)
    return torch.stack(out)

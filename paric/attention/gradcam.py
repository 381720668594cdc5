"""Grad-CAM on an open_clip visual tower, for many target scores at once.

Why: PARIC needs K (+1 deterministic) Grad-CAM maps per prompt per image. They share one
forward pass; the tower's activations at the saliency layer are turned into a leaf tensor by a
forward hook, so the gradients of all scores w.r.t. that leaf come from a single batched
vector–Jacobian product that only traverses the (cheap) part of the tower after the layer.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
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


#: smallest grid a ModifiedResNet stage may have to be chosen automatically (RN50's layer4 at 224 px)
MIN_RESNET_GRID = 7


def resolve_layer(visual: nn.Module, image_size: int, path: str = "auto") -> SaliencyLayer:
    """Pick the saliency layer of a visual tower.

    ``auto``: a ViT with average pooling -> output of the last block; with [CLS] pooling the last
    block's patch outputs never reach the output, so -> its ``ln_1`` (the normalised patch tokens
    that reach [CLS] through its attention; pytorch-grad-cam's choice for ViTs too). A
    ModifiedResNet -> the last stage whose grid is at least 7×7 (``layer4``, 7×7, at 224 px, as GALS
    reads CLIP RN50; earlier stages at small inputs, whose ``layer4`` is 2×2). A timm trunk -> its last feature stage (``feature_info``).
    """
    if path == "auto":
        if hasattr(visual, "transformer"):
            last = len(visual.transformer.resblocks) - 1
            pool = getattr(visual, "pool_type", "tok")
            path = f"transformer.resblocks.{last}" + ("" if pool == "avg" else ".ln_1")
        elif hasattr(visual, "layer4"):
            path = "layer4"
            for name in ("layer4", "layer3", "layer2", "layer1"):
                shape = _probe_shape(visual, visual.get_submodule(name), image_size)
                path = name
                if min(shape[-2:]) >= MIN_RESNET_GRID:
                    break
        elif getattr(getattr(visual, "trunk", None), "feature_info", None):
            path = "trunk." + visual.trunk.feature_info[-1]["module"]
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


class ClsHead:
    """For a [CLS]-pooled ViT read at its last block's ``ln_1``: the map from the normalised
    tokens to the embedding, evaluated for the [CLS] query only, with the Grad-CAM channel
    weights as the gradient w.r.t. one offset per channel.

    Why: Grad-CAM needs only w_c = mean_n ∂s/∂A_nc, the gradient w.r.t. an offset δ_c added to
    channel c of every patch token, divided by N. With one query the logits are
    (W_k,hᵀ q_h)·y_n (the key bias cancels in the softmax) and the attention output is
    W_v,h Σ_n p_hn y_n + b_v,h, so δ enters as r_h·δ on the patch logits and (Σ_patch p_h)·δ on
    the pooled tokens. Each target score's backward pass then costs a few E×E and H×N×E products
    and never forms a per-token gradient: K + 1 maps cost little more than one. At δ = 0 the
    value equals the tower's own forward (tested), and the weights equal autograd's (tested).
    """

    def __init__(self, visual: nn.Module, layer: SaliencyLayer):
        self.visual, self.layer = visual, layer
        self.block = visual.transformer.resblocks[-1]

    @classmethod
    def build(cls, visual: nn.Module, layer: SaliencyLayer) -> "ClsHead | None":
        """The head when the tower has this form, else None (the generic autograd path is used).

        The leading tokens whose outputs the embedding reads are the queries: [CLS] for CLIP, and
        [CLS, UNC] for a tower that says how it pools them (``embed_prefix``: ProLIP's μ and log σ²).
        """
        blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
        queries = 2 if hasattr(visual, "embed_prefix") else 1
        if (blocks is None or getattr(visual, "pool_type", None) != "tok"
                or getattr(visual, "attn_pool", None) is not None or layer.prefix != queries
                or layer.path != f"transformer.resblocks.{len(blocks) - 1}.ln_1"):
            return None
        attn = getattr(blocks[-1], "attn", None)
        if (not isinstance(attn, nn.MultiheadAttention) or not attn.batch_first
                or not attn._qkv_same_embed_dim or not hasattr(blocks[-1], "ls_1")):
            return None
        return cls(visual, layer)

    def offset(self, acts: torch.Tensor) -> torch.Tensor:
        """The gradient leaf: δ = 0 (B, C), one offset per channel of the (B, N, C) tokens."""
        return acts.new_zeros(acts.shape[0], acts.shape[-1]).requires_grad_(True)

    def channel_weights(self, grads: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        """Grad-CAM's w_c from the offset's gradients (T, B, C): the mean over the N patch tokens."""
        return grads / acts.shape[1]

    def __call__(self, cap: dict[str, torch.Tensor], offset: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(embedding (B, d), log σ² (B, d) or None) from what :func:`capture_as_leaf` stored and the
        offset δ (B, C); every leading token is a query (Q = 1 for CLIP, 2 for ProLIP)."""
        block, attn = self.block, self.block.attn
        y = torch.cat([cap["prefix"], cap["acts"].detach()], dim=1)  # (B, N, E) ln_1 output
        E, H, start = attn.embed_dim, attn.num_heads, self.layer.prefix
        B, dh = len(y), E // H
        w_q, w_k, w_v = attn.in_proj_weight.split(E)
        b_q, _, b_v = attn.in_proj_bias.split(E) if attn.in_proj_bias is not None else (None, None, None)
        q = F.linear(y[:, :start], w_q, b_q).view(B, start, H, dh) * dh**-0.5
        r = torch.einsum("bqhd,hde->bqhe", q, w_k.view(H, dh, E))  # (B, Q, H, E)
        logits = torch.einsum("bqhe,bne->bqhn", r, y)  # (B, Q, H, N)
        # What depends on δ is written as one 2-D product per image (by y_b, r_b) and per head (by W_v,h):
        # the engine's batched backward (vmap over the T score columns) then folds the columns into the
        # rows of an unbatched matrix, where einsum's bmm broadcast y and W_v over the T columns, a copy
        # per column (ViT-B-32, batch 8, K = 32: 1.23x -> 1.16x one map over 60 paired rounds; the same floats).
        # Each is unbound once: a per-index select's backward would build a zero-filled full gradient.
        shift = torch.stack([r_b.reshape(-1, E) @ d_b for r_b, d_b in zip(r, offset.unbind(0))])
        p = torch.cat([logits[..., :start], logits[..., start:] + shift.view(B, start, H, 1)], dim=-1).softmax(-1)
        pooled = torch.stack([p_b.reshape(-1, y.shape[1]) @ y_b for p_b, y_b in zip(p.unbind(0), y)])
        pooled = pooled.view(B, start, H, E) + p[..., start:].sum(-1, keepdim=True) * offset[:, None, None, :]
        o = torch.stack([p_h @ w_h.T for p_h, w_h in zip(pooled.unbind(2), w_v.view(H, dh, E))], dim=2)
        if b_v is not None:
            o = o + b_v.view(H, dh)
        h = cap["prefix_input"] + block.ls_1(attn.out_proj(o.reshape(B, start, E)))
        h = h + block.ls_2(block.mlp(block.ln_2(h)))
        if hasattr(self.visual, "embed_prefix"):
            return self.visual.embed_prefix(h)
        out = self.visual.ln_post(h[:, 0])
        return (out @ self.visual.proj if self.visual.proj is not None else out), None


class PooledHead:
    """For a CNN tower whose Grad-CAM layer is the trunk's last stage, followed only by global average
    pooling and open_clip's projection head (``timm_pool: avg``, as the embedded towers): the
    embedding from the pooled features plus one offset per channel.

    Why: s depends on the layer's A only through mean_hw(A), so ∂s/∂A_chw = ∂s/∂δ_c / HW is the same
    at every position and Grad-CAM's weight is w_c = ∂s/∂δ_c / HW. Each of the K + 1 target scores'
    backward passes then stops at a (B, C) vector instead of broadcasting into (B, C, H, W), and the
    forward pass runs without a graph: K sampled maps cost about one forward pass. At δ = 0 the value
    equals the tower's own forward, and the weights equal autograd's (tested).
    """

    def __init__(self, visual: nn.Module) -> None:
        self.visual = visual

    @classmethod
    def build(cls, visual: nn.Module, layer: SaliencyLayer) -> "PooledHead | None":
        trunk = getattr(visual, "trunk", None)
        pool = getattr(trunk, "global_pool", None)
        info = getattr(trunk, "feature_info", None)
        if (trunk is None or pool is None or not info or layer.layout != "conv"
                or layer.path != "trunk." + info[-1]["module"] or getattr(pool, "pool_type", None) != "avg"
                or not isinstance(getattr(trunk, "fc", None), nn.Identity) or getattr(trunk, "drop_rate", 0.0)
                or hasattr(visual, "embed_prefix") or not hasattr(visual, "head")):
            return None
        names = [n for n, _ in trunk.named_children()]
        if names.index(info[-1]["module"]) != len(names) - 3 or names[-2:] != ["global_pool", "fc"]:
            return None  # something runs between the last stage and the pooling
        return cls(visual)

    def offset(self, acts: torch.Tensor) -> torch.Tensor:
        return acts.new_zeros(acts.shape[0], acts.shape[1]).requires_grad_(True)

    def channel_weights(self, grads: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        return grads / (acts.shape[-2] * acts.shape[-1])

    def __call__(self, cap: dict[str, torch.Tensor], offset: torch.Tensor) -> tuple[torch.Tensor, None]:
        pooled = cap["acts"].detach().mean((-2, -1)) + offset
        return self.visual.head(pooled), None


def saliency_head(visual: nn.Module, layer: SaliencyLayer) -> "ClsHead | PooledHead | None":
    """The head that gives Grad-CAM's weights from a per-channel offset, when the tower has one's form
    (None: the generic autograd path through the layer's activations)."""
    return ClsHead.build(visual, layer) or PooledHead.build(visual, layer)


@contextmanager
def capture_as_leaf(visual: nn.Module, layer: SaliencyLayer):
    """Within the context, the layer's output is rebuilt from detached tensors so that autograd
    graphs start there: its patch grid becomes a leaf that requires grad (``store["acts"]``; for
    token layouts without the leading [CLS]/register tokens, kept apart in ``store["prefix"]``,
    with the layer's input rows for them in ``store["prefix_input"]``).

    Why the prefix is left out: Grad-CAM never reads its gradient, and excluding it spares every
    target score's backward pass the zero-filled full-size tensors that slicing the [CLS] row out
    of the leaf would cost.
    """
    store: dict[str, torch.Tensor] = {}

    def hook(_m, inputs, out):
        if layer.layout == "tokens" and layer.prefix:
            store["prefix"] = out[:, : layer.prefix].detach()
            if inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].shape == out.shape:
                store["prefix_input"] = inputs[0][:, : layer.prefix].detach()
            out = out[:, layer.prefix :]
        store["acts"] = out.detach().requires_grad_(True)
        return layer_output(store)

    handle = visual.get_submodule(layer.path).register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def layer_output(store: dict[str, torch.Tensor]) -> torch.Tensor:
    """The layer's full output rebuilt from what :func:`capture_as_leaf` stored (prefix + leaf)."""
    if "prefix" in store:
        return torch.cat([store["prefix"], store["acts"]], dim=1)
    return store["acts"]


def to_channels_last_grid(t: torch.Tensor, layer: SaliencyLayer) -> torch.Tensor:
    """Leaf activations or gradients (..., leaf) -> (..., H*W, C) over the patch grid."""
    if layer.layout == "tokens":
        return t
    return t.flatten(-2).transpose(-1, -2)


def channel_weights(grads: torch.Tensor, layer: SaliencyLayer) -> torch.Tensor:
    """Grad-CAM weights w_c = mean over the grid of ∂s/∂A_c: (V, B, ...) leaf gradients -> (V, B, C)."""
    return to_channels_last_grid(grads, layer).mean(dim=-2)


def gradcam(acts: torch.Tensor, weights: torch.Tensor, layer: SaliencyLayer) -> torch.Tensor:
    """Grad-CAM: map = ReLU(Σ_c w_c A_c).

    ``acts``: (B, ...) the leaf of :func:`capture_as_leaf`; ``weights``: (V, B, C) for V target
    scores (:func:`channel_weights`). Returns (V, B, H, W) unnormalised maps.
    """
    a = to_channels_last_grid(acts, layer)  # (B, P, C)
    cam = torch.einsum("vbc,bpc->vbp", weights, a).clamp_min(0)
    return cam.reshape(*cam.shape[:2], *layer.grid)


def minmax_normalise(maps: torch.Tensor) -> torch.Tensor:
    """(m − min)/(max − min) over the last two dims, out of place; an all-constant map -> zeros."""
    flat = maps.flatten(-2)
    lo = flat.min(-1, keepdim=True).values
    hi = flat.max(-1, keepdim=True).values
    span = hi - lo
    out = torch.where(span > 0, (flat - lo) / span.clamp_min(1e-12), torch.zeros_like(flat))
    return out.view_as(maps)

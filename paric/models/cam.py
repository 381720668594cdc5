"""The classifier's own Grad-CAM, differentiable so that it can be regularised.

Why not pytorch-grad-cam: the ``gradcam`` regulariser needs the map inside the autograd graph
(``create_graph=True``) and for a whole batch at once; the Grad-CAM formula itself is shared with
the VLM maps (:func:`paric.attention.gradcam.gradcam`).
"""
from __future__ import annotations

from typing import Callable

import torch

from paric.attention.gradcam import SaliencyLayer, channel_weights, gradcam
from paric.models.classifier import Classifier


def forward_with_features(model: Classifier, x: torch.Tensor,
                          forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and the ``cam_layer`` activations (B, C, h, w) of one forward pass.

    ``forward``: the callable to run (e.g. the DDP wrapper of ``model``); default ``model``.
    """
    store: dict[str, torch.Tensor] = {}
    handle = model.features().register_forward_hook(lambda _m, _i, out: store.__setitem__("a", out))
    try:
        logits = (forward or model)(x)
    finally:
        handle.remove()
    return logits, store["a"]


def cam_from(logits: torch.Tensor, acts: torch.Tensor, target: torch.Tensor,
             create_graph: bool) -> torch.Tensor:
    """Grad-CAM (B, h, w) of the ``target`` class logits w.r.t. ``acts``, divided by its max.

    With ``create_graph`` the map is differentiable w.r.t. the model's parameters.
    """
    score = logits.gather(1, target.view(-1, 1)).sum()
    (grads,) = torch.autograd.grad(score, acts, create_graph=create_graph, retain_graph=True)
    layer = SaliencyLayer("cam", "conv", (acts.shape[2], acts.shape[3]))
    cam = gradcam(acts, channel_weights(grads.unsqueeze(0), layer), layer)[0]
    peak = cam.flatten(1).max(1).values.clamp_min(1e-8).view(-1, 1, 1)
    return cam / peak


def classifier_gradcam(model: Classifier, x: torch.Tensor, target: torch.Tensor | None = None,
                       create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, Grad-CAM (B, h, w)) for ``target`` (default: the predicted class)."""
    logits, acts = forward_with_features(model, x)
    if target is None:
        target = logits.argmax(1)
    return logits, cam_from(logits, acts, target, create_graph)

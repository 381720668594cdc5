"""ProLIP's published checkpoints (the authors' open_clip fork, e.g. ``ProLIP-ViT-B-16-DC-1B-12_8B``)
loaded onto this project's towers.

Why a key map rather than the authors' classes: our towers are open_clip 3.x blocks with the same
block layout, so only a few names differ, and the published behaviour that the weights depend on
is a set of tower options (:data:`PUBLISHED_QUIRKS`, see :mod:`paric.vlm.prolip.model`).

Accepted files: ``model.safetensors`` (the hub's format), or a torch file holding the state dict,
optionally under ``state_dict`` and with DDP's ``module.`` prefix (the training checkpoints).
A hub id goes through huggingface_hub (its local cache only, with ``HF_HUB_OFFLINE=1``).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal

import torch

from paric.vlm.factory import VLMLoadError, weights_id
from paric.vlm.prolip.model import ProLIP

#: tower options that reproduce the published forward pass (their weights were trained under it)
PUBLISHED_QUIRKS = {
    "vision_cfg": {"ln_post_twice": True},
    "text_cfg": {"causal": False, "proj_bias": True, "ln_eps": 1e-6},
}

#: (our prefix, published prefix): the only names that differ; everything else maps one to one
_RENAMES = (
    ("visual.unc_head.", "visual.uncertainty_proj."),
    ("text.unc_embedding", "text.unc_emb"),
    ("text.cls_embedding", "text.cls_emb"),
    ("text.unc_head.", "text.text_uncertainty_projection."),
)


def _rename(state: dict[str, torch.Tensor], pairs: tuple[tuple[str, str], ...]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for src, dst in pairs:
            if key.startswith(src):
                key = dst + key[len(src):]
                break
        out[key] = value
    return out


def to_published(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict in the published key layout (for export, and for the loader's tests)."""
    return _rename(state, _RENAMES)


def from_published(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A published state dict in our key layout."""
    return _rename(state, tuple((b, a) for a, b in _RENAMES))


def published_config(cfg: dict, text_unc_from: Literal["unc", "cls"]) -> dict:
    """A model config with the published quirks switched on. The published text log σ² head reads
    the projected [CLS] (embed_dim wide) through a width → embed_dim Linear, so it needs width == embed_dim."""
    cfg = copy.deepcopy(cfg)
    for tower, options in PUBLISHED_QUIRKS.items():
        cfg[tower].update(options)
    cfg["text_cfg"]["unc_from"] = text_unc_from
    if cfg["vision_cfg"].get("kind", "vit") != "vit":
        raise VLMLoadError("ProLIP's published weights are ViTs; a 'cnn' vision config has no published layout")
    if cfg["text_cfg"]["width"] != cfg["embed_dim"]:
        raise VLMLoadError(f"the published text tower needs text width == embed_dim (got "
                           f"{cfg['text_cfg']['width']} vs {cfg['embed_dim']})")
    return cfg


def _resolve(pretrained: str) -> Path:
    """A local file, or a hub id found in the local Hugging Face cache."""
    path = Path(pretrained).expanduser()
    if path.is_file():
        return path
    if path.suffix or "/" not in pretrained or path.exists():
        raise VLMLoadError(f"vlm.pretrained='{pretrained}': no such ProLIP checkpoint file (expected a "
                           ".safetensors or torch file in the published layout, or a hub id)")
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(pretrained, "model.safetensors"))
    except Exception as exc:  # offline or unknown repo: huggingface raises its own error types
        raise VLMLoadError(f"vlm.pretrained='{pretrained}': could not fetch its model.safetensors ({exc}). "
                           "Without network access, download it elsewhere and pass the file's path.") from exc


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a checkpoint file, unwrapped from ``state_dict`` and ``module.``."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise VLMLoadError(f"{path}: not a readable checkpoint: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise VLMLoadError(f"{path}: expected a state dict (name → tensor), got {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_published(name: str, pretrained: str, text_unc_from: Literal["unc", "cls"] = "cls") -> tuple[ProLIP, str]:
    """Build the named config with the published quirks and load a published checkpoint into it
    strictly; returns the model and the file's content id."""
    from paric.vlm.prolip.factory import model_config

    path = _resolve(pretrained)
    cfg = published_config(model_config(name), text_unc_from)
    model = ProLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"])
    state = from_published(read_state(path))
    ours = model.state_dict()
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    if missing or unexpected:
        raise VLMLoadError(f"{path}: not ProLIP '{name}' in the published layout; missing keys {missing[:5]}"
                           f"{' …' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}"
                           f"{' …' if len(unexpected) > 5 else ''}")
    for key, value in state.items():
        if tuple(value.shape) != tuple(ours[key].shape):
            raise VLMLoadError(f"{path}: '{key}' has shape {tuple(value.shape)}, ProLIP '{name}' expects "
                               f"{tuple(ours[key].shape)}")
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model, weights_id(str(path))  # the resolved file's content, a hub id's included

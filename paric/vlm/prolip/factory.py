"""Building and loading ProLIP towers: this project's configs, checkpoints written by the pretraining
here, and the published weights (:mod:`paric.vlm.prolip.published`).

Why beside :mod:`paric.vlm.factory` rather than in it: ProLIP is not an open_clip model, so it has
its own config table; what it returns is the same :class:`~paric.vlm.factory.VLM`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
from open_clip.tokenizer import SimpleTokenizer

from paric.io import sha256_file
from paric.vlm.factory import VLM, VLMLoadError, frozen
from paric.vlm.prolip.model import ProLIP

_CONFIG_DIR = Path(__file__).with_name("configs")
PROLIP_MODELS = frozenset(p.stem for p in _CONFIG_DIR.glob("*.json"))
#: the published ViT-B-16's mean/std (SigLIP's)
SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)


def model_config(name: str, text_unc_from: Literal["unc", "cls"] | None = None) -> dict:
    """A ProLIP config (``configs/<name>.json``), optionally with the text tower's log σ² source set."""
    if name not in PROLIP_MODELS:
        raise VLMLoadError(f"vlm.name: no ProLIP config '{name}' (vlm.family=prolip); known: {sorted(PROLIP_MODELS)}")
    cfg = json.loads((_CONFIG_DIR / f"{name}.json").read_text())
    if text_unc_from is not None:
        cfg["text_cfg"]["unc_from"] = text_unc_from
    return cfg


def build_prolip(name: str, seed: int = 0, text_unc_from: Literal["unc", "cls"] | None = None) -> ProLIP:
    """A randomly initialised ProLIP of the named config (seeded)."""
    cfg = model_config(name, text_unc_from)
    torch.manual_seed(seed)
    return ProLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"])


def tokenizer_for(name: str):
    """The config's tokenizer: open_clip's CLIP BPE at the config's context, or an HF tokenizer
    (``hf:<repo>``, the published model's SigLIP one), which needs the hub or a local copy."""
    cfg = model_config(name)
    spec, ctx = cfg.get("tokenizer", "clip"), cfg["text_cfg"]["context_length"]
    if spec == "clip":
        return SimpleTokenizer(context_length=ctx)
    from open_clip.tokenizer import HFTokenizer

    repo = spec.removeprefix("hf:")
    try:
        return HFTokenizer(repo, context_length=ctx, clean="canonicalize")
    except Exception as exc:  # offline: huggingface raises OSError / its own errors
        raise VLMLoadError(f"ProLIP '{name}': could not load the tokenizer '{repo}': {exc}. Without network "
                           "access, copy the tokenizer files into the HF cache (HF_HOME) first.") from exc


def load_prolip(name: str, pretrained: str | None = None, checkpoint: Path | None = None, seed: int = 0,
                text_unc_from: Literal["unc", "cls"] | None = None) -> VLM:
    """A frozen ProLIP: published weights (``pretrained``: a checkpoint file in the published layout,
    text log σ² from the projected [CLS] unless told otherwise), a checkpoint written by
    :func:`paric.vlm.prolip.pretrain.pretrain_prolip`, or random weights."""
    if pretrained is not None:
        from paric.vlm.prolip.published import load_published

        model, weights = load_published(name, pretrained, text_unc_from or "cls")
        mean, std = SIGLIP_MEAN, SIGLIP_STD
    else:
        model, weights = build_prolip(name, seed, text_unc_from), "random"
        if checkpoint is not None:
            try:
                state = torch.load(checkpoint, map_location="cpu", weights_only=True)
                if state.get("text_unc_from"):
                    model = build_prolip(name, seed, state["text_unc_from"])
                model.load_state_dict(state["model"])
            except Exception as exc:
                raise VLMLoadError(f"{checkpoint}: not a loadable ProLIP checkpoint for '{name}': {exc}") from exc
            weights = f"sha256:{sha256_file(checkpoint)[:16]}"
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        mean, std = OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    return VLM(model=frozen(model), tokenizer=tokenizer_for(name), name=name, weights=weights,
               image_size=int(model.visual.image_size), mean=tuple(mean), std=tuple(std))

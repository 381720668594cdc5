"""Loading open_clip models: published ones by name + weights tag, and this project's tiny configs.

Why: every stage (pretraining, adapters, precompute, the benchmarks) must build the same tower
the same way, and a missing download must fail with an error that says what to do offline.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

from paric.vlm.towers import TIMM_TOWERS  # importing registers the timm towers the configs name
from paric.io import sha256_file

_CONFIG_DIR = Path(__file__).with_name("model_configs")
open_clip.add_model_config(_CONFIG_DIR)

CUSTOM_MODELS = frozenset(p.stem for p in _CONFIG_DIR.glob("*.json"))


class VLMLoadError(RuntimeError):
    """A model could not be built or its weights could not be loaded."""


@dataclass
class VLM:
    """A frozen open_clip model with what is needed to feed it and to name it in provenance."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    weights: str  # weights tag, or "sha256:<hash>" of a local checkpoint, or "random"
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def normalise(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """(B,H,W,3) uint8 -> (B,3,H,W) float normalised with the model's mean/std.

        Images are expected already resized (plain resize, no crop) to ``image_size`` so that
        map pixels line up with the classifier's input.
        """
        return normalise_images(images_uint8, self.mean, self.std)

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Unit-norm text embeddings (T, d)."""
        tokens = self.tokenizer(texts).to(next(self.model.parameters()).device)
        return self.model.encode_text(tokens, normalize=True)


def normalise_images(images_uint8: torch.Tensor, mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD) -> torch.Tensor:
    """(B,H,W,3) uint8 -> (B,3,H,W) float32 normalised per channel."""
    x = images_uint8.permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def weights_id(pretrained: str) -> str:
    """What published weights are, for cache keys: a checkpoint file by its content (replacing the file
    in place changes it), an open_clip tag by name."""
    return f"sha256:{sha256_file(Path(pretrained))[:16]}" if Path(pretrained).expanduser().is_file() else pretrained


def build_model(name: str, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised model of the named architecture (seeded)."""
    if name not in open_clip.list_models():
        raise VLMLoadError(
            f"vlm.name: unknown open_clip model '{name}'; known custom configs: {sorted(CUSTOM_MODELS)} "
            f"(timm towers they use: {', '.join(TIMM_TOWERS)})"
        )
    torch.manual_seed(seed)
    root = logging.getLogger()
    root.addFilter(_random_init_notice)  # random init is what we asked for; weights, if any, load next
    try:
        return open_clip.create_model(name, pretrained=None)
    finally:
        root.removeFilter(_random_init_notice)


def _random_init_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("No pretrained weights loaded for model")


def _image_size(model: torch.nn.Module) -> int:
    size = getattr(model.visual, "image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def frozen(model: torch.nn.Module) -> torch.nn.Module:
    """The model in eval mode with every parameter frozen (how every stage uses a VLM)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_vlm(name: str, pretrained: str | None = None, checkpoint: Path | None = None, seed: int = 0) -> VLM:
    """Build ``name`` and load weights from an open_clip tag/path (``pretrained``) or from a
    checkpoint written by :mod:`paric.vlm.pretrain`; with neither, random weights (a control)."""
    if pretrained is not None:
        try:
            model = open_clip.create_model(name, pretrained=pretrained)
        except Exception as exc:  # open_clip raises RuntimeError/OSError/HF errors when offline
            raise VLMLoadError(
                f"could not load weights '{pretrained}' for open_clip model '{name}': {exc}. "
                "Without network access, download the checkpoint elsewhere and set "
                "vlm.pretrained to its local file path."
            ) from exc
        weights = weights_id(pretrained)
    else:
        model = build_model(name, seed)
        weights = "random"
        if checkpoint is not None:
            try:
                state = torch.load(checkpoint, map_location="cpu", weights_only=True)
                model.load_state_dict(state["model"])
            except Exception as exc:
                raise VLMLoadError(f"{checkpoint}: not a loadable checkpoint for '{name}': {exc}") from exc
            weights = f"sha256:{sha256_file(checkpoint)[:16]}"
    pp = getattr(model.visual, "preprocess_cfg", {}) or {}
    return VLM(
        model=frozen(model),
        tokenizer=open_clip.get_tokenizer(name),
        name=name,
        weights=weights,
        image_size=_image_size(model),
        mean=tuple(pp.get("mean", OPENAI_DATASET_MEAN)),
        std=tuple(pp.get("std", OPENAI_DATASET_STD)),
    )

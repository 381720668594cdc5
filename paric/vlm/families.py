"""VLM families: how a kind of VLM is built, loaded, pretrained here and reported on.

Why a registry: the stages ask ``VLM_FAMILIES[cfg.vlm.family]`` for these five things instead of
branching on the family's name, so a third family (another probabilistic VLM) is one class here
and its own modules. Both families return the same :class:`~paric.vlm.factory.VLM`.
"""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from paric.config import Config, VLMConfig
from paric.registry import Registry
from paric.vlm.factory import VLM


class VLMFamily:
    """The default behaviour is CLIP's; ProLIP overrides what differs."""

    #: a text tower a text-branch regulariser trains prompts through (LICO's CoOp context); ProLIP's
    #: [UNC]-token tower is not one
    prompt_text_tower: ClassVar[bool] = True

    def custom_models(self) -> frozenset[str]:
        """Config names that are pretrained here (the others need published weights)."""
        raise NotImplementedError

    def image_size(self, name: str) -> int:
        raise NotImplementedError

    def load(self, vcfg: VLMConfig, pretrained: str | None, checkpoint: Path | None, seed: int = 0) -> VLM:
        raise NotImplementedError

    def pretrain(self, vcfg: VLMConfig, images: torch.Tensor, captions: list[str], seed: int, out_path: Path,
                 progress: bool) -> dict:
        raise NotImplementedError

    def report(self, vlm: VLM, images: torch.Tensor, label_sets: dict[str, tuple[list[str], np.ndarray]],
               template: str, captions: list[str]) -> dict:
        """What besides CLIP zero-shot accuracy the pretraining report holds (nothing for CLIP)."""
        return {}

    def key_fields(self) -> tuple[str, ...]:
        """Config keys besides ``vlm.name`` / ``vlm.pretrain`` that change what the vlm stage trains."""
        return ()

    def key_inputs(self) -> tuple[str, ...]:
        """What besides the config the pretraining depends on (a loss's form), in the vlm stage's key:
        a corrected loss retrains a cached VLM instead of reusing one trained with the old form."""
        return ()

    def published_key(self, base: str, cfg: Config) -> str:
        """The key of published weights (``<name>:<content id>``): CLIP's as it was before families
        existed, so its cached outputs keep their keys; another family adds its name and options."""
        return base


VLM_FAMILIES: Registry[VLMFamily] = Registry("vlm family")


class ClipFamily(VLMFamily):
    """An open_clip model: published by tag or file, or one of ``paric/vlm/model_configs``."""

    def custom_models(self) -> frozenset[str]:
        from paric.vlm.factory import CUSTOM_MODELS

        return CUSTOM_MODELS

    def image_size(self, name: str) -> int:
        import open_clip

        return int(open_clip.get_model_config(name)["vision_cfg"]["image_size"])

    def load(self, vcfg: VLMConfig, pretrained: str | None, checkpoint: Path | None, seed: int = 0) -> VLM:
        from paric.vlm.factory import load_vlm

        return load_vlm(vcfg.name, pretrained, checkpoint, seed)

    def pretrain(self, vcfg: VLMConfig, images: torch.Tensor, captions: list[str], seed: int, out_path: Path,
                 progress: bool) -> dict:
        from paric.vlm.pretrain import pretrain_clip

        return pretrain_clip(vcfg.name, images, captions, vcfg.pretrain, seed, out_path, progress)


class ProlipFamily(VLMFamily):
    """ProLIP (METHODS.md §4): ``paric/vlm/prolip/configs``, or published weights in their layout."""

    prompt_text_tower = False

    def custom_models(self) -> frozenset[str]:
        from paric.vlm.prolip.factory import PROLIP_MODELS

        return PROLIP_MODELS - {"ViT-B-16"}  # the published layout: loaded, not pretrained here

    def key_inputs(self) -> tuple[str, ...]:
        from paric.vlm.prolip.loss import LOSS_FORM

        return (LOSS_FORM,)

    def image_size(self, name: str) -> int:
        from paric.vlm.prolip.factory import model_config

        return int(model_config(name)["vision_cfg"]["image_size"])

    def load(self, vcfg: VLMConfig, pretrained: str | None, checkpoint: Path | None, seed: int = 0) -> VLM:
        from paric.vlm.prolip.factory import load_prolip

        choice = None if vcfg.prolip.text_unc_from == "auto" else vcfg.prolip.text_unc_from
        return load_prolip(vcfg.name, pretrained, checkpoint, seed, choice)

    def pretrain(self, vcfg: VLMConfig, images: torch.Tensor, captions: list[str], seed: int, out_path: Path,
                 progress: bool) -> dict:
        from paric.vlm.prolip.pretrain import pretrain_prolip

        return pretrain_prolip(vcfg.name, images, captions, vcfg.pretrain, vcfg.prolip, seed, out_path, progress)

    def report(self, vlm: VLM, images: torch.Tensor, label_sets: dict[str, tuple[list[str], np.ndarray]],
               template: str, captions: list[str]) -> dict:
        from paric.vlm.prolip.pretrain import text_uncertainty_report, zero_shot_csd

        out: dict = {f"csd_{name}": zero_shot_csd(vlm, images, y, classes, template)
                     for name, (classes, y) in label_sets.items()}
        out["text_uncertainty"] = text_uncertainty_report(vlm, captions)
        with torch.no_grad():
            var = vlm.model.encode_image_dist(vlm.normalise(images[:256])).var
        out["image_std_per_dim"] = float(var.sqrt().mean())
        return out

    def key_fields(self) -> tuple[str, ...]:
        return ("vlm.family", "vlm.prolip")

    def published_key(self, base: str, cfg: Config) -> str:
        return f"prolip:{base}:{cfg.section_hash('vlm.prolip')}"


VLM_FAMILIES.add("clip", ClipFamily())
VLM_FAMILIES.add("prolip", ProlipFamily())

"""Small CNN image towers for open_clip, registered in timm's model table.

Why: the embedded default needs a tower that learns shape from a few minutes of contrastive
pretraining (ResNets do, the tiny ViTs did not) *and* whose Grad-CAM layer sits right before
the output. With average pooling and a linear projection after the last stage, the gradient of
any score w.r.t. that stage is one E×C product, so K sampled maps cost about one forward pass
(the ModifiedResNet's attention pool needed the last stage at 2×2, so Grad-CAM read two stages
earlier and every sample paid a backward pass through them). ``output_stride=8`` keeps the last
stage at 8×8 at 64 px by dilating the last two stages instead of striding.
open_clip uses these through ``vision_cfg.timm_model_name`` (see ``model_configs/``).
"""
from __future__ import annotations

from timm.models import build_model_with_cfg, register_model
from torch import nn
from timm.models.resnet import BasicBlock, ResNet

TIMM_TOWERS = ("paric_tiny_resnet", "paric_micro_resnet", "paric_tiny_resnet_s4", "paric_micro_resnet_s4")


def _small_resnet(variant: str, pretrained: bool, channels: tuple[int, ...], stem_pool: bool = True,
                  **kwargs) -> ResNet:
    """``stem_pool=False`` drops the stem's max-pool: every stage then runs at twice the resolution
    (output stride 4, the last stage 16×16 at 64 px), which timm's ``output_stride`` (8, 16 or 32)
    cannot express."""
    if pretrained:
        raise ValueError(f"{variant} has no published weights; the pipeline pretrains it")
    kwargs.setdefault("output_stride", 8)
    kwargs["pretrained_cfg"] = kwargs.get("pretrained_cfg") or {"input_size": (3, 64, 64), "num_classes": 0}
    model = build_model_with_cfg(ResNet, variant, pretrained=False, block=BasicBlock, layers=(1,) * len(channels),
                                 channels=channels, stem_width=channels[0], **kwargs)
    if not stem_pool:
        model.maxpool = nn.Identity()
        for info in model.feature_info:
            if info["module"] != "act1":
                info["reduction"] //= 2
    return model


@register_model
def paric_tiny_resnet(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-10 layout (one basic block per stage), channels 32-64-128-128, output stride 8."""
    return _small_resnet("paric_tiny_resnet", pretrained, (32, 64, 128, 128), **kwargs)


@register_model
def paric_micro_resnet(pretrained: bool = False, **kwargs) -> ResNet:
    """The same layout at channels 8-16-16-16, for tests."""
    return _small_resnet("paric_micro_resnet", pretrained, (8, 16, 16, 16), **kwargs)


@register_model
def paric_tiny_resnet_s4(pretrained: bool = False, **kwargs) -> ResNet:
    """``paric_tiny_resnet`` without the stem's max-pool: output stride 4, a 16×16 last stage at 64 px
    (the grid at which a reference map still guides the classifier: the map-quality ladder)."""
    return _small_resnet("paric_tiny_resnet_s4", pretrained, (32, 64, 128, 128), stem_pool=False, **kwargs)


@register_model
def paric_micro_resnet_s4(pretrained: bool = False, **kwargs) -> ResNet:
    """The same at channels 8-16-16-16, for tests."""
    return _small_resnet("paric_micro_resnet_s4", pretrained, (8, 16, 16, 16), stem_pool=False, **kwargs)

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
from timm.models.resnet import BasicBlock, ResNet

TIMM_TOWERS = ("paric_tiny_resnet", "paric_micro_resnet")


def _small_resnet(variant: str, pretrained: bool, channels: tuple[int, ...], **kwargs) -> ResNet:
    if pretrained:
        raise ValueError(f"{variant} has no published weights; the pipeline pretrains it")
    kwargs.setdefault("output_stride", 8)
    kwargs["pretrained_cfg"] = kwargs.get("pretrained_cfg") or {"input_size": (3, 64, 64), "num_classes": 0}
    return build_model_with_cfg(ResNet, variant, pretrained=False, block=BasicBlock, layers=(1,) * len(channels),
                                channels=channels, stem_width=channels[0], **kwargs)


@register_model
def paric_tiny_resnet(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-10 layout (one basic block per stage), channels 32-64-128-128, output stride 8."""
    return _small_resnet("paric_tiny_resnet", pretrained, (32, 64, 128, 128), **kwargs)


@register_model
def paric_micro_resnet(pretrained: bool = False, **kwargs) -> ResNet:
    """The same layout at channels 8-16-16-16, for tests."""
    return _small_resnet("paric_micro_resnet", pretrained, (8, 16, 16, 16), **kwargs)

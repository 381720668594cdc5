"""Attention Branch Network (Fukui et al., CVPR 2019), GALS' attention baseline: the classifier
learns its own attention map and multiplies it into its features, with no language or masks.

Why a classifier of its own: the map is part of the forward pass (the perception branch reads
g'(x) = (1 + M(x)) · g(x)), so evaluation, attacks and Grad-CAM must run the same network; the
attention branch's own classification loss is the ``abn`` regulariser's term.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ResNet
from torchvision.models.resnet import BasicBlock

from paric.models.classifier import Classifier


class AttentionBranch(nn.Module):
    """A residual block on the stage-3 features, then K = n_classes response maps: their average is
    the branch's class logits, and a 1×1 conv + BN + sigmoid of them the attention map M (B, 1, h, w)."""

    def __init__(self, channels: int, n_classes: int) -> None:
        super().__init__()
        self.block = BasicBlock(channels, channels)
        self.bn = nn.BatchNorm2d(channels)
        self.to_k = nn.Conv2d(channels, n_classes, 1, bias=False)
        self.to_logits = nn.Conv2d(n_classes, n_classes, 1, bias=False)
        self.to_map = nn.Sequential(nn.Conv2d(n_classes, 1, 1, bias=False), nn.BatchNorm2d(1), nn.Sigmoid())

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = F.relu(self.to_k(self.bn(self.block(f))))
        return self.to_logits(k).mean((2, 3)), self.to_map(k)


class _Slot:
    """Holds the last forward's attention; a deep copy (a best-epoch model) starts empty."""

    value: tuple[torch.Tensor, torch.Tensor] | None = None

    def __deepcopy__(self, memo: dict) -> "_Slot":
        return _Slot()


class ABNClassifier(Classifier):
    """A ResNet whose ``layer4`` reads the stage-3 features weighted by (1 + M). After each forward,
    :meth:`take_attention` gives the attention branch's logits and map once (so no graph stays on
    the module)."""

    def __init__(self, net: ResNet, n_classes: int, cam_layer: str = "layer4") -> None:
        super().__init__(net, cam_layer)
        self.branch = AttentionBranch(net.layer4[0].conv1.in_channels, n_classes)
        self._attention = _Slot()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        h = n.maxpool(n.relu(n.bn1(n.conv1((x - self.mean) / self.std))))
        h = n.layer3(n.layer2(n.layer1(h)))
        logits, m = self.branch(h)
        self._attention.value = (logits, m)
        h = n.layer4(h * (1 + m))
        return n.fc(torch.flatten(n.avgpool(h), 1))

    def take_attention(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(attention-branch logits (B, C), attention map (B, 1, h, w)) of the last forward."""
        if self._attention.value is None:
            raise RuntimeError("ABNClassifier.take_attention: no forward pass since the last call")
        out, self._attention.value = self._attention.value, None
        return out

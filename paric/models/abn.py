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
    """Fukui et al.'s attention branch (their ResNet code): a stage of ``layer4``'s blocks at stride 1 on
    the stage-3 features, BN, a 1×1 conv to K = n_classes maps, BN + ReLU; the attention map is a 3×3
    conv to one channel, BN and a sigmoid; the branch's logits a 1×1 conv and global average pooling.
    (Until issue 28: one BasicBlock at stage-3 width, no BN before the ReLU, a 1×1 map conv.)"""

    def __init__(self, block: type[nn.Module], in_channels: int, planes: int, n_blocks: int, n_classes: int) -> None:
        super().__init__()
        out = planes * block.expansion
        down = None if in_channels == out else nn.Sequential(nn.Conv2d(in_channels, out, 1, bias=False),
                                                           nn.BatchNorm2d(out))
        self.att_layer = nn.Sequential(block(in_channels, planes, downsample=down),
                                       *[block(out, planes) for _ in range(n_blocks - 1)])
        self.bn_att = nn.BatchNorm2d(out)
        self.att_conv = nn.Conv2d(out, n_classes, 1, bias=False)
        self.bn_att2 = nn.BatchNorm2d(n_classes)
        self.att_conv2 = nn.Conv2d(n_classes, n_classes, 1, bias=False)
        self.att_conv3 = nn.Conv2d(n_classes, 1, 3, padding=1, bias=False)
        self.bn_att3 = nn.BatchNorm2d(1)

    @classmethod
    def for_resnet(cls, net: ResNet, n_classes: int) -> "AttentionBranch":
        """The branch for ``net``: its ``layer4`` block type, input width, planes and depth."""
        first = net.layer4[0]
        planes = first.conv1.out_channels if isinstance(first, BasicBlock) else first.conv3.out_channels // 4
        return cls(type(first), first.conv1.in_channels, planes, len(net.layer4), n_classes)

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.bn_att(self.att_layer(f))
        k = F.relu(self.bn_att2(self.att_conv(a)))
        return self.att_conv2(k).mean((2, 3)), torch.sigmoid(self.bn_att3(self.att_conv3(k)))


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
        self.branch = AttentionBranch.for_resnet(net, n_classes)
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

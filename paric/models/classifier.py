"""Classifiers: torchvision ResNet-50/18 (as GALS) and a small ResNet for the embedded benchmark.

Why a wrapper: every model takes images in [0, 1] and normalises inside, so input gradients
(``gradient_outside``), adversarial attacks (FGSM/PGD) and flips all work in pixel space; and
every model names the stage whose output its Grad-CAM reads (``cam_layer``).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchvision.models import ResNet, resnet18, resnet50
from torchvision.models.resnet import BasicBlock

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ClassifierLoadError(RuntimeError):
    """Pretrained classifier weights were asked for but cannot be had."""


class Classifier(nn.Module):
    """Normalise → ResNet. ``cam_layer`` is the attribute name of the stage Grad-CAM reads."""

    def __init__(self, net: ResNet, cam_layer: str = "layer4") -> None:
        super().__init__()
        self.net = net
        self.cam_layer = cam_layer
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def head(self) -> nn.Linear:
        return self.net.fc

    def features(self) -> nn.Module:
        return getattr(self.net, self.cam_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def _small_resnet(num_classes: int, width: int) -> ResNet:
    """A 4-stage BasicBlock ResNet for 32–96 px inputs: 3×3 stride-2 stem, no max-pool, strides
    1/2/2/1, so an s px input gives an s/8 grid at ``layer4`` (64 px: 8×8, the VLM maps' grid)."""
    net = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=num_classes, width_per_group=64)
    widths = [width, width * 2, width * 4, width * 8]
    net.inplanes = widths[0]
    net.conv1 = nn.Conv2d(3, widths[0], 3, stride=2, padding=1, bias=False)
    net.bn1 = nn.BatchNorm2d(widths[0])
    net.maxpool = nn.Identity()
    net.layer1 = net._make_layer(BasicBlock, widths[0], 1, stride=1)
    net.layer2 = net._make_layer(BasicBlock, widths[1], 1, stride=2)
    net.layer3 = net._make_layer(BasicBlock, widths[2], 1, stride=2)
    net.layer4 = net._make_layer(BasicBlock, widths[3], 1, stride=1)
    net.fc = nn.Linear(widths[3], num_classes)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return net


def build_classifier(arch: str, num_classes: int, weights: str = "none", width: int = 32,
                     seed: int = 0, architecture: str = "plain") -> Classifier:
    """Build a classifier; ``weights='imagenet'`` loads torchvision's weights (a clear error when
    they cannot be fetched). Other inits ('none', 'corpus') start random; the caller loads a
    corpus-pretrained backbone afterwards."""
    torch.manual_seed(seed)
    if arch == "small_resnet":
        if weights == "imagenet":
            raise ClassifierLoadError("classifier.weights: 'imagenet' needs arch resnet18 or resnet50")
        return _wrap(_small_resnet(num_classes, width), num_classes, architecture)
    builders = {"resnet18": (resnet18, "ResNet18_Weights"), "resnet50": (resnet50, "ResNet50_Weights")}
    if arch not in builders:
        raise ValueError(f"classifier.arch: unknown '{arch}', expected small_resnet, resnet18 or resnet50")
    fn, enum_name = builders[arch]
    net = fn(weights=None)
    if weights == "imagenet":
        import torchvision.models as tvm

        tag = getattr(tvm, enum_name).IMAGENET1K_V1
        try:
            net.load_state_dict(tag.get_state_dict(progress=False))
        except Exception as exc:  # noqa: BLE001 - urllib/hub raise many types; all mean "no weights"
            raise ClassifierLoadError(
                f"classifier.weights=imagenet: cannot fetch {arch} weights ({tag.url}): {exc}. "
                "Pre-download them into the torch hub cache (TORCH_HOME) or set classifier.weights=none."
            ) from exc
    net.fc = nn.Linear(net.fc.in_features, num_classes)
    return _wrap(net, num_classes, architecture)


def _abn(net: ResNet, num_classes: int) -> Classifier:
    from paric.models.abn import ABNClassifier

    return ABNClassifier(net, num_classes)


#: how a ResNet becomes the classifier: ``plain`` as it is; ``abn`` with an attention branch (:mod:`paric.models.abn`)
ARCHITECTURES: dict[str, Callable[[ResNet, int], Classifier]] = {"plain": lambda net, _: Classifier(net), "abn": _abn}


def _wrap(net: ResNet, num_classes: int, architecture: str) -> Classifier:
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown classifier architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[architecture](net, num_classes)


def classifier_for_state(arch: str, num_classes: int, width: int, state: dict) -> Classifier:
    """A classifier whose architecture fits a saved state dict (ABN's has an attention branch), loaded."""
    architecture = "abn" if any(k.startswith("branch.") for k in state) else "plain"
    model = build_classifier(arch, num_classes, "none", width, architecture=architecture)
    model.load_state_dict(state)
    return model

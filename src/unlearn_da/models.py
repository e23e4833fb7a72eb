"""Classifiers that expose ``features(x)`` (penultimate layer) and ``head(z)``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Classifier(nn.Module):
    """``forward(x) = head(features(x))``; subclasses define both halves."""

    feature_dim: int

    def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def head(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class GlobalMeanPool(nn.Module):
    """Mean over height and width: (N, C, H, W) -> (N, C).

    Replaces ``AdaptiveAvgPool2d(1)`` + ``Flatten`` (same outputs, no parameters, so the same
    state_dict): CUDA has no deterministic backward for adaptive average pooling, while a mean's
    backward is a broadcast division.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def _block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class SmallCNN(Classifier):
    """Three conv-BN-ReLU blocks, global average pooling, a linear head.

    Pooling adapts to the input size: 8x8 -> 8 -> 4, 28x28 -> 14 -> 7, 32x32 -> 16 -> 8.
    The feature dimension is ``4 * width``.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int, width: int = 32):
        super().__init__()
        layers: list[nn.Module] = _block(in_channels, width)
        if image_size >= 16:
            layers.append(nn.MaxPool2d(2))
        layers += _block(width, 2 * width)
        if image_size >= 8:
            layers.append(nn.MaxPool2d(2))
        layers += _block(2 * width, 4 * width)
        layers.append(GlobalMeanPool())
        self.body = nn.Sequential(*layers)
        self.feature_dim = 4 * width
        self.fc = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ResNet18(Classifier):
    """torchvision's ResNet-18 with the CIFAR stem (3x3 conv, stride 1, no max-pool); 512-d features."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        from torchvision.models import resnet18

        net = resnet18(weights=None, num_classes=num_classes)
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu)
        self.layers = nn.Sequential(net.layer1, net.layer2, net.layer3, net.layer4)
        self.pool = GlobalMeanPool()
        self.feature_dim = 512
        self.fc = net.fc

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.layers(self.stem(x)))


def model_spec(arch: str, num_classes: int, in_channels: int, image_size: int, width: int) -> dict[str, Any]:
    """Everything needed to rebuild a model; stored in every checkpoint sidecar."""
    return {
        "arch": arch,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "image_size": image_size,
        "width": width,
    }


def build_model(spec: dict[str, Any]) -> Classifier:
    arch = spec["arch"]
    if arch == "smallcnn":
        return SmallCNN(spec["in_channels"], spec["num_classes"], spec["image_size"], spec["width"])
    if arch == "resnet18":
        return ResNet18(spec["in_channels"], spec["num_classes"])
    raise ValueError(f"unknown arch '{arch}'; allowed: smallcnn, resnet18")

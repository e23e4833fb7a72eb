"""Classifiers that expose ``features(x)`` (penultimate layer) and ``head(z)``, and count the
images every model of the process sees (``images_counted``): the jobs record them in their sidecars."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

IMAGE_KINDS = ("forward_backward", "forward_only")

# images through every Classifier of this process, by kind; a job records the difference of two
# snapshots (``images_counted`` before, ``images_since`` after), so jobs run in one process stay apart
_IMAGES = dict.fromkeys(IMAGE_KINDS, 0)


def images_counted() -> dict[str, int]:
    """A snapshot of the process's image counts (``forward_backward``, ``forward_only``)."""
    return dict(_IMAGES)


def images_since(start: dict[str, int]) -> dict[str, int]:
    """Images counted since the snapshot ``start``: what one job pushed through its models."""
    return {kind: _IMAGES[kind] - start[kind] for kind in IMAGE_KINDS}


def count_images(model: nn.Module, x: torch.Tensor) -> None:
    """Add the batch ``x`` to the count of its kind.

    ``forward_backward`` when the pass records an autograd graph a backward can follow: grad mode on
    and a parameter of the model or the input requiring grad (training steps, DA pairs, SSD's and
    SalUn's gradients, the FGSM step's input gradient through the frozen original). Everything else
    is ``forward_only``: passes under ``no_grad`` (probes, features, teachers) and frozen teachers
    called in grad mode (SCRUB's), which record nothing. Reads Python attributes only (the batch
    size, ``requires_grad``): no host synchronisation, no computed number changes.
    """
    graph = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in model.parameters()))
    _IMAGES["forward_backward" if graph else "forward_only"] += int(x.shape[0])


class Classifier(nn.Module):
    """``forward(x) = head(features(x))``; subclasses define ``_features`` (the body) and ``fc``.

    Images are counted at the two entries every pass takes: ``model(x)`` and ``model.features(x)``
    (``predict``, MUDA, NegGrad+ and the DA term call the halves). ``forward`` runs the uncounted
    ``_features``, so a full pass counts once. The count sits in ``__call__``, outside ``forward``:
    ``model.compile()`` compiles ``_call_impl`` (hence ``forward``) only, so counting stays plain
    Python that Dynamo never traces (a Python counter inside the compiled region would be a guard
    that fails on every call, i.e. a recompile, or a graph break that can change fusion).
    ``features`` is never compiled (a direct method call), so it counts eagerly as well.
    """

    feature_dim: int

    def __call__(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        count_images(self, x)
        return super().__call__(x, *args, **kwargs)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        count_images(self, x)
        return self._features(x)

    def _features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def head(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self._features(x))


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

    def _features(self, x: torch.Tensor) -> torch.Tensor:
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

    def _features(self, x: torch.Tensor) -> torch.Tensor:
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

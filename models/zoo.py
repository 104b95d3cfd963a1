"""torchvision's ImageNet models, randomly initialised (weights are never downloaded)."""

from __future__ import annotations

from collections.abc import Callable

import torchvision
from torch import nn

from models.registry import register

IMAGENET_INPUT = (3, 224, 224)


def _replace_stem(model: nn.Module, in_channels: int) -> nn.Module:
    """Give the model's first convolution ``in_channels`` inputs, keeping its geometry."""
    name, stem = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    if stem.in_channels != in_channels:
        parent_name, _, child_name = name.rpartition(".")
        replacement = nn.Conv2d(
            in_channels,
            stem.out_channels,
            kernel_size=stem.kernel_size,
            stride=stem.stride,
            padding=stem.padding,
            dilation=stem.dilation,
            bias=stem.bias is not None,
        )
        setattr(model.get_submodule(parent_name), child_name, replacement)
    return model


def _torchvision(name: str) -> Callable[..., nn.Module]:
    constructor = getattr(torchvision.models, name)

    def builder(in_channels: int = 3, num_classes: int = 1000) -> nn.Module:
        model = constructor(weights=None, num_classes=num_classes)
        return _replace_stem(model, in_channels)

    builder.__doc__ = f"torchvision {name}, random weights: input (N, C, 224, 224), output (N, num_classes)."
    return builder


for _name in ("resnet18", "resnet34", "resnet50", "vgg16", "alexnet", "mobilenet_v2"):
    register(_name, input_shape=IMAGENET_INPUT, num_classes=1000, family="torchvision")(_torchvision(_name))

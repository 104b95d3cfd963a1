"""torchvision's ImageNet models, randomly initialised (weights are never downloaded)."""

from __future__ import annotations

from collections.abc import Callable

import torchvision
from torch import nn

from models.registry import register

IMAGENET_INPUT = (3, 224, 224)
#: Models whose training-mode output is a tuple with auxiliary logits unless told otherwise,
#: and whose scipy truncated-normal initialisation takes seconds (no measurement needs it).
_AUXILIARY_LOGITS = ("googlenet", "inception_v3")


def replace_stem(model: nn.Module, in_channels: int) -> nn.Module:
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


def torchvision_builder(name: str) -> Callable[..., nn.Module]:
    """A builder for torchvision's classification model ``name`` with random weights: the stem
    convolution is replaced when ``in_channels`` is not 3, other keyword arguments go to
    torchvision's constructor, and auxiliary classifiers are off (cross-entropy needs logits)."""

    def builder(in_channels: int = 3, num_classes: int = 1000, **kwargs: object) -> nn.Module:
        if name in _AUXILIARY_LOGITS:
            kwargs.setdefault("aux_logits", False)
            kwargs.setdefault("init_weights", False)
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
        return replace_stem(model, in_channels)

    builder.__doc__ = f"torchvision {name}, random weights: output (N, num_classes)."
    return builder


for _name in ("resnet18", "resnet34", "resnet50", "vgg16", "alexnet", "mobilenet_v2"):
    register(_name, input_shape=IMAGENET_INPUT, num_classes=1000, family="torchvision")(torchvision_builder(_name))

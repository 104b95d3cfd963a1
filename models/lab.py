"""The course lab's networks for 28x28 MNIST-like images."""

from __future__ import annotations

from torch import nn

from models.registry import register


@register("mlp", input_shape=(1, 28, 28), num_classes=10, family="lab")
def mlp(in_channels: int = 1, num_classes: int = 10) -> nn.Sequential:
    """Flatten, four hidden layers of 256 units with ReLU, then the classifier.

    Input (N, in_channels, 28, 28); output (N, num_classes).
    """
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_channels * 28 * 28
    for _ in range(4):
        layers += [nn.Linear(width, 256), nn.ReLU(inplace=True)]
        width = 256
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


@register("cnn", input_shape=(1, 28, 28), num_classes=10, family="lab")
def cnn(in_channels: int = 1, num_classes: int = 10) -> nn.Sequential:
    """Four 5x5 convolutions (two of stride 2), global average pooling, a 1x1 classifier.

    Input (N, in_channels, H, W) for any H, W >= 1; 28x28 gives maps of 28, 14, 14, 7;
    output (N, num_classes).
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.Conv2d(32, 64, kernel_size=5, stride=2, padding=2),
        nn.ReLU(inplace=True),
        nn.Conv2d(64, 64, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.Conv2d(64, 128, kernel_size=5, stride=2, padding=2),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Conv2d(128, num_classes, kernel_size=1),
        nn.Flatten(),
    )

"""CIFAR ResNets and their plain (no-shortcut) twins, after He et al. 2016, section 4.2.

Depth 6n + 2: a 3x3 stem, three stages of n two-convolution blocks at widths w, 2w, 4w
(w = 16 by default) on 32x32, 16x16 and 8x8 maps, global average pooling and a linear
classifier. A block gets a projection shortcut (1x1 convolution + BatchNorm) only where
it changes the stride or the width; everywhere else the shortcut is the identity.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from models.registry import register


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (BatchNorm follows)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut when ``residual``, then ReLU.

    Input (N, in_planes, H, W); output (N, planes, H / stride, W / stride).
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, residual: bool = True) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.residual = residual
        self.shortcut: nn.Sequential | None = None
        if residual and (stride != 1 or in_planes != planes):
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + (x if self.shortcut is None else self.shortcut(x))
        return self.relu(out)


class CifarResNet(nn.Module):
    """Stem, three stages of ``blocks_per_stage`` BasicBlocks, pooling, classifier.

    Input (N, in_channels, 32, 32) (any size divisible by 4 works); output (N, num_classes).
    """

    def __init__(
        self,
        blocks_per_stage: int,
        residual: bool = True,
        in_channels: int = 3,
        num_classes: int = 10,
        width: int = 16,
    ) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be a positive integer, got {width}")
        self.conv1 = conv3x3(in_channels, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        stages = []
        in_planes = width
        for stage, planes in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(in_planes, planes, stride, residual))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


def _cifar(depth: int, residual: bool) -> Callable[..., CifarResNet]:
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n + 2, got {depth}")

    def builder(in_channels: int = 3, num_classes: int = 10, width: int = 16) -> CifarResNet:
        return CifarResNet((depth - 2) // 6, residual, in_channels, num_classes, width)

    kind = "ResNet" if residual else "plain net"
    builder.__doc__ = f"CIFAR {kind} of depth {depth}: input (N, C, 32, 32), output (N, num_classes)."
    return builder


for _depth in (20, 32, 44, 56, 110):
    register(f"resnet{_depth}", input_shape=(3, 32, 32), num_classes=10, family="cifar-resnet")(
        _cifar(_depth, residual=True)
    )
for _depth in (20, 32, 44, 56):
    register(f"plain{_depth}", input_shape=(3, 32, 32), num_classes=10, family="cifar-plain")(
        _cifar(_depth, residual=False)
    )

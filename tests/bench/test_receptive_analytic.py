"""Analytic receptive fields against hand derivations and published values.

Expected values are derived in this file from the architectures' definitions with the
lab's forward recurrence (size += (K_eff - 1) * jump, start -= P * jump, jump *= S),
written out by hand, or taken from Araujo et al. (Distill 2019); never from the code
under test.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import models
from bench.receptive import (
    InputTooSmallError,
    NoSpatialLayerError,
    ReceptiveFieldError,
    UnknownLayerError,
    UnsupportedOperationError,
    analyse,
)


def chain(layers, size=1, jump=1, start=0):
    """The lab's forward recurrence over (kernel, stride, padding[, dilation]) layers."""
    for layer in layers:
        kernel, stride, padding, dilation = (*layer, 1) if len(layer) == 3 else layer
        size += dilation * (kernel - 1) * jump
        start -= padding * jump
        jump *= stride
    return size, jump, start


def field(analysis, name):
    """(size, jump, start) of a square layer, checking both axes agree."""
    layer = analysis.layer(name)
    h, w = ((a.size, a.jump, a.start) for a in layer.axes)
    assert h == w
    return h


def natural(name):
    with torch.device("meta"):
        return analyse(models.build(name), models.spec(name).input_shape)


def test_lab_cnn_by_hand():
    analysis = natural("cnn")
    conv5 = (5, 1, 2)
    assert field(analysis, "0") == (5, 1, -2)
    assert field(analysis, "2") == chain([conv5, (5, 2, 2)]) == (9, 2, -4)
    assert field(analysis, "4") == (17, 2, -8)
    assert field(analysis, "6") == (25, 4, -12)  # closed form: 1 + 4*1 + 4*1 + 4*2 + 4*2
    # Global average pooling and the 1x1 classifier after it see the whole 28x28 input.
    for name in ("8", "9"):
        layer = analysis.layer(name)
        assert layer.rf == layer.jump == layer.start == "global"
        assert layer.boxes((0, 0)) == ((0, 27), (0, 27))


def cifar_main_path(n):
    """(name, kernel, stride, padding) along the residual branch of a 6n+2 CIFAR ResNet."""
    path = [("conv1", 3, 1, 1)]
    for stage in (1, 2, 3):
        for block in range(n):
            stride = 2 if stage > 1 and block == 0 else 1
            path += [(f"layer{stage}.{block}.conv1", 3, stride, 1), (f"layer{stage}.{block}.conv2", 3, 1, 1)]
    return path


@pytest.mark.parametrize("name,n", [("resnet20", 3), ("resnet32", 5), ("resnet56", 9), ("plain20", 3)])
def test_cifar_nets_every_convolution_by_hand(name, n):
    analysis = natural(name)
    path = cifar_main_path(n)
    for i, (layer, *_) in enumerate(path):
        assert field(analysis, layer) == chain([g for _, *g in path[: i + 1]]), layer
    # Hand-derived closed form for the last convolution: 1 + 2 (stem) + 4n (stage 1, jump 1)
    # + 2 + 4(2n - 1) (stage 2: the strided conv at jump 1, then jump 2) + 4 + 8(2n - 1)
    # (stage 3) = 28n - 3, centred on pixel 4i, so start = -(28n - 4) / 2.
    last = f"layer3.{n - 1}.conv2"
    assert field(analysis, last) == (28 * n - 3, 4, -(14 * n - 2))


def test_cifar_projection_shortcuts_sit_beside_the_blocks_not_after_them():
    analysis = natural("resnet20")
    # layer2.0's shortcut is a 1x1/2 conv on layer1's output (field 15, jump 1, start -7).
    assert field(analysis, "layer1.2.conv2") == (15, 1, -7)
    assert field(analysis, "layer2.0.shortcut.0") == (15, 2, -7)
    assert field(analysis, "layer3.0.shortcut.0") == (37, 4, -18)
    assert field(analysis, "layer3.2.conv2") == (81, 4, -40)
    assert analysis.notes == []  # both paths of every block share a centre


@pytest.mark.parametrize("name", ["resnet110"])
def test_resnet110_last_convolution(name):
    assert field(natural(name), "layer3.17.conv2") == (28 * 18 - 3, 4, -(14 * 18 - 2)) == (501, 4, -250)


STEM = [(7, 2, 3), (3, 2, 1)]  # torchvision ResNets: 7x7/2 convolution, 3x3/2 max-pool


def test_resnet18_and_34_stage_by_stage():
    # Each basic block is two 3x3 convolutions; the first of stages 2-4 has stride 2.
    def stages(blocks):
        layers, ends = list(STEM), []
        for stage, count in enumerate(blocks):
            for block in range(count):
                layers += [(3, 2 if stage and not block else 1, 1), (3, 1, 1)]
            ends.append(chain(layers))
        return ends

    r18, r34 = natural("resnet18"), natural("resnet34")
    assert field(r18, "conv1") == (7, 2, -3)
    assert field(r18, "maxpool") == (11, 4, -5)
    expected18 = stages([2, 2, 2, 2])
    assert [size for size, _, _ in expected18] == [43, 99, 211, 435]
    for stage, expected in enumerate(expected18, start=1):
        assert field(r18, f"layer{stage}.1.conv2") == expected
    assert field(r18, "layer4.1.conv2") == (435, 32, -217)
    expected34 = stages([3, 4, 6, 3])
    assert [size for size, _, _ in expected34] == [59, 179, 547, 899]
    for stage, (count, expected) in enumerate(zip([3, 4, 6, 3], expected34, strict=True), start=1):
        assert field(r34, f"layer{stage}.{count - 1}.conv2") == expected


def test_resnet50_torchvision_puts_the_stride_in_the_first_block():
    # torchvision's Bottleneck strides its 3x3 convolution in the FIRST block of stages 2-4,
    # at the previous stage's jump; TF-slim's resnet_v1_50 (Distill: 483) strides the LAST
    # unit of stages 1-3 and leaves stage 4 unstrided, so one more 3x3 per stage runs at
    # the larger jump. Counting 3x3 convolutions per jump, torchvision has 4 at jump 4,
    # 4 at 8, 6 at 16 and 2 at 32: 1 + 6 + 4 + 4*8 + 4*16 + 6*32 + 2*64 = 427 (slim: 3, 4,
    # 6, 3 of them, giving 483). 1x1 convolutions add nothing.
    layers = list(STEM)
    ends = []
    for stage, count in enumerate([3, 4, 6, 3]):
        for block in range(count):
            layers += [(1, 1, 0), (3, 2 if stage and not block else 1, 1), (1, 1, 0)]
        ends.append(chain(layers))
    analysis = natural("resnet50")
    assert [size for size, _, _ in ends] == [35, 91, 267, 427]
    for stage, (count, expected) in enumerate(zip([3, 4, 6, 3], ends, strict=True), start=1):
        assert field(analysis, f"layer{stage}.{count - 1}.conv3") == expected
    assert field(analysis, "layer4.2.conv3") == (427, 32, -213)
    assert field(analysis, "layer2.0.downsample.0") == (35, 8, -17)  # 1x1/2 on layer1's output


def test_vgg16_matches_distill_at_pool5():
    # vgg_16 (Distill): r = 212, effective stride 32, effective padding 90, at pool5.
    # conv5_3, the last convolution, is one 2x2 pool earlier: 212 - 16 = 196.
    analysis = natural("vgg16")
    assert field(analysis, "features.28") == (196, 16, -90)
    assert field(analysis, "features.30") == (212, 32, -90)
    # At 224 the features are 7x7, so AdaptiveAvgPool2d(7) is the identity.
    avgpool = analysis.layer("avgpool")
    assert (avgpool.kernel, avgpool.rf) == ([1, 1], [212, 212])
    assert analysis.layer("classifier.0").rf == "global"


def test_alexnet_matches_distill_at_pool5():
    # alexnet_v2 (Distill): r = 195 at pool5. torchvision pads conv1 by 2 where slim uses
    # VALID padding, so the start differs; the size does not.
    analysis = natural("alexnet")
    layers = [(11, 4, 2), (3, 2, 0), (5, 1, 2), (3, 2, 0), (3, 1, 1), (3, 1, 1), (3, 1, 1), (3, 2, 0)]
    assert chain(layers) == (195, 32, -66)
    assert field(analysis, "features.10") == chain(layers[:-1]) == (163, 16, -66)
    assert field(analysis, "features.12") == (195, 32, -66)


def test_mobilenet_v2_by_hand():
    # A 3x3/2 stem, then inverted residuals whose only spatial layer is a depthwise 3x3, with
    # (repeats, stride) per group (1,1) (2,2) (3,2) (4,2) (3,1) (3,2) (1,1), then a 1x1 conv.
    layers = [(3, 2, 1)]
    for repeats, stride in [(1, 1), (2, 2), (3, 2), (4, 2), (3, 1), (3, 2), (1, 1)]:
        layers += [(3, stride, 1)] + [(3, 1, 1)] * (repeats - 1)
    analysis = natural("mobilenet_v2")
    assert chain(layers) == (491, 32, -245)
    assert field(analysis, "features.18.0") == (491, 32, -245)
    assert field(analysis, "features.17.conv.1.0") == (491, 32, -245)  # the last depthwise 3x3


def naive_chain(model):
    """The classic mistake: every convolution and pooling in named_modules() order, one after
    another, as if the network were a single path (so ResNets' 1x1 shortcuts get chained in)."""
    size, jump = 1, 1
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d)):
            kernel = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
            stride = module.stride if isinstance(module.stride, int) else module.stride[0]
            size += (kernel - 1) * jump
            jump *= stride
    return size, jump


def test_the_chaining_mistake_would_fail_these_tests():
    with torch.device("meta"):
        model = models.build("resnet18")
    naive_size, naive_jump = naive_chain(model)
    analysis = analyse(model, (3, 224, 224))
    size, jump, _ = field(analysis, "layer4.1.conv2")
    assert (size, jump) == (435, 32)
    # Chaining the three 1x1/2 downsampling convolutions multiplies every later jump by 8.
    assert naive_jump == 8 * jump
    assert naive_size > 3 * size


class Misaligned(nn.Module):
    """Two branches merged by addition: a centred 3x3, and a 2x2 after one pixel of padding
    before the input (so it covers [i - 1, i]: its centre is half a pixel left)."""

    def __init__(self) -> None:
        super().__init__()
        self.centred = nn.Conv2d(1, 1, 3, padding=1)
        self.shifted = nn.Conv2d(1, 1, 2)
        self.after = nn.Conv2d(1, 1, 1)

    def forward(self, x):
        return self.after(self.centred(x) + self.shifted(F.pad(x, (1, 0, 1, 0))))


def test_misaligned_merge_is_reported_and_takes_the_union():
    analysis = analyse(Misaligned(), (1, 16, 16))
    assert field(analysis, "centred") == (3, 1, -1)
    assert field(analysis, "shifted") == (2, 1, -1)
    assert field(analysis, "after") == (3, 1, -1)  # union of [i-1, i+1] and [i-1, i]
    assert any(axis.misaligned for axis in analysis.layer("after").axes)
    assert len(analysis.notes) == 2 and "misaligned" in analysis.notes[0]


def test_resnet_merges_are_aligned():
    analysis = natural("resnet50")
    assert analysis.notes == []
    assert not any(axis.misaligned for layer in analysis.layers for axis in layer.axes)


def test_dilation_and_asymmetric_kernels_and_strides():
    model = nn.Sequential(
        nn.Conv2d(1, 1, (3, 5), stride=(1, 2), padding=(1, 2), dilation=(2, 1)),
        nn.MaxPool2d((2, 3), stride=(2, 1), padding=(1, 1)),
    )
    analysis = analyse(model, (1, 40, 40))
    conv, pool = analysis.layer("0"), analysis.layer("1")
    assert conv.rf == [5, 5] and conv.jump == [1, 2] and conv.start == [-1, -2]
    assert (conv.kernel, conv.stride, conv.padding, conv.dilation) == ([3, 5], [1, 2], [1, 2], [2, 1])
    assert pool.rf == [chain([(3, 1, 1, 2), (2, 2, 1)])[0], chain([(5, 2, 2), (3, 1, 1)])[0]] == [6, 9]
    assert pool.jump == [2, 2] and pool.start == [-2, -4]


class Functional(nn.Module):
    """Functional calls only: two branches concatenated, a dilated max-pool, global pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.small = nn.Conv2d(3, 4, 3, padding=1)
        self.large = nn.Conv2d(3, 4, 5, padding=2)
        self.mix = nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        x = torch.cat([F.relu(self.small(x)), F.relu(self.large(x))], dim=1)
        x = F.max_pool2d(self.mix(x), 3, stride=2, padding=1, dilation=2)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def test_functional_operations_are_followed():
    analysis = analyse(Functional(), (3, 32, 32))
    assert field(analysis, "mix") == (5, 1, -2)  # union of the 3x3 and 5x5 branches
    assert analysis.layer("head").rf == "global"
    # The functional max-pool has no module: it shows in the fields downstream only.
    assert [layer.name for layer in analysis.layers] == ["small", "large", "mix", "head"]


def test_functional_dilated_pool_then_convolution():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3)

        def forward(self, x):
            return self.conv(F.max_pool2d(x, 3, stride=2, padding=1, dilation=2))

    assert field(analyse(Net(), (1, 32, 32)), "conv") == chain([(3, 2, 1, 2), (3, 1, 0)]) == (9, 2, -1)


def test_adaptive_pooling_regular_irregular_and_global():
    analysis = analyse(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.AdaptiveAvgPool2d(7)), (1, 14, 14))
    pooled = analysis.layer("1")
    assert pooled.kernel == [2, 2] and pooled.rf == [4, 4] and pooled.jump == [2, 2]
    # 6 -> 4 bins: [0, 2), [1, 3), [3, 5), [4, 6) (floor(i*6/4) to ceil((i+1)*6/4)).
    analysis = analyse(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.AdaptiveMaxPool2d(4)), (1, 6, 6))
    pooled = analysis.layer("1")
    assert pooled.rf == "irregular" and pooled.kernel == "irregular"
    assert [pooled.axes[0].box(i) for i in range(4)] == [(0, 2), (0, 3), (2, 5), (3, 5)]
    analysis = analyse(nn.Sequential(nn.Conv2d(1, 1, 3), nn.AdaptiveAvgPool2d(1)), (1, 10, 10))
    assert analysis.layer("1").rf == "global"
    assert analysis.layer("1").boxes((0, 0)) == ((0, 9), (0, 9))


def test_reduction_over_the_map_is_global():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.head = nn.Linear(2, 2)

        def forward(self, x):
            return self.head(self.conv(x).mean(dim=(2, 3)))

    assert analyse(Net(), (1, 12, 12)).layer("head").rf == "global"


def test_exact_boxes_are_clipped_by_the_border():
    layer = natural("cnn").layer("6")  # field 25, jump 4, start -12 on a 7x7 map
    assert layer.centre() == (3, 3) and layer.neighbour() == (4, 4)
    assert layer.boxes((3, 3)) == ((0, 24), (0, 24))  # [3*4 - 12, 3*4 - 12 + 24]
    assert layer.boxes((4, 4)) == ((4, 27), (4, 27))  # [4, 28] cut at the last pixel, 27
    assert layer.clipped()


def test_data_dependent_control_flow_is_traced_on_the_cpu():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 1, 3)
            self.b = nn.Conv2d(1, 1, 5)

        def forward(self, x):
            return self.a(x) if x.sum() >= 0 else self.b(x)

    assert field(analyse(Net(), (1, 9, 9)), "a") == (3, 1, 0)


def test_the_model_is_left_as_it_was():
    model = models.build("resnet20")
    model.train()
    model.layer2.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    analyse(model, (3, 32, 32))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.device.type == "cpu" and p.grad is None for p in model.parameters())
    assert model.training and not model.layer2.training and model.layer3.training


def test_no_spatial_layer():
    with pytest.raises(NoSpatialLayerError, match="no convolution or pooling layer"):
        natural("mlp")
    assert issubclass(NoSpatialLayerError, ValueError)


def test_input_too_small_names_the_layer_and_the_smallest_input():
    # Five 2x2/2 max-pools need at least 2**5 = 32 pixels.
    with torch.device("meta"):
        model = models.build("vgg16")
    with pytest.raises(InputTooSmallError, match=r"'features\.30'.*smallest square input it accepts is 32x32"):
        analyse(model, (3, 16, 16))
    analyse(model, (3, 32, 32))


def test_unknown_layer_lists_the_valid_ones():
    with pytest.raises(UnknownLayerError, match=r"'nope'.*layer3\.2\.conv2"):
        natural("resnet20").layer("nope")


def test_unsupported_operation_is_named():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3)

        def forward(self, x):
            return self.conv(torch.roll(x, 1, dims=2))

    with pytest.raises(UnsupportedOperationError, match="'roll'"):
        analyse(Net(), (1, 8, 8))


def test_bad_input_shape():
    with pytest.raises(ReceptiveFieldError, match="three positive integers"):
        analyse(nn.Conv2d(1, 1, 3), (8, 8))

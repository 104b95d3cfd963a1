"""The model zoo against published parameter counts and the architectures' own definitions."""

import pytest
import torch
from torch import nn

import models
from models.cifar import BasicBlock

# torchvision's published parameter counts (the "Params" column of its model tables).
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "vgg16": 138_357_544,
    "alexnet": 61_100_840,
    "mobilenet_v2": 3_504_872,
}

# He et al. 2016, Table 6: parameters of the CIFAR-10 ResNets, rounded as printed. Those nets
# use parameter-free (zero-padding) shortcuts, so they have exactly the plain nets' parameters.
HE_TABLE6_MILLIONS = {"resnet20": 0.27, "resnet32": 0.46, "resnet44": 0.66, "resnet56": 0.85, "resnet110": 1.7}


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_build(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return models.build(name, **kwargs)


def cifar_params(n: int, width: int, classes: int, in_channels: int, projections: bool) -> int:
    """Parameters of the 6n+2 CIFAR net, counted by hand from the paper's description.

    3x3 convolutions have no bias; each BatchNorm has a scale and a shift per channel.
    """
    conv3 = lambda cin, cout: 9 * cin * cout  # noqa: E731
    bn = lambda c: 2 * c  # noqa: E731
    total = conv3(in_channels, width) + bn(width)
    widths = [width, 2 * width, 4 * width]
    previous = width
    for planes in widths:
        total += conv3(previous, planes) + bn(planes) + conv3(planes, planes) + bn(planes)
        total += (n - 1) * 2 * (conv3(planes, planes) + bn(planes))
        if projections and previous != planes:
            total += previous * planes + bn(planes)
        previous = planes
    return total + 4 * width * classes + classes


@pytest.mark.parametrize("name", TORCHVISION_PARAMS)
def test_torchvision_parameter_counts(name):
    assert count(meta_build(name)) == TORCHVISION_PARAMS[name]


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_cifar_resnet_parameter_counts(depth):
    n = (depth - 2) // 6
    model = meta_build(f"resnet{depth}")
    assert count(model) == cifar_params(n, 16, 10, 3, projections=True)
    parameter_free = cifar_params(n, 16, 10, 3, projections=False)
    assert round(parameter_free / 1e6, 2 if depth < 110 else 1) == HE_TABLE6_MILLIONS[f"resnet{depth}"]
    # The two projections: 1x1 conv 16->32 + BN(32), 1x1 conv 32->64 + BN(64).
    assert count(model) - parameter_free == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


@pytest.mark.parametrize("depth", [20, 32, 44, 56])
def test_plain_net_parameter_counts(depth):
    plain = count(meta_build(f"plain{depth}"))
    assert plain == cifar_params((depth - 2) // 6, 16, 10, 3, projections=False)
    assert round(plain / 1e6, 2) == HE_TABLE6_MILLIONS[f"resnet{depth}"]


@pytest.mark.parametrize("width,classes,in_channels", [(8, 10, 3), (32, 100, 1), (16, 7, 5)])
def test_cifar_keyword_arguments(width, classes, in_channels):
    model = meta_build("resnet32", width=width, num_classes=classes, in_channels=in_channels)
    assert count(model) == cifar_params(5, width, classes, in_channels, projections=True)


@pytest.mark.parametrize("name", ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110"])
def test_projection_shortcuts_only_where_shape_changes(name):
    model = meta_build(name)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    projections = [b for b in blocks if b.shortcut is not None]
    # Stages 2 and 3 each open with a stride-2 block that doubles the width: two projections.
    assert len(projections) == 2
    assert all(b.conv1.stride == (2, 2) for b in projections)
    one_by_one = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert len(one_by_one) == 2


@pytest.mark.parametrize("name", ["plain20", "plain56"])
def test_plain_nets_have_no_shortcuts(name):
    model = models.build(name)
    block = next(m for m in model.modules() if isinstance(m, BasicBlock))
    x = torch.randn(2, 16, 8, 8)
    block.eval()
    # Without a shortcut the block's output is ReLU(BN(conv(ReLU(BN(conv(x)))))), nothing added.
    expected = block.relu(block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x))))))
    torch.testing.assert_close(block(x), expected)
    assert not any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in model.modules())


def test_residual_block_adds_its_input():
    block = models.build("resnet20").layer1[0].eval()
    x = torch.randn(2, 16, 8, 8)
    body = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))
    torch.testing.assert_close(block(x), torch.relu(body + x))


def test_lab_cnn_layers_and_sizes():
    model = models.build("cnn")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    geometry = [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs]
    assert geometry == [
        (1, 32, (5, 5), (1, 1), (2, 2)),
        (32, 64, (5, 5), (2, 2), (2, 2)),
        (64, 64, (5, 5), (1, 1), (2, 2)),
        (64, 128, (5, 5), (2, 2), (2, 2)),
        (128, 10, (1, 1), (1, 1), (0, 0)),
    ]
    sizes = []
    for conv in convs:
        conv.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[2:])))
    out = model(torch.randn(3, 1, 28, 28))
    assert out.shape == (3, 10)
    assert sizes == [(28, 28), (14, 14), (14, 14), (7, 7), (1, 1)]
    # 5x5 kernels with biases: 32*25+32, 64*32*25+64, 64*64*25+64, 128*64*25+128, 10*128+10.
    assert count(model) == 832 + 51_264 + 102_464 + 204_928 + 1_290


def test_lab_mlp_layers():
    model = models.build("mlp")
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (784, 256),
        (256, 256),
        (256, 256),
        (256, 256),
        (256, 10),
    ]
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 4
    assert model(torch.randn(5, 1, 28, 28)).shape == (5, 10)


@pytest.mark.parametrize("name", models.available())
def test_every_model_runs_on_its_natural_input(name):
    entry = models.spec(name)
    model = models.build(name, num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(1, *entry.input_shape))
    assert out.shape == (1, 7)


@pytest.mark.parametrize("name", ["resnet18", "vgg16", "alexnet", "mobilenet_v2", "resnet20", "cnn"])
def test_in_channels_replaces_only_the_stem(name):
    three = meta_build(name, in_channels=3)
    one = meta_build(name, in_channels=1)
    stem3 = next(m for m in three.modules() if isinstance(m, nn.Conv2d))
    stem1 = next(m for m in one.modules() if isinstance(m, nn.Conv2d))
    assert stem1.in_channels == 1
    assert (stem1.kernel_size, stem1.stride, stem1.padding) == (stem3.kernel_size, stem3.stride, stem3.padding)
    assert count(three) - count(one) == 2 * stem3.out_channels * stem3.kernel_size[0] * stem3.kernel_size[1]


def test_natural_inputs_and_classes():
    assert models.spec("cnn").input_shape == (1, 28, 28)
    assert models.spec("resnet56").input_shape == (3, 32, 32)
    assert models.spec("resnet50").input_shape == (3, 224, 224)
    assert models.spec("resnet50").num_classes == 1000
    assert models.spec("plain20").num_classes == 10


def test_building_downloads_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for name in ["resnet18", "mobilenet_v2"]:
        meta_build(name)
    assert list(tmp_path.iterdir()) == []


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(models.UnknownNameError) as error:
        models.build("resnet19")
    message = str(error.value)
    assert "resnet19" in message
    for name in ["resnet20", "cnn", "vgg16"]:
        assert name in message
    assert isinstance(error.value, ValueError)


def test_registry_is_complete():
    assert set(models.available()) == {
        "mlp",
        "cnn",
        "resnet20",
        "resnet32",
        "resnet44",
        "resnet56",
        "resnet110",
        "plain20",
        "plain32",
        "plain44",
        "plain56",
        *TORCHVISION_PARAMS,
    }

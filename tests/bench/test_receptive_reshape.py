"""Receptive fields through reshapes, resampling, transposed convolutions and stacks.

The truth here is autograd on the real model (random float64 weights, no ReLU, so no
gradient vanishes by accident): the box of input pixels with a non-zero gradient for one
output unit, all channels. The analytic boxes and the probe's are both held to it.
"""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.receptive import UnsupportedOperationError, analyse, gradient_masks, measure
from bench.receptive.fields import AxisField, TensorField, collapse

pytestmark = pytest.mark.usefixtures("one_thread")


def autograd_box(model: nn.Module, shape: tuple[int, int, int], unit: tuple[int, int]) -> tuple:
    """[h, w] box of the input pixels whose gradient is non-zero for output unit ``unit``."""
    torch.manual_seed(0)
    model = model.double()
    x = torch.randn(1, *shape, dtype=torch.float64, requires_grad=True)
    out = model(x)
    (grad,) = torch.autograd.grad(out[0, :, unit[0], unit[1]].sum(), x)
    support = (grad[0] != 0).any(dim=0).numpy()
    boxes = []
    for along in (1, 0):
        hit = np.flatnonzero(support.any(axis=along))
        boxes.append((int(hit[0]), int(hit[-1])))
    return tuple(boxes)


def seeded(module_class, *args):
    torch.manual_seed(1)
    return module_class(*args).double()


class SpaceToDepth(nn.Module):
    """2x space-to-depth written with reshape and permute, then a 3x3 convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 2, 3, padding=1)

    def forward(self, x):
        n, c, h, w = x.shape
        x = x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(n, c * 4, h // 2, w // 2)
        return self.conv(x)


class Tokens(nn.Module):
    """A 3x3 stride-2 stem, the map flattened into tokens, LayerNorm over channels, the map
    restored, then a 3x3 convolution (as hybrid convolution/transformer encoders do)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.norm = nn.LayerNorm(8)
        self.conv = nn.Conv2d(8, 2, 3, padding=1)

    def forward(self, x):
        x = self.stem(x)
        n, c, h, w = x.shape
        tokens = self.norm(x.flatten(2).transpose(1, 2))
        return self.conv(tokens.transpose(1, 2).reshape(n, c, h, w))


@pytest.mark.parametrize(
    "module,shape,rf,jump,start",
    # Hand derivation: space-to-depth is a 2/2 window (size 2, jump 2), then 3x3 padding 1 at
    # jump 2: 2 + 2 * 2 = 6, start -2. The stem is 3/2/1 (3, 2, -1), then 3x3 padding 1 at
    # jump 2: 3 + 2 * 2 = 7, start -3; the token round trip changes nothing.
    [(SpaceToDepth, (1, 16, 16), 6, 2, -2), (Tokens, (1, 32, 32), 7, 2, -3)],
    ids=["space-to-depth", "tokens-round-trip"],
)
def test_reshape_round_trips_keep_the_field(module, shape, rf, jump, start):
    model = seeded(module)
    analysis = analyse(model, shape)
    conv = analysis.layer("conv")
    assert (conv.rf, conv.jump, conv.start) == ([rf] * 2, [jump] * 2, [start] * 2)
    for unit in [(3, 3), (0, 5), (7, 2)]:
        assert conv.boxes(unit) == autograd_box(model, shape, unit), unit
    if module is SpaceToDepth:  # the issue's own figure: unit (3, 3) sees rows and columns 4 to 9
        assert autograd_box(model, shape, (3, 3)) == ((4, 9), (4, 9))
    mask = gradient_masks(model, analysis)["conv"]
    assert mask.matches() and not mask.clipped
    assert mask.measured() == [{"size": rf, "jump": jump, "start": start}] * 2


def test_a_wrong_analytic_answer_is_a_mismatch():
    # What the trace used to say about the token round trip: a map of one unit that sees the
    # whole input. The probe finds the map's dimensions from output shapes, not from the
    # trace, so it probes one unit and disagrees.
    model = seeded(Tokens)
    analysis = analyse(model, (1, 32, 32))
    conv = analysis.layer("conv")
    assert gradient_masks(model, analysis, [conv])["conv"].matches()
    lost = TensorField(tuple(collapse(a) for a in conv.axes), ((), (), (), ()), True)
    wrong = dataclasses.replace(analysis, layers=[dataclasses.replace(conv, field=lost)])
    mask = gradient_masks(model, wrong)["conv"]
    assert mask.matches() is False
    assert mask.expected_centre_boxes == ((0, 31), (0, 31)) and mask.measured()[0]["size"] == 7
    # A subtler mistake: the field one pixel too far down.
    h, w = conv.axes
    shifted = AxisField(h.kind, h.size, h.jump, h.start + 1, h.lo + 1, h.hi + 1)
    off = dataclasses.replace(conv, field=TensorField((shifted, w), conv.field.layout))
    assert gradient_masks(model, dataclasses.replace(analysis, layers=[off]))["conv"].matches() is False


class Shuffles(nn.Module):
    """F.pixel_unshuffle then F.pixel_shuffle (an identity) between two convolutions, then a
    pixel shuffle that upsamples."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(1, 4, 3, padding=1)
        self.second = nn.Conv2d(4, 8, 3, padding=1)
        self.third = nn.Conv2d(2, 1, 3, padding=1)

    def forward(self, x):
        x = self.second(F.pixel_shuffle(F.pixel_unshuffle(self.first(x), 2), 2))
        return self.third(F.pixel_shuffle(x, 2))


def test_pixel_unshuffle_and_shuffle():
    model = seeded(Shuffles)
    analysis = analyse(model, (1, 12, 12))
    assert (analysis.layer("second").rf, analysis.layer("second").jump) == ([5, 5], [1, 1])  # two 3x3
    third = analysis.layer("third")  # after upsampling, units in pairs share a source row
    assert third.rf == "irregular"
    for unit in [(0, 0), (5, 6), (11, 12), (23, 23)]:
        assert third.boxes(unit) == autograd_box(model, (1, 12, 12), unit), unit
    masks = gradient_masks(model, analysis)
    assert all(mask.matches() for mask in masks.values())


class Decoder(nn.Module):
    """A strided encoder, then a transposed convolution, an upsampling and a stack of paths."""

    def __init__(self, mode: str, align_corners: bool | None) -> None:
        super().__init__()
        self.down = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1)
        self.resample = nn.Upsample(scale_factor=2, mode=mode, align_corners=align_corners)
        self.left = nn.Conv2d(4, 2, 3, padding=1)
        self.right = nn.Conv2d(4, 2, 1)
        self.head = nn.Conv2d(2, 1, 3, padding=1)

    def forward(self, x):
        x = self.resample(self.up(self.down(x)))
        return self.head(torch.stack([self.left(x), self.right(x)]).sum(0))


@pytest.mark.parametrize(
    "mode,align_corners",
    [("nearest", None), ("bilinear", False), ("bilinear", True)],
    ids=["nearest", "bilinear", "align"],
)
def test_transposed_convolution_upsampling_and_stack_against_autograd(mode, align_corners):
    model = seeded(Decoder, mode, align_corners)
    shape = (1, 10, 10)
    analysis = analyse(model, shape)
    for name, stop in [("up", lambda m, x: m.up(m.down(x))), ("head", None)]:
        layer = analysis.layer(name)
        probe_model = model if stop is None else _Prefix(model, stop)
        for i in range(layer.map_size[0]):
            assert layer.boxes((i, i)) == autograd_box(probe_model, shape, (i, i)), (name, i)
    assert all(mask.matches() for mask in gradient_masks(model, analysis).values())


class _Prefix(nn.Module):
    def __init__(self, model, forward):
        super().__init__()
        self.model, self.run = model, forward

    def forward(self, x):
        return self.run(self.model, x)


def test_transposed_convolution_with_stride_one_is_affine():
    # Stride 1: output y gets inputs y + p - 2 .. y + p for a 3-tap kernel, a plain window.
    model = nn.Sequential(nn.Conv2d(1, 1, 3), nn.ConvTranspose2d(1, 1, 3, padding=1))
    layer = analyse(model, (1, 12, 12)).layer("1")
    assert (layer.rf, layer.jump, layer.start) == ([5, 5], [1, 1], [-1, -1])


def test_axes_that_cannot_be_followed_name_the_operation():
    class Uneven(nn.Module):
        def forward(self, x):
            return F.avg_pool2d(x.reshape(1, 1, 4, 9), 2)

    with pytest.raises(UnsupportedOperationError, match="reshape cuts a spatial axis"):
        analyse(nn.Sequential(nn.Conv2d(1, 1, 1), Uneven()), (1, 6, 6))

    class Merged(nn.Module):  # the 12x12 map as 48 x 3: rows and columns mixed in one dimension
        def forward(self, x):
            return F.avg_pool2d(x.reshape(1, 1, 48, 3), 2)

    with pytest.raises(UnsupportedOperationError, match="avg_pool2d: dimension 2 holds digits"):
        analyse(nn.Sequential(nn.Conv2d(1, 1, 1), Merged()), (1, 12, 12))
    with pytest.raises(UnsupportedOperationError, match="interpolate mode 'bicubic'"):
        analyse(nn.Sequential(nn.Conv2d(1, 1, 1), nn.Upsample(scale_factor=2, mode="bicubic")), (1, 6, 6))


class TokenMlp(nn.Module):
    """A Linear on tokens (N, H*W, C): its output has one dimension holding both axes."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.mlp = nn.Linear(4, 4)

    def forward(self, x):
        return self.mlp(self.stem(x).flatten(2).transpose(1, 2))


def test_layers_the_probe_cannot_run_on_say_why(monkeypatch):
    model = TokenMlp()
    analysis = analyse(model, (1, 8, 8))
    mlp = analysis.layer("mlp")
    # By hand: the Linear mixes channels only, so each token keeps the stem's 3x3 field.
    assert (mlp.rf, mlp.jump, mlp.start) == ([3, 3], [1, 1], [-1, -1])
    masks = gradient_masks(model, analysis)
    assert masks["stem"].matches()
    assert masks["mlp"].matches() is None and "height and width together" in masks["mlp"].skipped
    monkeypatch.setattr("bench.receptive.probe.LARGEST_PROBE", 6)
    report = measure(model, (1, 8, 8), erf_samples=0).frame()
    assert report["match"].isna().all() and report["not_probed"].str.contains("wider than 6 pixels").all()

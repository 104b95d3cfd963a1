"""The gradient-mask probe against the analytic fields, and the effective field against closed forms.

The probe is an independent judge of the analytic trace: it measures with autograd what
the trace computes from layer geometry. Hand-derived values pin both where they agree.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import models
from bench.receptive import analyse, effective_fields, gradient_masks
from bench.receptive.probe import centred_square

# Inputs at which the size-dependent layers (adaptive pooling to 7x7 / 6x6) are regular and
# their probed units are not clipped: 448 gives VGG 14x14 features, 416 gives AlexNet 12x12.
PROBE_INPUT = {"vgg16": 448, "alexnet": 416}
SLOW = {"resnet110", "resnet56", "plain56", "resnet34"}


# Effective fields use torch's thread setting: pin one thread (conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


REGISTRY = [
    pytest.param(name, marks=[pytest.mark.slow] if name in SLOW else [], id=name)
    for name in models.available()
    if name != "mlp"
]


def assert_probe_equals_analytic(model, input_shape):
    analysis = analyse(model, input_shape)
    masks = gradient_masks(model, analysis)
    for layer in analysis.layers:
        mask = masks[layer.name]
        assert mask.matches(), (layer.name, mask.centre_boxes, mask.expected_centre_boxes)
        assert not mask.clipped, layer.name
        for axis, measured in zip(layer.axes, mask.measured(), strict=True):
            if axis.kind == "affine":
                assert (measured["size"], measured["jump"], measured["start"]) == (axis.size, axis.jump, axis.start)
    return analysis, masks


@pytest.mark.parametrize("name", REGISTRY)
def test_probe_equals_analytic_for_every_layer_of_every_model(name):
    channels, height, _ = models.spec(name).input_shape
    side = PROBE_INPUT.get(name, height)
    with torch.device("meta"):  # the probe never reads the weights
        model = models.build(name)
    analysis, masks = assert_probe_equals_analytic(model, (channels, side, side))
    assert len(masks) == len(analysis.layers) > 0


def conv_weights(conv, value, bias):
    with torch.no_grad():
        conv.weight.fill_(value)
        conv.bias.fill_(bias)
    return conv


def obstacle_course():
    """Dead ReLUs, a max-pool and a BatchNorm in train mode between two 3x3 convolutions."""
    return nn.Sequential(
        conv_weights(nn.Conv2d(1, 4, 3, padding=1), -1.0, -100.0),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.BatchNorm2d(4),
        nn.Conv2d(4, 1, 3, padding=1),
    ).train()


def test_probe_sees_through_dead_relus_max_pool_and_train_mode_batchnorm():
    model = obstacle_course()
    x = torch.randn(2, 1, 32, 32, requires_grad=True)
    out = model(x)
    (naive,) = torch.autograd.grad(out[0, 0, 8, 8], x)
    assert not naive.any()  # every ReLU is off: plain backpropagation sees nothing
    # conv 3/1/1, pool 2/2/0, conv 3/1/1 at jump 2: size 3 + 1 + 2*2 = 8, start -1 - 2 = -3.
    analysis, masks = assert_probe_equals_analytic(model, (1, 32, 32))
    assert masks["4"].measured() == [{"size": 8, "jump": 2, "start": -3}] * 2
    assert masks["4"].fill == 1.0


def test_train_mode_batchnorm_would_spread_a_naive_gradient_over_the_image():
    model = obstacle_course()
    with torch.no_grad():
        model[0].bias.fill_(100.0)  # ReLUs on
    x = torch.randn(2, 1, 32, 32, requires_grad=True)
    (naive,) = torch.autograd.grad(model(x)[0, 0, 8, 8], x)
    assert naive[0].abs().amin() > 0  # batch statistics tie every pixel to the unit
    mask = gradient_masks(model, analyse(model, (1, 32, 32)))["4"]
    assert mask.measured()[0]["size"] == 8


def test_dilated_stack_has_holes_and_the_fill_says_how_many():
    # Two 3x3 convolutions with dilation 2: field 1 + 4 + 4 = 9, but only even offsets are
    # reached, 5 of 9 per axis: fill 25 / 81.
    model = nn.Sequential(
        nn.Conv2d(1, 1, 3, padding=2, dilation=2), nn.ReLU(), nn.Conv2d(1, 1, 3, padding=2, dilation=2)
    )
    _, masks = assert_probe_equals_analytic(model, (1, 40, 40))
    assert masks["2"].measured()[0]["size"] == 9
    assert masks["2"].fill == pytest.approx(25 / 81)
    (h0, h1), (w0, w1) = masks["2"].centre_boxes
    assert masks["2"].mask[h0 : h1 + 1 : 2, w0 : w1 + 1 : 2].all()


class Shuffle(nn.Module):
    """A channel shuffle between convolutions (ShuffleNet): channels are reshaped, so the
    probe cannot run with one channel per map and must keep them all."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = nn.Conv2d(1, 4, 3, padding=1)
        self.depthwise = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.merge = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        x = self.expand(x)
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.merge(F.relu(self.depthwise(x)))


class Generic(nn.Module):
    """Layers and calls a user's network may have, each with its own receptive-field rule."""

    def __init__(self) -> None:
        super().__init__()
        self.reflect = nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")
        self.same = nn.Conv2d(4, 4, (2, 4), padding="same")
        self.ceil = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.lp = nn.LPPool2d(2, 2)
        self.dilated = nn.MaxPool2d(3, stride=1, padding=1, dilation=2)
        self.strided = nn.Conv2d(4, 4, (1, 3), stride=(2, 1), padding=(0, 1))
        self.exclusive = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.adaptive = nn.AdaptiveMaxPool2d((3, 4))
        self.across = nn.Linear(4, 5)

    def forward(self, x):
        x = F.gelu(self.same(self.reflect(x)))
        x = self.dilated(self.lp(self.ceil(x)))
        x = self.exclusive(torch.sigmoid(self.strided(x)) - x[:, :, ::2])
        return self.across(self.adaptive(x))  # Linear along w: w global, h still local


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@pytest.mark.parametrize(
    "module,shape",
    [(Shuffle, (1, 24, 24)), (Generic, (3, 50, 50))],
    ids=["channel-shuffle", "generic-layers"],
)
def test_probe_equals_analytic_on_user_modules(module, shape):
    model = module()
    analysis, masks = assert_probe_equals_analytic(model, shape)
    assert analysis.channel_safe == (module is not Shuffle)


def test_linear_along_one_axis_is_global_on_that_axis_only():
    model = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Linear(8, 3))  # Linear mixes the 8 columns
    analysis, _ = assert_probe_equals_analytic(model, (1, 10, 10))
    across = analysis.layer("1")
    assert across.rf == [3, "global"] and across.jump == [1, "global"]
    # Two padded 7x7 convolutions (field 13, start -6) on 10 rows: the border clips h. The
    # layer depends on the input's width, so it is probed where asked, and says so.
    model = nn.Sequential(nn.Conv2d(1, 1, 7, padding=3), nn.Conv2d(1, 1, 7, padding=3), nn.Linear(10, 3))
    analysis = analyse(model, (1, 10, 10))
    mask = gradient_masks(model, analysis)["2"]
    assert analysis.layer("2").rf == [13, "global"]
    assert mask.clipped and mask.matches() and mask.input_size == (10, 10)


def test_probe_reports_clipping_at_the_requested_input():
    # Global pooling depends on the input size, so it is probed at the requested input;
    # a field cut by the border is reported as clipped, and compared box for box.
    with torch.device("meta"):
        model = models.build("vgg16")
    analysis = analyse(model, (3, 224, 224))
    mask = gradient_masks(model, analysis, [analysis.layer("avgpool")])["avgpool"]
    assert mask.clipped and mask.matches() and mask.input_size == (224, 224)


def test_probe_and_effective_field_leave_the_model_as_it_was():
    model = models.build("resnet20").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    analysis = analyse(model, (3, 32, 32))
    chosen = [analysis.layer("layer1.0.conv1"), analysis.layer("fc")]
    torch.set_num_threads(2)
    gradient_masks(model, analysis, chosen)  # runs single-threaded, then restores the setting
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)
    effective_fields(model, analysis, chosen, samples=2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert model.training


def box_kernel_side(convolutions: int, fraction: float = 0.95) -> int:
    """The 95% square of n stacked 3x3 all-ones convolutions: the 1-D weights are the n-fold
    convolution of [1, 1, 1]; the 2-D ones their outer product, so the mass inside the
    square |i|, |j| <= d is (sum of the 1-D weights with |i| <= d) squared."""
    weights = np.array([1.0])
    for _ in range(convolutions):
        weights = np.convolve(weights, [1.0, 1.0, 1.0])
    weights /= weights.sum()
    centre = len(weights) // 2
    for d in range(centre + 1):
        if weights[centre - d : centre + d + 1].sum() ** 2 >= fraction - 1e-12:
            return 2 * d + 1
    raise AssertionError


@pytest.mark.parametrize("convolutions", [1, 2, 4, 8])
def test_effective_field_of_a_linear_stack_is_the_binomial_closed_form(convolutions):
    model = nn.Sequential(*(nn.Conv2d(1, 1, 3, padding=1, bias=False) for _ in range(convolutions)))
    for conv in model:
        nn.init.ones_(conv.weight)
    analysis = analyse(model, (1, 41, 41))
    last = analysis.layers[-1]
    erf = effective_fields(model, analysis, [last], samples=2)[last.name]
    side = box_kernel_side(convolutions)
    assert erf.erf95 == side
    assert erf.ratio == [pytest.approx(side / (2 * convolutions + 1), abs=1e-4)] * 2
    if convolutions >= 4:  # Luo et al.: the effective field is a shrinking part of the theoretical one
        assert side < 2 * convolutions + 1


def test_effective_field_uses_the_real_weights():
    conv = nn.Conv2d(1, 1, 5, padding=2, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 2, 2] = 1.0  # only the centre tap is non-zero
    analysis = analyse(conv, (1, 15, 15))
    layer = analysis.layers[0]
    erf = effective_fields(conv, analysis, samples=3)[layer.name]
    assert erf.erf95 == 1 and erf.weights[7, 7] == pytest.approx(1.0)
    assert gradient_masks(conv, analysis)[layer.name].measured()[0]["size"] == 5


def test_centred_square():
    weights = np.zeros((9, 9))
    weights[4, 4] = 1.0
    assert centred_square(weights, (4.0, 4.0)) == 1
    weights[4, 6] = 1.0  # half the mass two pixels right: a square of side 5 holds all
    assert centred_square(weights, (4.0, 4.0), fraction=0.5) == 1
    assert centred_square(weights, (4.0, 4.0)) == 5
    uniform = np.ones((4, 4))  # centred between pixels: even sides
    assert centred_square(uniform, (1.5, 1.5), fraction=0.25) == 2
    assert centred_square(uniform, (1.5, 1.5)) == 4
    assert centred_square(np.zeros((3, 3)), (1.0, 1.0)) is None
    assert math.isclose(0.95 * 16, 15.2)

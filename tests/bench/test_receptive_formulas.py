"""The lab's formulas against torch's own output shapes and against published receptive fields."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from bench.receptive.formulas import (
    effective_kernel,
    min_input_size,
    output_size,
    stack_field_closed_form,
    stack_field_recurrence,
    stack_jump,
    stack_start,
)

geometry = st.tuples(
    st.integers(1, 7),  # kernel
    st.integers(0, 4),  # padding
    st.integers(1, 4),  # stride
    st.integers(1, 3),  # dilation
)


def torch_width(width: int, kernel: int, padding: int, stride: int, dilation: int) -> int | None:
    """Conv1d's output width, or None where torch refuses the input as too small."""
    try:
        return nn.functional.conv1d(
            torch.zeros(1, 1, width), torch.zeros(1, 1, kernel), None, stride, padding, dilation
        ).shape[-1]
    except RuntimeError:
        return None


@settings(max_examples=150, deadline=None)
@given(geometry, st.integers(1, 64))
def test_output_width_is_conv1d_output_width(layer, width):
    kernel, padding, stride, dilation = layer
    expected = torch_width(width, kernel, padding, stride, dilation)
    computed = output_size(width, kernel, stride, padding, dilation)
    if expected is None:
        assert computed < 1
    else:
        assert computed == expected


@settings(max_examples=100, deadline=None)
@given(geometry, st.integers(1, 12))
def test_min_input_width_is_the_smallest_conv1d_accepts(layer, wanted):
    kernel, padding, stride, dilation = layer
    smallest = min_input_size(wanted, kernel, stride, padding, dilation)
    got = torch_width(smallest, kernel, padding, stride, dilation)
    assert got is not None and got >= wanted
    if smallest > 1:
        below = torch_width(smallest - 1, kernel, padding, stride, dilation)
        assert below is None or below < wanted
    if got > wanted:  # only when padding alone gives more than asked from one pixel
        assert smallest == 1


def test_effective_kernel_of_a_dilated_kernel():
    assert effective_kernel(3, 1) == 3
    assert effective_kernel(3, 2) == 5
    assert effective_kernel(5, 3) == 13


stack = st.lists(st.tuples(st.integers(1, 7), st.integers(1, 3), st.integers(1, 3)), min_size=1, max_size=12)


@settings(max_examples=100, deadline=None)
@given(stack)
def test_recurrence_equals_closed_form(layers):
    kernels, strides, dilations = (list(v) for v in zip(*layers, strict=True))
    assert stack_field_recurrence(kernels, strides, dilations) == stack_field_closed_form(kernels, strides, dilations)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5), st.integers(1, 2), st.integers(0, 2)), min_size=1, max_size=5))
def test_stack_field_is_what_conv1d_gradients_reach(layers):
    """A stack of Conv1d with positive weights: the input span with non-zero gradient from one
    unit far from the border is the closed-form field, its start the effective padding."""
    kernels, strides, paddings = (list(v) for v in zip(*layers, strict=True))
    paddings = [min(p, k - 1) for p, k in zip(paddings, kernels, strict=True)]
    size = stack_field_closed_form(kernels, strides)
    jump = stack_jump(strides)
    width = 4 * size + 8 * jump
    x = torch.ones(1, 1, width, dtype=torch.float64, requires_grad=True)
    y = x
    for k, s, p in zip(kernels, strides, paddings, strict=True):
        y = nn.functional.conv1d(y, torch.ones(1, 1, k, dtype=torch.float64), stride=s, padding=p)
    unit = y.shape[-1] // 2
    (grad,) = torch.autograd.grad(y[0, 0, unit], x)
    hit = torch.nonzero(grad[0, 0]).flatten()
    assert hit[-1] - hit[0] + 1 == size
    assert hit[0] == unit * jump + stack_start(paddings, strides)


def test_three_3x3_convolutions_see_7_pixels():
    assert stack_field_recurrence([3, 3, 3], [1, 1, 1]) == 7


# Araujo, Norris and Sim, "Computing Receptive Fields of Convolutional Neural Networks"
# (Distill, 2019), table of receptive fields of TF-slim networks. The layer lists follow the
# slim definitions: 7x7/2 stem, 3x3/2 max-pool, then bottleneck units whose 3x3 convolution
# carries the stride, placed in the LAST unit of each block (blocks 1-3 stride 2, block 4
# stride 1); 1x1 convolutions add nothing to the size and are left out.


def slim_resnet_v1(units: list[int]) -> tuple[list[int], list[int]]:
    kernels, strides = [7, 3], [2, 2]
    for block, count in enumerate(units):
        for unit in range(count):
            last = unit == count - 1
            kernels.append(3)
            strides.append(2 if last and block < 3 else 1)
    return kernels, strides


@pytest.mark.parametrize("units,published", [([3, 4, 6, 3], 483), ([3, 4, 23, 3], 1027)])
def test_slim_resnet_v1_fields_match_distill(units, published):
    kernels, strides = slim_resnet_v1(units)
    assert stack_field_closed_form(kernels, strides) == published
    assert stack_jump(strides) == 32


def test_slim_vgg16_alexnet_and_mobilenet_v1_match_distill():
    # vgg_16 up to pool5: 2, 2, 3, 3, 3 3x3 convolutions, each group closed by a 2x2/2 pool.
    vgg = [(3, 1)] * 2 + [(2, 2)] + [(3, 1)] * 2 + [(2, 2)] + ([(3, 1)] * 3 + [(2, 2)]) * 3
    assert stack_field_closed_form(*zip(*vgg, strict=True)) == 212
    # vgg_16's published effective padding is 90 (1 pixel of padding per 3x3 convolution).
    vgg_padding = [1 if k == 3 else 0 for k, _ in vgg]
    assert stack_start(vgg_padding, [s for _, s in vgg]) == -90
    # alexnet_v2 up to pool5: 11x11/4, 3x3/2 pool, 5x5, 3x3/2 pool, three 3x3, 3x3/2 pool.
    alexnet = [(11, 4), (3, 2), (5, 1), (3, 2), (3, 1), (3, 1), (3, 1), (3, 2)]
    assert stack_field_closed_form(*zip(*alexnet, strict=True)) == 195
    # mobilenet_v1: a 3x3/2 stem, then 13 depthwise 3x3 with strides 1,2,1,2,1,2,1,1,1,1,1,2,1.
    mobilenet = [(3, 2)] + [(3, s) for s in (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1)]
    assert stack_field_closed_form(*zip(*mobilenet, strict=True)) == 315


def test_stack_argument_checks():
    with pytest.raises(ValueError):
        stack_field_closed_form([3, 3], [1])
    with pytest.raises(ValueError):
        stack_start([1], [1, 2])
    with pytest.raises(ValueError):
        min_input_size(0, 3)

"""The lab's receptive-field formulas for one axis of a stack of convolutions and poolings.

A layer has kernel K, stride S, padding P and dilation D; its effective kernel is
K_eff = D(K - 1) + 1. Layers are listed from the input (l = 1) to the output (l = L).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def effective_kernel(kernel: int, dilation: int = 1) -> int:
    """K_eff = D(K - 1) + 1: the span of a dilated kernel."""
    return dilation * (kernel - 1) + 1


def output_size(input_size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """W_out = floor((W_in + 2P - K_eff) / S) + 1.

    Zero or less means the input is too small for the layer (torch refuses such a call).
    """
    return (input_size + 2 * padding - effective_kernel(kernel, dilation)) // stride + 1


def min_input_size(output: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """The smallest W_in >= 1 for which the layer gives at least ``output`` units.

    Inverting the floor: W_in = (W_out - 1)S + K_eff - 2P, which gives exactly ``output``
    units unless padding alone already gives more from a one-pixel input.
    """
    if output < 1:
        raise ValueError(f"output width must be at least 1, got {output}")
    return max(1, (output - 1) * stride + effective_kernel(kernel, dilation) - 2 * padding)


def _check_stack(kernels: Sequence[int], strides: Sequence[int], dilations: Sequence[int] | None) -> list[int]:
    dilations = [1] * len(kernels) if dilations is None else list(dilations)
    if not len(kernels) == len(strides) == len(dilations):
        raise ValueError("kernels, strides and dilations must have one entry per layer")
    return [effective_kernel(k, d) for k, d in zip(kernels, dilations, strict=True)]


def stack_field_recurrence(
    kernels: Sequence[int], strides: Sequence[int], dilations: Sequence[int] | None = None
) -> int:
    """r_0 from r_L = 1 and r_{l-1} = S_l (r_l - 1) + K_l, walking from the output back to the input."""
    field = 1
    for kernel, stride in zip(reversed(_check_stack(kernels, strides, dilations)), reversed(strides), strict=True):
        field = stride * (field - 1) + kernel
    return field


def stack_field_closed_form(
    kernels: Sequence[int], strides: Sequence[int], dilations: Sequence[int] | None = None
) -> int:
    """r_0 = sum_l (K_l - 1) prod_{i<l} S_i + 1."""
    effective = _check_stack(kernels, strides, dilations)
    return sum((k - 1) * math.prod(strides[:layer]) for layer, k in enumerate(effective)) + 1


def stack_jump(strides: Sequence[int]) -> int:
    """The effective stride: neighbouring output units are prod_l S_l input pixels apart."""
    return math.prod(strides)


def stack_start(paddings: Sequence[int], strides: Sequence[int]) -> int:
    """The first input index output unit 0 sees: -sum_l P_l prod_{i<l} S_i (minus the effective padding)."""
    if len(paddings) != len(strides):
        raise ValueError("paddings and strides must have one entry per layer")
    return -sum(p * math.prod(strides[:layer]) for layer, p in enumerate(paddings))

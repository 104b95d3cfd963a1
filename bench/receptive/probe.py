"""Empirical receptive fields: gradient masks, and the effective receptive field.

The gradient-mask probe backpropagates a one-hot gradient from one output unit of a layer
(all channels at the centre of its map) and looks at which input pixels get a non-zero
gradient. With the model as it is, ReLUs that are off, max-pools routing to their argmax
and a BatchNorm in train mode hide parts of the field, so the probe runs on a linearised
copy instead, under a ``TorchFunctionMode`` that rewrites the calls as they happen:

- convolutions and linear layers get positive constant weights (1 / fan-in) and no bias;
- max and LP pooling become average pooling of the same geometry (dilation included);
- activations, normalisations and dropout pass their input through unchanged;
- subtraction and division by a tensor become addition and multiplication, so no two
  paths can cancel;
- every convolution and pooling output rounds its incoming gradient (never negative here)
  to 0/1 with ``sign``, so deep stacks neither underflow nor overflow, whatever their depth;

in float64 on the CPU, in eval mode. The user's model is never modified. Every rewritten
operation is positive and linear, so a pixel gets a non-zero gradient exactly when some
path connects it to the unit. When the graph never selects or reshapes channels
(``Analysis.channel_safe``), all channels of a map carry the same support, and the probe
runs with one channel per map: the same answer for a fraction of the work.

The probe does not take the map's dimensions from the analytic trace, which could share a
mistake with it: the output dimensions that follow the input's height and width are found
from the model's own output shapes at the input, at twice its height and at twice its
width (``spatial_dims``), the unit is picked there, and the trace is asked for the box of
that tensor index. Only a dimension of fixed length (adaptive pooling to a fixed size) is
taken from the trace, where it puts a whole axis; a model that does not run at the larger
sizes falls back to the trace's dimensions. In one-channel mode, adding or multiplying a
constant with more channels (a per-channel layer scale) returns the other operand, so the
single channel is not broadcast back to all. The cost grows with the input's area: see
LARGEST_PROBE.

A second unit (the centre's neighbour, one step further along each axis) is probed in the
same backward pass as a second sample of the batch; the two boxes give the jump and start.
The input is all ones, so one forward pass serves every layer probed at that input size.
A layer whose field is clipped at the requested input but does not depend on the input
size is probed on a larger square input (the first rung of a 1.1x ladder with a jump to
spare around its central unit and neighbour) and compared with the theoretical field there;
the others are probed at the requested input, where clipping is reported.

The effective receptive field (Luo et al., "Understanding the Effective Receptive Field in
Deep Convolutional Neural Networks", 2016) uses the model's own weights in eval mode: the
mean over N seeded Gaussian inputs of |d unit / d input| for the centre unit (all channels
at the centre of the map), summed over input channels. It runs on the model's device with
torch's thread setting: its convolutions are the model's own, large enough to use threads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from bench.receptive.analytic import (
    Analysis,
    LayerField,
    _arg,
    _dtype,
    _pair,
    _Stop,
    canonical_name,
    name_layers,
    structural_copy,
    trace,
    window_geometry,
)
from bench.receptive.fields import AFFINE

PROBE_DTYPE = torch.float64
LADDER = 1.1  # rungs of the ladder of probe input sizes
# The probe's cost grows with the input's area times the channels it keeps: a field wider
# than LARGEST_PROBE (one channel per map) or LARGEST_PROBE_ALL_CHANNELS is probed at the
# requested input, clipped; a requested input wider than these is not probed at all.
LARGEST_PROBE = 2048
LARGEST_PROBE_ALL_CHANNELS = 512

# Position of the ``inplace`` argument of the functions the probe replaces by the identity.
_INPLACE_ARGUMENT = {
    "relu": 1,
    "relu6": 1,
    "selu": 1,
    "silu": 1,
    "mish": 1,
    "hardswish": 1,
    "hardsigmoid": 1,
    "leaky_relu": 2,
    "elu": 2,
    "celu": 2,
    "hardtanh": 3,
    "threshold": 3,
    "rrelu": 4,
    "dropout": 3,
    "dropout1d": 3,
    "dropout2d": 3,
    "dropout3d": 3,
    "alpha_dropout": 3,
    "feature_alpha_dropout": 3,
}
PASS_THROUGH_OPS = set(_INPLACE_ARGUMENT) | set(
    """gelu prelu softplus softsign softshrink hardshrink tanhshrink logsigmoid sigmoid tanh neg abs clamp clip
    clamp_min clamp_max batch_norm instance_norm group_norm layer_norm rms_norm local_response_norm""".split()
)
ROUTING_OPS = {"maximum", "minimum", "fmax", "fmin"}  # elementwise choices become sums
CONSTANT_OPS = {"add", "sub", "mul", "div"}


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch single-threaded, then restore the caller's setting.

    The probe's operations are small and memory-bound; on a busy machine two OpenMP threads
    spin-waiting for each other made them ten times slower than one thread.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _constant(t: Tensor) -> Tensor:
    """The probe's stand-in for a parameter or buffer: ones (a view, no memory), or integer
    zeros; the originals are never read, so the model may even live on the meta device."""
    if t.is_floating_point():
        return torch.ones((), dtype=PROBE_DTYPE).expand(t.shape)
    return torch.zeros(t.shape, dtype=t.dtype)


def _binarised(t: Tensor) -> Tensor:
    if t.requires_grad:
        t.register_hook(torch.sign)
    return t


class _Linearised(TorchFunctionMode):
    """Rewrites a forward pass into the positive linear network with the same connectivity."""

    def __init__(self, one_channel: bool) -> None:
        super().__init__()
        self.one_channel = one_channel

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        raw = getattr(func, "__name__", "")
        name = canonical_name(func)
        if name == "conv2d":
            return self._conv(args, kwargs)
        if name == "conv_transpose2d":
            return self._transposed(args, kwargs)
        if name == "linear":
            x, weight = args[0], _arg(args, kwargs, 1, "weight")
            shape = (1, x.shape[-1]) if self.one_channel else tuple(weight.shape)
            return _binarised(F.linear(x, x.new_full(shape, 1.0 / shape[1])))
        if name == "max_pool2d":
            return self._max_pool(args, kwargs)
        if name == "lp_pool2d":
            kernel, stride, _, _ = window_geometry(name, args, kwargs)
            return _binarised(F.avg_pool2d(args[0], kernel, stride, 0, bool(_arg(args, kwargs, 4, "ceil_mode"))))
        if name == "adaptive_max_pool2d":
            x, size = args[0], _arg(args, kwargs, 1, "output_size")
            out = _binarised(F.adaptive_avg_pool2d(x, size))
            if _arg(args, kwargs, 2, "return_indices", False):
                return out, F.adaptive_max_pool2d(x.detach(), size, return_indices=True)[1]
            return out
        if name in ("avg_pool2d", "adaptive_avg_pool2d"):
            return _binarised(func(*args, **kwargs))
        if name in PASS_THROUGH_OPS:
            x = args[0] if args else kwargs["input"]
            at = _INPLACE_ARGUMENT.get(name)
            inplace = raw.endswith("_") or kwargs.get("inplace") is True
            inplace = inplace or (at is not None and len(args) > at and args[at] is True)
            return x if inplace else x.clone()
        other = _arg(args, kwargs, 1, "other")
        if self.one_channel and name in CONSTANT_OPS and isinstance(args[0], Tensor) and isinstance(other, Tensor):
            kept = self._without_constant(args[0], other)
            if kept is not None:
                return kept
        if name in {"sub", "div"} | ROUTING_OPS and isinstance(args[0], Tensor) and isinstance(other, Tensor):
            inplace = raw.startswith("__i") or (raw.endswith("_") and not raw.startswith("__"))
            if name == "div":
                return args[0].mul_(other) if inplace else args[0] * other
            return args[0].add_(other) if inplace else args[0] + other
        return func(*args, **kwargs)

    @staticmethod
    def _without_constant(a: Tensor, b: Tensor) -> Tensor | None:
        """``a op b`` when one operand is a constant (a parameter, such as a per-channel layer
        scale) that would broadcast the other's single channel to all of them: adding or
        multiplying by a positive constant leaves the support of the gradient as it was, so
        the one-channel probe keeps its single channel. None where that does not apply."""
        if a.requires_grad == b.requires_grad:
            return None
        x = a if a.requires_grad else b
        shape = torch.broadcast_shapes(a.shape, b.shape)
        if len(shape) != x.dim() or sum(n != m for n, m in zip(shape, x.shape, strict=True)) != 1:
            return None
        return x.clone()

    def _conv(self, args: tuple, kwargs: dict) -> Tensor:
        x, weight = args[0], _arg(args, kwargs, 1, "weight")
        stride = _arg(args, kwargs, 3, "stride", 1)
        padding = _arg(args, kwargs, 4, "padding", 0)
        dilation = _arg(args, kwargs, 5, "dilation", 1)
        groups = _arg(args, kwargs, 6, "groups", 1)
        kernel = tuple(weight.shape[-2:])
        if self.one_channel:
            x = x.sum(dim=1, keepdim=True) if x.shape[1] > 1 else x
            if _pair(dilation) == (1, 1) and not isinstance(padding, str):
                if all(p <= k // 2 for p, k in zip(_pair(padding), kernel, strict=True)):
                    # A constant kernel on one channel is sum pooling: the same windows, a faster kernel.
                    return _binarised(F.avg_pool2d(x, kernel, stride, padding, False, True))
            shape, groups = (1, 1, *kernel), 1
        else:
            shape = tuple(weight.shape)
        constant = x.new_full(shape, 1.0 / math.prod(shape[1:]))
        return _binarised(F.conv2d(x, constant, None, stride, padding, dilation, groups))

    def _transposed(self, args: tuple, kwargs: dict) -> Tensor:
        x, weight = args[0], _arg(args, kwargs, 1, "weight")
        geometry = [
            _arg(args, kwargs, i, key, default)
            for i, key, default in ((3, "stride", 1), (4, "padding", 0), (5, "output_padding", 0))
        ]
        groups, dilation = _arg(args, kwargs, 6, "groups", 1), _arg(args, kwargs, 7, "dilation", 1)
        if self.one_channel:
            x = x.sum(dim=1, keepdim=True) if x.shape[1] > 1 else x
            shape, groups = (1, 1, *weight.shape[-2:]), 1
        else:
            shape = tuple(weight.shape)
        constant = x.new_full(shape, 1.0 / math.prod(shape[1:]))
        return _binarised(F.conv_transpose2d(x, constant, None, *geometry, groups, dilation))

    def _max_pool(self, args: tuple, kwargs: dict) -> Tensor | tuple[Tensor, Tensor]:
        x = args[0]
        kernel, stride, padding, dilation = window_geometry("max_pool2d", args, kwargs)
        ceil_mode = bool(_arg(args, kwargs, 5, "ceil_mode", False))
        if dilation == (1, 1):
            out = F.avg_pool2d(x, kernel, stride, padding, ceil_mode, True)
        else:  # average pooling has no dilation: a depthwise convolution of the same windows
            meta = torch.empty(x.shape, device="meta", dtype=x.dtype)
            target = F.max_pool2d(meta, kernel, stride, padding, dilation, ceil_mode).shape[-2:]
            extra = [
                max(0, (t - 1) * s + d * (k - 1) + 1 - (n + 2 * p))
                for t, s, d, k, n, p in zip(target, stride, dilation, kernel, x.shape[-2:], padding, strict=True)
            ]
            padded = F.pad(x, (padding[1], padding[1] + extra[1], padding[0], padding[0] + extra[0]))
            constant = x.new_full((x.shape[1], 1, *kernel), 1.0 / math.prod(kernel))
            out = F.conv2d(padded, constant, None, stride, 0, dilation, x.shape[1])[..., : target[0], : target[1]]
        out = _binarised(out)
        if _arg(args, kwargs, 6, "return_indices", False):
            indices = F.max_pool2d(x.detach(), kernel, stride, padding, dilation, ceil_mode, return_indices=True)[1]
            return out, indices
        return out


def _capture(replica: nn.Module, names: Sequence[str], captured: dict[str, Tensor]) -> list:
    """Hooks that keep the output of each named layer and end the pass after the last one.

    The layer's successors get a clone, so an in-place ReLU after a convolution cannot
    overwrite the tensor the gradient is taken from.
    """
    wanted, last = set(names), names[-1]

    def on_layer(name: str, module: nn.Module, inputs: tuple, output: object) -> object:
        if name not in wanted:
            return None
        out = output[0] if isinstance(output, tuple) else output
        captured[name] = out
        if name == last:
            raise _Stop
        return (out.clone(), *output[1:]) if isinstance(output, tuple) else out.clone()

    return name_layers(replica, on_layer)


def _forward(replica: nn.Module, x: Tensor, names: Sequence[str], mode: TorchFunctionMode | None) -> dict:
    captured: dict[str, Tensor] = {}
    handles = _capture(replica, names, captured)
    try:
        if mode is None:
            replica(x)
        else:
            with mode:
                replica(x)
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()
    missing = [name for name in names if name not in captured]
    if missing:
        raise RuntimeError(f"layers {missing} did not run in the probe's forward pass")
    return captured


def _one_hot(grad: Tensor, sample: slice | int, fixed: dict[int, int]) -> None:
    """Set the gradient of the given samples to one at tensor index ``fixed`` (dimension ->
    index), every value of the other dimensions (channels) included."""
    index: list[object] = [slice(None)] * grad.dim()
    index[0] = sample
    for dim, value in fixed.items():
        index[dim] = value
    grad[tuple(index)] = 1


Box = tuple[int, int] | None


def _boxes(support: np.ndarray) -> tuple[Box, Box]:
    boxes = []
    for along in (1, 0):
        hit = np.flatnonzero(support.any(axis=along))
        boxes.append((int(hit[0]), int(hit[-1])) if len(hit) else None)
    return boxes[0], boxes[1]


@dataclass(frozen=True, eq=False)
class GradientMask:
    """What the probe saw for one layer, beside what the analytic fields expect.

    ``mask`` is the (H, W) boolean map of input pixels with a non-zero gradient for the
    probed unit ``centre``; ``centre_boxes`` / ``neighbour_boxes`` are the [h, w] bounding
    boxes for it and for ``neighbour``, one step further along each axis that has room.
    ``expected_*`` are the analytic boxes of the same units at the same input size, and
    ``clipped`` says whether the border cuts them.

    ``dims`` are the output dimensions the probe took for h and w, found from the model's
    output shapes at two input sizes, not from the analytic trace (None: no dimension
    follows that axis, and the one-hot covers all of them). ``centre`` and ``neighbour``
    are indexes along those dimensions. A layer the probe did not run on has ``skipped``
    saying why, and no boxes.
    """

    layer: str
    input_size: tuple[int, int]
    centre: tuple[int, int]
    neighbour: tuple[int, int]
    centre_boxes: tuple[Box, Box]
    neighbour_boxes: tuple[Box, Box]
    expected_centre_boxes: tuple[Box, Box]
    expected_neighbour_boxes: tuple[Box, Box]
    clipped: bool
    mask: np.ndarray
    dims: tuple[int | None, int | None] = (None, None)
    skipped: str | None = None

    @classmethod
    def not_probed(cls, layer: str, input_size: tuple[int, int], reason: str) -> GradientMask:
        nothing = (None, None)
        return cls(
            layer,
            input_size,
            (0, 0),
            (0, 0),
            nothing,
            nothing,
            nothing,
            nothing,
            False,
            np.zeros((0, 0), bool),
            nothing,
            reason,
        )

    @property
    def fill(self) -> float:
        """The fraction of the centre unit's bounding box with a non-zero gradient."""
        if None in self.centre_boxes:
            return 0.0
        (h0, h1), (w0, w1) = self.centre_boxes
        return float(self.mask[h0 : h1 + 1, w0 : w1 + 1].mean())

    def measured(self) -> list[dict[str, int | None]]:
        """Per axis: size of the centre unit's box, jump (box shift to the neighbour) and start.

        Jump and start need a neighbour along the axis; start is the jump extrapolated back
        to unit 0 (exactly the box's first index when the centre is unit 0).
        """
        values = []
        for a in (0, 1):
            if self.skipped:
                values.append({"size": None, "jump": None, "start": None})
                continue
            if self.centre_boxes[a] is None:  # the unit reaches no input pixel at all
                values.append({"size": 0, "jump": None, "start": None})
                continue
            (lo, hi), unit = self.centre_boxes[a], self.centre[a]
            jump = start = None
            if self.neighbour[a] != unit and self.neighbour_boxes[a] is not None:
                jump = self.neighbour_boxes[a][0] - lo
                start = lo - unit * jump
            elif unit == 0:
                start = lo
            values.append({"size": hi - lo + 1, "jump": jump, "start": start})
        return values

    def matches(self) -> bool | None:
        """Whether the probe's boxes equal the analytic ones, for both units on both axes.

        Where nothing is clipped this is the same as equal size, jump and start. None for a
        layer that was not probed.
        """
        if self.skipped:
            return None
        measured = (self.centre_boxes, self.neighbour_boxes)
        return measured == (self.expected_centre_boxes, self.expected_neighbour_boxes)


def _ladder(side: float) -> int:
    """The smallest rung of the 8 * LADDER**k ladder of probe sizes that is at least ``side``."""
    rung = 8.0
    while math.ceil(rung) < side:
        rung *= LADDER
    return math.ceil(rung)


def _roomy_side(layer: LayerField) -> int:
    """A square input with a jump to spare around a central unit's field and its neighbour's."""
    return _ladder(max(axis.size + 3 * axis.jump + 1 for axis in layer.axes))


@dataclass(frozen=True, eq=False)
class _Task:
    """Probe ``layer`` at ``size``; ``at_analysis`` when that is the analysis's own input size."""

    layer: LayerField
    size: tuple[int, int]
    at_analysis: bool


def _plan(analysis: Analysis, layers: Sequence[LayerField]) -> list[_Task]:
    base = analysis.input_shape[1:]
    largest = LARGEST_PROBE if analysis.channel_safe else LARGEST_PROBE_ALL_CHANNELS
    tasks = []
    for layer in layers:
        movable = not layer.field.size_dependent and all(axis.kind == AFFINE for axis in layer.axes)
        side = _roomy_side(layer) if movable and layer.clipped() else None
        if side is None or side > largest:
            tasks.append(_Task(layer, base, True))
        else:
            tasks.append(_Task(layer, (side, side), False))
    return tasks


def _too_large(analysis: Analysis) -> str | None:
    side = max(analysis.input_shape[1:])
    limit = LARGEST_PROBE if analysis.channel_safe else LARGEST_PROBE_ALL_CHANNELS
    if side <= limit:
        return None
    kept = "one channel per map" if analysis.channel_safe else "all channels (the model selects or reshapes them)"
    return f"the input is wider than {limit} pixels, the probe's limit with {kept}"


def gradient_masks(
    model: nn.Module,
    analysis: Analysis,
    layers: Sequence[LayerField] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, GradientMask]:
    """Probe ``layers`` (default: all of ``analysis``) and return their gradient masks by name.

    Layers clipped at the analysis's input whose fields do not depend on the input size are
    probed at a larger square input, on a central unit, and compared with the theoretical
    field there; if the probe disagrees, it is repeated on a larger input (twice at most) and
    then compared with the analytic boxes traced at that size. Layers the probe cannot run
    on (an input above its size limit, an output dimension that follows both the height
    and the width) come back with ``skipped`` saying why.
    """
    layers = list(analysis.layers if layers is None else layers)
    channels = analysis.input_shape[0]
    reason = _too_large(analysis)
    if reason:
        return {layer.name: GradientMask.not_probed(layer.name, analysis.input_shape[1:], reason) for layer in layers}
    replica = structural_copy(model, _constant).eval()
    order = {layer.name: i for i, layer in enumerate(analysis.layers)}
    results: dict[str, GradientMask] = {}
    tasks = _plan(analysis, layers)
    # Which output dimensions follow the input's height and width does not depend on the size.
    names = sorted({layer.name for layer in layers}, key=order.__getitem__)
    found = spatial_dims(model, channels, analysis.input_shape[1:], names)
    for attempt in range(3):
        with _one_thread():
            results.update(_run_tasks(replica, channels, tasks, order, analysis.channel_safe, found, progress))
        tasks = [
            _Task(task.layer, (_ladder(task.size[0] * 1.25),) * 2, False)
            for task in tasks
            if not task.at_analysis and not results[task.layer.name].matches()
        ]
        if not tasks or attempt == 2:
            break
    for task in tasks:  # still disagreeing: compare with the exact boxes traced at that size
        results[task.layer.name] = _against_trace(model, channels, results[task.layer.name])
    return {layer.name: results[layer.name] for layer in layers}


def _run_tasks(replica, channels, tasks, order, one_channel, found, progress) -> dict[str, GradientMask]:
    by_size: dict[tuple[int, int], list[_Task]] = {}
    for task in tasks:
        by_size.setdefault(task.size, []).append(task)
    results = {}
    for (height, width), group in sorted(by_size.items()):
        group.sort(key=lambda task: order[task.layer.name])
        if progress:
            progress(f"probing {len(group)} layer(s) at {height}x{width}, up to {group[-1].layer.name}")
        results.update(_probe_pass(replica, channels, (height, width), group, one_channel, found))
    return results


def spatial_dims(
    model: nn.Module, channels: int, size: tuple[int, int], names: Sequence[str]
) -> dict[str, tuple[list[int], list[int]]] | None:
    """Per layer, the output dimensions whose length follows the input's height, and those
    whose length follows its width: from the model's own output shapes (on the meta device)
    at ``size``, at twice its height and at twice its width. None when the model does not
    run at those sizes."""
    replica = structural_copy(model, lambda t: torch.empty_like(t, device="meta")).eval()
    shapes = []
    for height, width in (size, (2 * size[0], size[1]), (size[0], 2 * size[1])):
        x = torch.zeros((1, channels, height, width), device="meta")
        try:
            captured = _forward(replica, x.to(_dtype(model)), names, None)
        except Exception:  # a fixed-size model, or control flow that needs real values
            return None
        shapes.append({name: tuple(t.shape) for name, t in captured.items()})
    base, taller, wider = shapes
    return {
        name: tuple([d for d, n in enumerate(base[name]) if other[name][d] != n] for other in (taller, wider))
        for name in names
    }


def _probe_axes(layer: LayerField, found: tuple[list[int], list[int]] | None) -> tuple[tuple, str | None]:
    """The output dimension the probe takes for h and for w (None: none), or why it cannot.

    A dimension whose length does not follow the input (adaptive pooling to a fixed size)
    is spatial for the probe only where the analytic trace puts a whole axis there.
    """
    if found is None:
        return layer.field.dims, None
    dims: list[int | None] = []
    for a in (0, 1):
        own, other = found[a], found[1 - a]
        if len(own) > 1 or set(own) & set(other):
            both = sorted(set(own) | set(other))
            return (None, None), f"output dimensions {both} follow the input's height and width together"
        dims.append(own[0] if own else layer.field.dims[a] if layer.field.dims[a] not in other else None)
    return (dims[0], dims[1]), None


def _central_units(task: _Task, out: Tensor, dims: tuple) -> tuple[tuple[int, int], tuple[int, int]]:
    """The probed unit and its neighbour along the probe's dimensions: the map's centre at
    the analysis's input size, else the unit whose theoretical field is centred nearest the
    input's centre."""
    centre, neighbour = [], []
    for axis, dim, side in zip(task.layer.axes, dims, task.size, strict=True):
        units = out.shape[dim] if dim is not None else 1
        if task.at_analysis:
            unit = (units - 1) // 2
        else:
            unit = round(((side - 1) / 2 - axis.start - (axis.size - 1) / 2) / axis.jump)
            unit = min(max(unit, 0), max(units - 2, 0))
        centre.append(unit)
        neighbour.append(unit + 1 if units > 1 else unit)
    return (centre[0], centre[1]), (neighbour[0], neighbour[1])


def _fixed(dims: tuple, unit: tuple[int, int]) -> dict[int, int]:
    return {dim: unit[a] for a, dim in enumerate(dims) if dim is not None}


def _probe_pass(
    replica: nn.Module,
    channels: int,
    size: tuple[int, int],
    tasks: list[_Task],
    one_channel: bool,
    found: dict[str, tuple[list[int], list[int]]] | None,
) -> dict[str, GradientMask]:
    """One forward pass for all ``tasks`` (the input is all ones, so every sample's forward is
    the same), then one backward pass per layer: sample 0 from the probed unit, sample 1
    from its neighbour."""
    x = torch.ones((2, channels, *size), dtype=PROBE_DTYPE, requires_grad=True)
    captured = _forward(replica, x, [task.layer.name for task in tasks], _Linearised(one_channel))
    results = {}
    for task in tasks:
        layer, out = task.layer, captured[task.layer.name]
        dims, reason = _probe_axes(layer, None if found is None else found[layer.name])
        if reason:
            results[layer.name] = GradientMask.not_probed(layer.name, size, reason)
            continue
        centre, neighbour = _central_units(task, out, dims)
        grad = torch.zeros_like(out)
        _one_hot(grad, 0, _fixed(dims, centre))
        _one_hot(grad, 1, _fixed(dims, neighbour))
        (dx,) = torch.autograd.grad(out, x, grad, retain_graph=True)
        support = (dx != 0).any(dim=1).numpy()
        if task.at_analysis:
            expected, clipped = _expected(layer, dims, (centre, neighbour))
        else:  # the theoretical interval of the same unit, if the trace puts the axis where the probe does
            expected = tuple(
                tuple(a.interval(u[i]) if dims[i] == layer.field.dims[i] else None for i, a in enumerate(layer.axes))
                for u in (centre, neighbour)
            )
            clipped = any(
                box is not None and not 0 <= box[0] <= box[1] < side
                for u in expected
                for box, side in zip(u, size, strict=True)
            )
        results[layer.name] = GradientMask(
            layer.name,
            size,
            centre,
            neighbour,
            _boxes(support[0]),
            _boxes(support[1]),
            expected[0],
            expected[1],
            clipped,
            support[0].copy(),
            dims,
        )
    return results


def _against_trace(model: nn.Module, channels: int, mask: GradientMask) -> GradientMask:
    """Re-express a disagreeing probe against the analytic boxes traced at its own input size."""
    traced = trace(model, (channels, *mask.input_size), stop_after=mask.layer, partial=True)
    layer = next((layer for layer in traced.layers if layer.name == mask.layer), None)
    if layer is None:
        return mask
    expected, clipped = _expected(layer, mask.dims, (mask.centre, mask.neighbour))
    return dataclasses.replace(
        mask, expected_centre_boxes=expected[0], expected_neighbour_boxes=expected[1], clipped=clipped
    )


def _expected(layer: LayerField, dims: tuple, units: Sequence[tuple[int, int]]) -> tuple[list, bool]:
    """The analytic boxes of ``units`` (indexes along ``dims``) and whether the border cuts any."""
    expected = [layer.field.boxes_at(_fixed(dims, unit)) for unit in units]
    theory = [layer.field.intervals_at(_fixed(dims, unit)) for unit in units]
    cut = [
        t is not None and t != b for ts, bs in zip(theory, expected, strict=True) for t, b in zip(ts, bs, strict=True)
    ]
    return expected, any(cut)


def centred_square(weights: np.ndarray, centre: tuple[float, float], fraction: float = 0.95) -> int | None:
    """The side of the smallest square centred on ``centre`` that holds ``fraction`` of the mass.

    The centre may be a half-pixel, in which case the side is even. None if there is no mass.
    """
    total = float(weights.sum())
    if total <= 0:
        return None
    rows = np.abs(np.arange(weights.shape[0])[:, None] - centre[0])
    cols = np.abs(np.arange(weights.shape[1])[None, :] - centre[1])
    twice_distance = np.rint(2 * np.maximum(rows, cols)).astype(np.int64)
    mass = np.cumsum(np.bincount(twice_distance.ravel(), weights=weights.ravel()))
    level = int(np.argmax(mass >= fraction * total * (1 - 1e-12)))
    return level + 1  # a square of half-side level / 2 around the centre


@dataclass(frozen=True, eq=False)
class EffectiveField:
    """The effective receptive field of one layer's centre unit.

    ``weights`` is the (H, W) map of mean |gradient|; ``erf95`` the side of the smallest
    square centred on the theoretical field's centre that holds 95% of it; ``ratio`` is
    erf95 over the theoretical size per axis (None for non-affine axes).
    """

    layer: str
    weights: np.ndarray
    erf95: int | None
    ratio: list[float | None]


def effective_fields(
    model: nn.Module,
    analysis: Analysis,
    layers: Sequence[LayerField] | None = None,
    samples: int = 8,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, EffectiveField]:
    """The effective receptive field of each layer's centre unit, with the model's own weights."""
    layers = list(analysis.layers if layers is None else layers)
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    replica = structural_copy(model, lambda t: t.detach()).eval()
    reference = next(iter(replica.parameters()), torch.empty(0))
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((samples, *analysis.input_shape), generator=generator, dtype=torch.float64)
    x = x.to(reference.device, reference.dtype if reference.is_floating_point() else torch.float32)
    x.requires_grad_(True)
    captured = _forward(replica, x, [layer.name for layer in layers], None)
    results = {}
    for k, layer in enumerate(layers):
        if progress:
            progress(f"effective field {k + 1}/{len(layers)}: {layer.name}")
        out = captured[layer.name]
        grad = torch.zeros(out.shape, dtype=out.dtype, device=out.device)
        shape, index = layer.field.unit_index(out.shape, layer.centre())
        grad.view(shape)[index] = 1
        (dx,) = torch.autograd.grad(out, x, grad, retain_graph=k + 1 < len(layers))
        weights = dx.abs().sum(dim=1).mean(dim=0).double().cpu().numpy()
        erf95 = centred_square(weights, layer.centre_point())
        ratio = [None if erf95 is None or axis.kind != AFFINE else round(erf95 / axis.size, 4) for axis in layer.axes]
        results[layer.name] = EffectiveField(layer.name, weights, erf95, ratio)
    return results

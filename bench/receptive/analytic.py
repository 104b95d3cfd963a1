"""Analytic receptive fields, following the computation graph the model really runs.

The model runs once under a ``TorchFunctionMode`` (on the meta device, so no arithmetic is
done) and every tensor that depends on the input carries a ``TensorField``: for each
spatial axis (h, w), what each unit of the map sees of the input. A real forward is
followed rather than a symbolic trace because it sees data-independent control flow,
functional calls and in-place updates (``out += identity``) exactly as they happen; where
the meta device cannot run the model (data-dependent control flow), it runs on the CPU.

Each axis keeps two descriptions of the same map:

- the theoretical field of the lab formulas: output unit i covers the input interval
  [i * jump + start, i * jump + start + size - 1] (``start`` is minus the effective
  padding), extended through padding as if the input went on forever;
- the exact bounding box of the input pixels each unit is connected to, taps that land in
  padding removed. It equals the theoretical interval except where a unit's field is
  clipped by the border, and it is what a gradient probe measures.

Each tensor dimension also records which digits of the h and w unit indexes it holds (see
``Factor``), so axes split into factors, merged or moved by ``view``/``reshape``/
``flatten``/``permute``/``pixel_shuffle`` and the like are followed; where a convolution's
channel mixing (or a Linear) merges a digit, every unit's field becomes the union over it.

Where paths merge (addition, concatenation along channels, stack) the field is the union of
the paths' fields; if their centres differ the merge is noted as misaligned. An axis is
``global`` once every unit depends on the whole map (global pooling, a Linear layer after
flatten, a reduction over the axis) and ``irregular`` when it is not an arithmetic
progression of equal intervals (adaptive pooling whose output does not divide its input).
Normalisation layers count as pointwise: their statistics are not part of a receptive
field (with BatchNorm in eval mode they are constants).
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from bench.receptive.fields import (
    AFFINE,
    GLOBAL,
    IRREGULAR,
    NO_HI,
    NO_LO,
    AxisField,
    Factor,
    Layout,
    TensorField,
    absorb,
    adaptive_window,
    gather,
    pad_axis,
    plain_layout,
    relayout,
    renumbered,
    slice_axis,
    union,
    union_digits,
    whole_axis,
    window,
)
from bench.receptive.formulas import output_size

LAYER_TYPES = (
    nn.Conv2d,
    nn.ConvTranspose2d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.LPPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Linear,
)


class ReceptiveFieldError(ValueError):
    """A model, input size or layer name the receptive-field tools cannot work with."""


class NoSpatialLayerError(ReceptiveFieldError):
    """The model has no convolution or pooling layer, so there is no field to compute."""


class InputTooSmallError(ReceptiveFieldError):
    """The input is too small for one of the model's layers."""


class UnknownLayerError(ReceptiveFieldError):
    """A layer name that is not one of the model's convolution, pooling or linear layers."""


class UnsupportedOperationError(ReceptiveFieldError):
    """An operation on the input's spatial axes whose receptive field is not modelled."""


PerAxis = list[int] | str | None


@dataclass(frozen=True, eq=False)
class LayerField:
    """One convolution, pooling or linear layer and the field of its output.

    ``kernel``, ``stride``, ``padding`` and ``dilation`` are the layer's own geometry as
    [h, w] (for adaptive pooling, the window it uses at this input size).
    """

    name: str
    kind: str
    kernel: PerAxis
    stride: PerAxis
    padding: PerAxis
    dilation: PerAxis
    field: TensorField

    @property
    def axes(self) -> tuple[AxisField, AxisField]:
        return self.field.axes

    @property
    def map_size(self) -> tuple[int, int]:
        """Units along h and w of the layer's output (1 for a collapsed axis)."""
        return len(self.axes[0]), len(self.axes[1])

    def _per_axis(self, attribute: str) -> int | str | list[int | str]:
        values = [getattr(a, attribute) if a.kind == AFFINE else a.kind for a in self.axes]
        return values[0] if isinstance(values[0], str) and values[0] == values[1] else values

    @property
    def rf(self) -> int | str | list[int | str]:
        """Theoretical field size [h, w], or 'global' / 'irregular'."""
        return self._per_axis("size")

    @property
    def jump(self) -> int | str | list[int | str]:
        return self._per_axis("jump")

    @property
    def start(self) -> int | str | list[int | str]:
        return self._per_axis("start")

    @property
    def is_global(self) -> bool:
        return all(a.kind == GLOBAL for a in self.axes)

    def centre(self) -> tuple[int, int]:
        """The unit at the centre of the output map, (n - 1) // 2 along each axis."""
        return tuple((n - 1) // 2 for n in self.map_size)

    def neighbour(self) -> tuple[int, int]:
        """The unit one step after the centre along every axis that has more than one unit."""
        return tuple(c + 1 if n > 1 else c for c, n in zip(self.centre(), self.map_size, strict=True))

    def boxes(self, unit: tuple[int, int]) -> tuple[tuple[int, int] | None, ...]:
        return tuple(a.box(u) for a, u in zip(self.axes, unit, strict=True))

    def clipped(self) -> bool:
        """Whether the border cuts the field of the centre unit or of its neighbour."""
        return any(a.clipped(u[i]) for u in (self.centre(), self.neighbour()) for i, a in enumerate(self.axes))

    def centre_point(self) -> tuple[float, float]:
        """Input coordinates of the centre of the centre unit's field (exact box for non-affine axes)."""
        point = []
        for axis, unit in zip(self.axes, self.centre(), strict=True):
            lo, hi = axis.interval(unit) or axis.box(unit)
            point.append((lo + hi) / 2)
        return tuple(point)


@dataclass(frozen=True, eq=False)
class Analysis:
    """The analytic fields of every convolution, pooling and linear layer, in execution order.

    ``channel_safe`` says whether the graph never selects channels nor moves spatial digits
    into them (or splits them), so that every channel of a map has the same support and a
    probe may run with one channel per map (see ``bench.receptive.probe``).
    """

    input_shape: tuple[int, int, int]
    layers: list[LayerField]
    channel_safe: bool
    notes: list[str] = field(default_factory=list)

    def layer(self, name: str) -> LayerField:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise UnknownLayerError(
            f"no convolution, pooling or linear layer named {name!r}; valid layers: "
            + ", ".join(layer.name for layer in self.layers)
        )

    def select(self, names: Iterable[str] | None) -> list[LayerField]:
        """The named layers in execution order (all of them for ``None``)."""
        if names is None:
            return list(self.layers)
        wanted = {self.layer(name).name for name in names}
        return [layer for layer in self.layers if layer.name in wanted]


def structural_copy(model: nn.Module, convert: Callable[[Tensor], Tensor]) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers are ``convert`` of the originals.

    The original is never touched: converting to the meta device, to detached views or to
    constants costs no copy of the weights themselves.
    """
    memo: dict[int, object] = {}
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        converted = convert(tensor)
        if isinstance(tensor, nn.Parameter):
            converted = nn.Parameter(converted, requires_grad=False)
        memo[id(tensor)] = converted
    return copy.deepcopy(model, memo)


def name_layers(model: nn.Module, on_layer: Callable[[str, nn.Module, tuple, object], None]) -> list:
    """Hook every layer of ``model`` so ``on_layer(name, module, inputs, output)`` runs after each call.

    A module called k > 0 times before is named ``name:k``. Returns the hook handles.
    """
    handles = []
    for qualified, module in model.named_modules():
        if isinstance(module, LAYER_TYPES):
            calls = itertools.count()

            def hook(module, inputs, output, qualified=qualified, calls=calls):
                k = next(calls)
                return on_layer(qualified if k == 0 else f"{qualified}:{k}", module, inputs, output)

            handles.append(module.register_forward_hook(hook))
    return handles


def canonical_name(func: Callable) -> str:
    """``Tensor.__iadd__``, ``torch.add`` and ``Tensor.add_`` are all 'add' (and so on)."""
    name = getattr(func, "__name__", "")
    if name == "__get__":  # a property such as Tensor.T or Tensor.data
        name = getattr(getattr(func, "__self__", None), "__name__", name)
    name = name.strip("_")
    return _ALIASES.get(name, name)


_ALIASES = {
    "iadd": "add",
    "radd": "add",
    "isub": "sub",
    "rsub": "sub",
    "imul": "mul",
    "rmul": "mul",
    "truediv": "div",
    "itruediv": "div",
    "rtruediv": "div",
    "true_divide": "div",
    "idiv": "div",
    "rdiv": "div",
    "max_pool2d_with_indices": "max_pool2d",
    "adaptive_max_pool2d_with_indices": "adaptive_max_pool2d",
    "concat": "cat",
    "concatenate": "cat",
}


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: object = None) -> object:
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else default


def _pair(value: object) -> tuple:
    if isinstance(value, (int, float)):
        return value, value
    values = tuple(value)
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def window_geometry(name: str, args: tuple, kwargs: dict) -> tuple[tuple, tuple, tuple, tuple]:
    """(kernel, stride, left padding, dilation) per axis of a conv2d or 2-d pooling call."""
    if name == "conv2d":
        kernel = tuple(_arg(args, kwargs, 1, "weight").shape[-2:])
        stride = _pair(_arg(args, kwargs, 3, "stride", 1))
        dilation = _pair(_arg(args, kwargs, 5, "dilation", 1))
        padding = _arg(args, kwargs, 4, "padding", 0)
        if padding == "valid":
            padding = 0
        elif padding == "same":  # torch puts the odd pixel of padding after the input
            padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation, strict=True))
        return kernel, stride, _pair(padding), dilation
    if name == "lp_pool2d":
        kernel = _pair(_arg(args, kwargs, 2, "kernel_size"))
        stride = _arg(args, kwargs, 3, "stride") or kernel
        return kernel, _pair(stride), (0, 0), (1, 1)
    kernel = _pair(_arg(args, kwargs, 1, "kernel_size"))
    stride = _arg(args, kwargs, 2, "stride") or kernel
    padding = _pair(_arg(args, kwargs, 3, "padding", 0))
    dilation = _pair(_arg(args, kwargs, 4, "dilation", 1)) if name == "max_pool2d" else (1, 1)
    return kernel, _pair(stride), padding, dilation


WINDOW_OPS = {"conv2d", "max_pool2d", "avg_pool2d", "lp_pool2d"}
ADAPTIVE_OPS = {"adaptive_avg_pool2d", "adaptive_max_pool2d"}
POINTWISE_OPS = set(
    """add sub mul div floor_divide floordiv pow rpow ipow neg pos abs exp expm1 log log1p log2 sqrt rsqrt
    square reciprocal sign clamp clip clamp_min clamp_max maximum minimum fmax fmin where lerp addcmul addcdiv
    masked_fill sin cos erf erfc round floor ceil trunc frac mod remainder fmod eq ne lt le gt ge nan_to_num
    relu relu6 hardtanh gelu silu mish selu celu elu leaky_relu rrelu prelu softplus softsign softshrink
    hardshrink tanhshrink hardswish hardsigmoid logsigmoid threshold sigmoid tanh
    batch_norm instance_norm group_norm layer_norm rms_norm local_response_norm
    dropout dropout1d dropout2d dropout3d alpha_dropout feature_alpha_dropout
    contiguous clone detach float double half bfloat16 to type type_as cpu cuda requires_grad data
    expand expand_as broadcast_to""".split()
)
VIEW_OPS = {"flatten", "view", "reshape", "unflatten", "squeeze", "unsqueeze", "view_as", "reshape_as"}
PERMUTE_OPS = {"permute", "transpose", "swapaxes", "swapdims", "movedim", "moveaxis", "t", "T", "mT"}
REDUCTION_OPS = set(
    "mean sum amax amin max min std var logsumexp prod norm nansum nanmean median nanmedian "
    "argmax argmin any all count_nonzero".split()
)
SOFTMAX_OPS = {"softmax", "log_softmax", "softmin"}
NORMALISATION_OPS = {"batch_norm", "instance_norm", "group_norm", "layer_norm"}
SPLIT_OPS = {"chunk", "split", "tensor_split", "unbind", "narrow", "split_with_sizes"}
INTERPOLATION_MODES = {"nearest", "nearest-exact", "bilinear"}


class _Tracer(TorchFunctionMode):
    """Follows one forward pass, attaching a TensorField to every tensor that depends on the input."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[int, tuple[Tensor, TensorField]] = {}
        self.stack: list[str] = []
        self.layers: list[LayerField] = []
        self.channel_safe = True
        self.notes: list[str] = []
        self.gated = False  # a global gate was noted (only the first one is)

    def field(self, tensor: object) -> TensorField | None:
        entry = self.fields.get(id(tensor))
        return entry[1] if entry is not None and entry[0] is tensor else None

    def set(self, tensor: Tensor, value: TensorField) -> None:
        self.fields[id(tensor)] = (tensor, value)

    def where(self) -> str:
        return f"in module {self.stack[-1]!r}" if self.stack and self.stack[-1] else "in the model's forward"

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = canonical_name(func)
        try:
            if name in NORMALISATION_OPS and args and args[0].is_meta:
                result = torch.empty_like(args[0])  # meta BatchNorm is a slow Python decomposition
            else:
                result = func(*args, **kwargs)
        except RuntimeError as error:
            if name in WINDOW_OPS:
                self._check_size(name, args, kwargs, error)
            raise
        sources = [t for t in tree_leaves((args, kwargs)) if isinstance(t, Tensor) and self.field(t) is not None]
        outputs = [t for t in tree_leaves(result) if isinstance(t, Tensor)]
        if sources and outputs:
            try:
                self._propagate(func, name, args, kwargs, sources, result, outputs)
            except ValueError as error:
                if isinstance(error, ReceptiveFieldError):
                    raise
                raise UnsupportedOperationError(f"{self.where()}: {name}: {error}") from None
        return result

    def _check_size(self, name: str, args: tuple, kwargs: dict, error: RuntimeError) -> None:
        x = args[0]
        kernel, stride, padding, dilation = window_geometry(name, args, kwargs)
        shape = tuple(x.shape[-2:])
        sizes = [output_size(*g) for g in zip(shape, kernel, stride, padding, dilation, strict=True)]
        if min(sizes) < 1:
            raise InputTooSmallError(
                f"{self.where()}: {name} with kernel {list(kernel)} (dilation {list(dilation)}, padding "
                f"{list(padding)}) gets a {shape[0]}x{shape[1]} map and would give {sizes[0]}x{sizes[1]}"
            ) from error

    def _propagate(self, func, name, args, kwargs, sources, result, outputs) -> None:
        if name in POINTWISE_OPS or (name in ("max", "min") and isinstance(_arg(args, kwargs, 1, "other"), Tensor)):
            for out in outputs:
                self.set(out, self._broadcast(sources, out))
            if name == "mul" and not self.gated:
                whole = [all(a.kind == GLOBAL for a in self.field(t).axes) for t in sources]
                if any(whole) and not all(whole):
                    self.gated = True
                    self.notes.append(
                        f"{self.where()}: a product with a gate computed from the whole map (as in "
                        "squeeze-and-excitation): from here on every unit depends on the whole input"
                    )
        elif name in WINDOW_OPS or name == "conv_transpose2d":
            self._window(name, args, kwargs, sources, outputs[0])
        elif name in ADAPTIVE_OPS:
            self._adaptive(args[0], outputs[0])
        elif name == "linear":
            self._linear(args, kwargs, sources, outputs[0])
        elif name in VIEW_OPS:
            self._view(name, args[0], outputs[0])
        elif name in PERMUTE_OPS:
            self._permute(func, args, kwargs, outputs[0])
        elif name in ("pixel_shuffle", "pixel_unshuffle"):
            self._pixel_shuffle(
                name,
                args[0],
                _arg(args, kwargs, 1, "upscale_factor" if name == "pixel_shuffle" else "downscale_factor"),
                outputs[0],
            )
        elif name == "interpolate":
            self._interpolate(args, kwargs, outputs[0])
        elif name in REDUCTION_OPS:
            self._reduce(name, args, kwargs, outputs)
        elif name in SOFTMAX_OPS:
            self._softmax(args, kwargs, outputs[0])
        elif name == "cat":
            self._cat(args, kwargs, outputs[0])
        elif name == "stack":
            self._stack(args, kwargs, outputs[0])
        elif name == "getitem":
            self._getitem(args[0], args[1], outputs[0])
        elif name in SPLIT_OPS:
            self._split(name, args, kwargs, outputs)
        elif name == "pad":
            self._pad(args, kwargs, outputs[0])
        else:
            raise UnsupportedOperationError(
                f"{self.where()}: the receptive field of {name!r} on the input's spatial axes is not modelled"
            )

    def _broadcast(self, sources: Sequence[Tensor], out: Tensor) -> TensorField:
        """The field of an elementwise result: the union of its operands' fields, broadcast."""
        return self._merge([(self.field(t), t.dim()) for t in sources], out)

    def _merge(self, operands: Sequence[tuple[TensorField, int]], out: Tensor) -> TensorField:
        """The union of fields of operands with the given numbers of dimensions, broadcast to
        ``out``. Operands must hold each axis in the same digits of the same (right-aligned)
        dimensions, unless an operand has a single unit along it."""
        layout: list[tuple[Factor, ...]] = [(Factor(n),) if n != 1 else () for n in out.shape]
        owner: list[list | None] = [None, None]
        for f, ndim in operands:
            shift = out.dim() - ndim
            for a in (0, 1):
                if len(f.axes[a]) == 1:
                    continue
                placed = [(d + shift, k, g) for d, k, g in f.digits(a)]
                if owner[a] is None:
                    owner[a] = placed
                    for d, _, _ in placed:
                        layout[d] = f.layout[d - shift]
                elif placed != owner[a]:
                    raise ValueError(f"operands hold axis {'hw'[a]} in different dimensions")
        for f, ndim in operands:  # a single-unit axis keeps its marker dimension (keepdim reductions)
            for a, d in enumerate(f.dims):
                if d is not None and owner[a] is None and out.shape[d + out.dim() - ndim] == 1:
                    layout[d + out.dim() - ndim] = (Factor(1, a),)
        axes = []
        for a in (0, 1):
            units = math.prod(g.size for _, _, g in owner[a]) if owner[a] is not None else 1
            parts = [f.axes[a] for f, _ in operands]
            merged = union(parts, units)
            if merged.misaligned and not any(p.misaligned for p in parts):
                self.notes.append(f"{self.where()}: paths with misaligned centres merge along axis {'hw'[a]}")
            axes.append(merged)
        size_dependent = any(f.size_dependent for f, _ in operands)
        return TensorField((axes[0], axes[1]), tuple(layout), size_dependent)

    def _mix(self, f: TensorField, d: int, groups: int, out_size: int) -> TensorField:
        """Dimension ``d`` mixed in ``groups`` groups (channels of a convolution): every output
        value depends on all values of its group, so the group's spatial digits merge."""
        factors = f.layout[d]
        size = math.prod(g.size for g in factors)
        split = relayout((factors,), (groups, size // groups))
        if split is None:
            raise ValueError(f"{groups} groups cut dimension {d}'s spatial digits unevenly")
        high, low = split
        if any(g.axis is not None for g in low) and groups > 1:
            self.channel_safe = False
        layout = list(f.layout)
        layout[d] = high + low
        split_field = TensorField(f.axes, tuple(layout), f.size_dependent)
        merged = union_digits(split_field, {(d, len(high) + k) for k, g in enumerate(low) if g.axis is not None})
        layout = list(merged.layout)
        layout[d] = tuple(layout[d][: len(high)]) + ((Factor(out_size // groups),) if out_size // groups > 1 else ())
        return TensorField(merged.axes, tuple(layout), merged.size_dependent)

    def _window(self, name, args, kwargs, sources, out) -> None:
        x = args[0]
        if any(t is not x for t in sources):
            raise UnsupportedOperationError(f"{self.where()}: {name} with weights that depend on the input")
        f = self.field(x)
        if name in ("conv2d", "conv_transpose2d"):
            weight = _arg(args, kwargs, 1, "weight")
            groups = _arg(args, kwargs, 6, "groups", 1)
            f = self._mix(f, x.dim() - 3, groups, out.shape[-3])
        axes, layout = list(f.axes), list(f.layout)
        for a_dim in (x.dim() - 2, x.dim() - 1):
            a = whole_axis(f, a_dim)
            units = out.shape[a_dim]
            if a is None:
                layout[a_dim] = (Factor(units),) if units > 1 else ()
                continue
            if name == "conv_transpose2d":
                axes[a] = self._transposed(args, kwargs, f.axes[a], a_dim - x.dim() + 2, units, weight)
            else:
                kernel, stride, padding, dilation = window_geometry(name, args, kwargs)
                k = a_dim - x.dim() + 2
                axes[a] = window(f.axes[a], units, kernel[k], stride[k], padding[k], dilation[k])
            layout[a_dim] = (Factor(units, a),)
        self.set(out, TensorField((axes[0], axes[1]), tuple(layout), f.size_dependent))

    @staticmethod
    def _transposed(args, kwargs, axis: AxisField, k: int, units: int, weight: Tensor) -> AxisField:
        """Output y of a transposed convolution gets input i through tap t when
        y = i * stride - padding + t * dilation (torch.nn.ConvTranspose2d's definition)."""
        stride = _pair(_arg(args, kwargs, 3, "stride", 1))[k]
        padding = _pair(_arg(args, kwargs, 4, "padding", 0))[k]
        dilation = _pair(_arg(args, kwargs, 7, "dilation", 1))[k]
        kernel = weight.shape[-2 + k]
        offset = np.arange(units)[:, None] + padding - dilation * np.arange(kernel)[None, :]
        reach = offset % stride == 0
        taps = offset // stride
        inside = reach & (taps >= 0) & (taps < len(axis))
        return gather(axis, taps, inside, reach)

    def _adaptive(self, x: Tensor, out: Tensor) -> None:
        f = self.field(x)
        axes, layout = list(f.axes), list(f.layout)
        for a_dim in (x.dim() - 2, x.dim() - 1):
            a = whole_axis(f, a_dim)
            if a is not None:
                axes[a] = adaptive_window(f.axes[a], out.shape[a_dim])
                layout[a_dim] = (Factor(out.shape[a_dim], a),)
            else:
                layout[a_dim] = (Factor(out.shape[a_dim]),) if out.shape[a_dim] > 1 else ()
        self.set(out, TensorField((axes[0], axes[1]), tuple(layout), True))

    def _interpolate(self, args, kwargs, out) -> None:
        """Nearest and bilinear resampling, with torch's source-index rules: output y reads
        floor(y * scale) (nearest), floor((y + 0.5) * scale) (nearest-exact), or the two
        pixels around (y + 0.5) * scale - 0.5, or y * (n - 1) / (m - 1) with align_corners,
        those with a non-zero weight (bilinear); scale = 1 / scale_factor when given, else n / m."""
        x = args[0]
        f = self.field(x)
        mode = _arg(args, kwargs, 3, "mode", "nearest")
        if mode not in INTERPOLATION_MODES or x.dim() != 4:
            raise UnsupportedOperationError(
                f"{self.where()}: interpolate mode {mode!r} on a {x.dim()}-d tensor (modelled: "
                f"{', '.join(sorted(INTERPOLATION_MODES))} on 4-d maps)"
            )
        factor = _arg(args, kwargs, 2, "scale_factor")
        recompute = _arg(args, kwargs, 5, "recompute_scale_factor")
        align = bool(_arg(args, kwargs, 4, "align_corners", False))
        axes, layout = list(f.axes), list(f.layout)
        for k, a_dim in enumerate((2, 3)):
            n, m = x.shape[a_dim], out.shape[a_dim]
            a = whole_axis(f, a_dim)
            if a is None:
                layout[a_dim] = (Factor(m),) if m > 1 else ()
                continue
            y = np.arange(m, dtype=np.float64)
            given = _pair(factor)[k] if factor is not None and not recompute else None
            scale = 1.0 / given if given else n / m
            if mode == "bilinear":
                if align:
                    source = y * ((n - 1) / (m - 1)) if m > 1 else np.zeros(m)
                else:
                    source = np.maximum((y + 0.5) * scale - 0.5, 0.0)
                first = np.floor(source).astype(np.int64)
                taps = np.stack([first, np.minimum(first + 1, n - 1)], axis=1)
                inside = np.stack([np.ones(m, dtype=bool), source - first > 0], axis=1)
            else:
                shift = 0.5 if mode == "nearest-exact" else 0.0
                taps = np.minimum(np.floor((y + shift) * scale).astype(np.int64), n - 1)[:, None]
                inside = np.ones((m, 1), dtype=bool)
            axes[a] = gather(f.axes[a], taps, inside, inside)
            layout[a_dim] = (Factor(m, a),)
        self.set(out, TensorField((axes[0], axes[1]), tuple(layout), f.size_dependent))

    def _linear(self, args, kwargs, sources, out) -> None:
        x = args[0]
        if any(t is not x for t in sources):
            raise UnsupportedOperationError(f"{self.where()}: linear with weights that depend on the input")
        self.set(out, self._mix(self.field(x), x.dim() - 1, 1, out.shape[-1]))

    def _relaid(self, f: TensorField, layout: Layout | None, op: str) -> TensorField:
        if layout is None:
            raise UnsupportedOperationError(
                f"{self.where()}: {op} cuts a spatial axis into pieces that are not digits of its index"
            )
        return TensorField(f.axes, renumbered(layout, (0, 1)), f.size_dependent)

    def _view(self, name: str, x: Tensor, out: Tensor) -> None:
        f = self.field(x)
        g = self._relaid(f, relayout(f.layout, out.shape), name)
        if not self._keeps_channels(f.layout, g.layout):
            self.channel_safe = False
        self.set(out, g)

    @staticmethod
    def _keeps_channels(before: Layout, after: Layout) -> bool:
        """Whether channels stay whole dimensions that spatial digits do not enter (or all is
        flattened into one feature dimension, as before a classifier), so that every channel
        keeps the same support and a probe may keep one."""
        if len(after) == 2 and after[0] == before[0]:
            return True
        plain = [fs for fs in before if fs and all(g.axis is None for g in fs)]
        for fs in after:
            if any(g.axis is None for g in fs) and (fs not in plain or any(g.axis is not None for g in fs)):
                return False
        return True

    def _permute(self, func, args, kwargs, out) -> None:
        x = args[0]
        f = self.field(x)
        # Apply the same permutation to a tensor whose dimension sizes are all different.
        marker = torch.empty(tuple(range(2, 2 + x.dim())), device="meta")
        order = [size - 2 for size in func(marker, *args[1:], **kwargs).shape]
        self.set(out, TensorField(f.axes, tuple(f.layout[d] for d in order), f.size_dependent))

    def _pixel_shuffle(self, name: str, x: Tensor, r: int, out: Tensor) -> None:
        """torch's definitions: pixel_shuffle is view (C, r, r, H, W), permute to (C, H, r, W, r),
        view (C, H r, W r); pixel_unshuffle the reverse. The r x r sub-pixels of a shuffle come
        from channels, so they repeat the field of the unit they came from."""
        f = self.field(x)
        *batch, c, h, w = x.shape
        b = len(batch)
        if name == "pixel_shuffle":
            steps = [(*batch, c // (r * r), r, r, h, w), (0, 3, 1, 4, 2), out.shape]
        else:
            steps = [(*batch, c, h // r, r, w // r, r), (0, 2, 4, 1, 3), out.shape]
        layout = relayout(f.layout, steps[0])
        layout = None if layout is None else tuple(layout[:b] + tuple(layout[b + d] for d in steps[1]))
        layout = None if layout is None else relayout(layout, steps[2])
        g = self._relaid(f, layout, name)
        if name == "pixel_shuffle":
            g = absorb(absorb(g, out.dim() - 2), out.dim() - 1)
        self.channel_safe = False  # channels and sub-pixels trade places: one channel cannot stand for all
        self.set(out, g)

    def _reduce(self, name, args, kwargs, outputs) -> None:
        x = args[0]
        f = self.field(x)
        dim = kwargs.get("dim", kwargs.get("axis", args[2] if name == "norm" and len(args) > 2 else None))
        if dim is None and name != "norm" and len(args) > 1 and not isinstance(args[1], bool):
            dim = args[1]
        dims_given = [dim] if isinstance(dim, int) else dim
        reduced = set(range(x.dim())) if dim is None else {d % x.dim() for d in dims_given}
        keep = outputs[0].dim() == x.dim()
        merged = union_digits(f, {(d, k) for d in reduced for k in range(len(f.layout[d]))})
        layout = []
        for d, fs in enumerate(merged.layout):
            if d not in reduced:
                layout.append(fs)
            elif keep:  # the dimension stays, one unit long; it still marks where the axis was
                whole = [a for a in (0, 1) if f.dims[a] == d]
                layout.append((Factor(1, whole[0]),) if whole else ())
        for out in outputs:
            self.set(out, TensorField(merged.axes, tuple(layout), merged.size_dependent))

    def _softmax(self, args, kwargs, out) -> None:
        x = args[0]
        f = self.field(x)
        dim = _arg(args, kwargs, 1, "dim")
        spread = range(x.dim()) if dim is None else [dim % x.dim()]
        removed = {(d, k) for d in spread for k in range(len(f.layout[d]))}
        merged = union_digits(f, removed)
        axes = []
        for a in (0, 1):
            wide, narrow = f.axes[a], merged.axes[a]
            if len(narrow) == len(wide):
                axes.append(wide)
                continue
            # Every unit keeps its place but sees what the merged units see together.
            digits = f.digits(a)
            shape = [g.size for _, _, g in digits]
            keep = [1 if (d, k) in removed else g.size for d, k, g in digits]
            lo = np.broadcast_to(narrow.lo.reshape(keep), shape).ravel().copy()
            hi = np.broadcast_to(narrow.hi.reshape(keep), shape).ravel().copy()
            axes.append(wide.with_arrays(lo, hi, GLOBAL if narrow.kind == GLOBAL else IRREGULAR))
        self.set(out, TensorField((axes[0], axes[1]), f.layout, merged.size_dependent))

    def _cat(self, args, kwargs, out) -> None:
        tensors = list(_arg(args, kwargs, 0, "tensors"))
        dim = _arg(args, kwargs, 1, "dim", 0) % out.dim()
        with_field = [t for t in tensors if self.field(t) is not None]
        reference = self._broadcast(with_field, out)
        a = whole_axis(reference, dim)
        if a is None:  # channels: each unit's field is the union over the pieces
            layout = list(reference.layout)
            layout[dim] = (Factor(out.shape[dim]),)
            self.set(out, TensorField(reference.axes, tuple(layout), reference.size_dependent))
            return
        pieces = []
        for t in tensors:
            f = self.field(t)
            if f is None:
                n = t.shape[dim]
                pieces.append(AxisField(IRREGULAR, None, None, None, np.full(n, NO_LO), np.full(n, NO_HI)))
            else:
                pieces.append(f.axes[a])
        lo = np.concatenate([p.lo for p in pieces])
        hi = np.concatenate([p.hi for p in pieces])
        axes = list(reference.axes)
        axes[a] = reference.axes[a].with_arrays(lo, hi, GLOBAL if reference.axes[a].kind == GLOBAL else IRREGULAR)
        layout = list(reference.layout)
        layout[dim] = (Factor(out.shape[dim], a),)
        self.set(out, TensorField((axes[0], axes[1]), tuple(layout), reference.size_dependent))

    def _stack(self, args, kwargs, out) -> None:
        """A new dimension of pieces: every unit's field is the union over the pieces, as for a
        concatenation along channels."""
        tensors = list(_arg(args, kwargs, 0, "tensors"))
        dim = _arg(args, kwargs, 1, "dim", 0) % out.dim()
        operands = []
        for t in tensors:
            f = self.field(t)
            if f is not None:
                layout = list(f.layout)
                layout.insert(dim, ())
                operands.append((TensorField(f.axes, tuple(layout), f.size_dependent), t.dim() + 1))
        merged = self._merge(operands, out)
        layout = list(merged.layout)
        layout[dim] = (Factor(out.shape[dim]),) if out.shape[dim] > 1 else ()
        self.set(out, TensorField(merged.axes, tuple(layout), merged.size_dependent))

    def _getitem(self, x: Tensor, index: object, out: Tensor) -> None:
        f = self.field(x)
        index = index if isinstance(index, tuple) else (index,)
        if not all(i is Ellipsis or i is None or isinstance(i, (int, slice)) for i in index):
            raise UnsupportedOperationError(f"{self.where()}: indexing with tensors or lists")
        consumed = sum(i is not None and i is not Ellipsis for i in index)
        if Ellipsis in index:
            at = index.index(Ellipsis)
            index = index[:at] + (slice(None),) * (x.dim() - consumed) + index[at + 1 :]
        index = index + (slice(None),) * (x.dim() - sum(i is not None for i in index))
        d = 0
        axes, layout = list(f.axes), []
        for i in index:
            if i is None:
                layout.append(())
                continue
            trivial = isinstance(i, slice) and i == slice(None)
            a = None if trivial else whole_axis(f, d)
            if trivial:
                layout.append(f.layout[d])
            elif a is None:
                if d != 0:
                    self.channel_safe = False
                if isinstance(i, slice):
                    n = len(range(*i.indices(x.shape[d])))
                    layout.append((Factor(n),) if n > 1 else ())
            elif isinstance(i, int):  # one unit picked: the axis is gone, its field is that unit's
                unit = i % x.shape[d]
                picked = slice(unit, unit + 1)
                axes[a] = f.axes[a].with_arrays(f.axes[a].lo[picked], f.axes[a].hi[picked], IRREGULAR)
            else:
                start, stop, step = i.indices(x.shape[d])
                if step < 0:
                    raise UnsupportedOperationError(f"{self.where()}: reversing a spatial axis")
                axes[a] = slice_axis(f.axes[a], start, stop, step)
                layout.append((Factor(len(axes[a]), a),))
            d += 1
        self.set(out, TensorField((axes[0], axes[1]), tuple(layout), f.size_dependent))

    def _split(self, name, args, kwargs, outputs) -> None:
        x = args[0]
        f = self.field(x)
        if name == "narrow":
            dim, offsets = _arg(args, kwargs, 1, "dim"), [_arg(args, kwargs, 2, "start")]
        else:
            dim = _arg(args, kwargs, 2 if name != "unbind" else 1, "dim", 0)
            offsets = list(itertools.accumulate([0] + [o.shape[dim] for o in outputs[:-1]]))
        dim %= x.dim()
        a = whole_axis(f, dim)
        for out, offset in zip(outputs, offsets, strict=True):
            axes, layout = list(f.axes), list(f.layout)
            if name == "unbind":
                del layout[dim]
            else:
                layout[dim] = (Factor(out.shape[dim], a),) if a is not None else (Factor(out.shape[dim]),)
            if a is None:
                if dim != 0:
                    self.channel_safe = False
            elif name == "unbind":
                axes[a] = f.axes[a].with_arrays(f.axes[a].lo[offset : offset + 1], f.axes[a].hi[offset : offset + 1])
            else:
                axes[a] = slice_axis(f.axes[a], offset, offset + out.shape[dim], 1)
            self.set(out, TensorField((axes[0], axes[1]), tuple(layout), f.size_dependent))

    def _pad(self, args, kwargs, out) -> None:
        x = args[0]
        f = self.field(x)
        amounts = list(_arg(args, kwargs, 1, "pad"))
        mode = _arg(args, kwargs, 2, "mode", "constant")
        axes, layout = list(f.axes), list(f.layout)
        for k in range(len(amounts) // 2):
            d = x.dim() - 1 - k
            a = whole_axis(f, d)
            if a is not None:
                axes[a] = pad_axis(f.axes[a], amounts[2 * k], amounts[2 * k + 1], mode)
                layout[d] = (Factor(out.shape[d], a),)
            else:
                layout[d] = (Factor(out.shape[d]),) if out.shape[d] > 1 else ()
                if d != 0 and (amounts[2 * k] or amounts[2 * k + 1]):
                    self.channel_safe = False
        self.set(out, TensorField((axes[0], axes[1]), tuple(layout), f.size_dependent))


class _Stop(Exception):
    """Raised from a layer hook to end a forward pass once the layers needed have run."""


def _layer_geometry(module: nn.Module, inputs: tuple, out: Tensor) -> tuple[PerAxis, PerAxis, PerAxis, PerAxis]:
    if isinstance(module, nn.Linear):
        return None, None, None, None
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        padding = module.padding if isinstance(module.padding, str) else list(module.padding)
        return list(module.kernel_size), list(module.stride), padding, list(module.dilation)
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        bins = []
        for n, m in zip(inputs[0].shape[-2:], out.shape[-2:], strict=True):
            bins.append(GLOBAL if m == 1 else n // m if n % m == 0 else IRREGULAR)
        kernel = bins[0] if isinstance(bins[0], str) and bins[0] == bins[1] else bins
        return kernel, kernel, [0, 0], [1, 1]
    kernel = list(_pair(module.kernel_size))
    stride = list(_pair(module.stride or module.kernel_size))
    if isinstance(module, nn.LPPool2d):
        return kernel, stride, [0, 0], [1, 1]
    dilation = list(_pair(module.dilation)) if isinstance(module, nn.MaxPool2d) else [1, 1]
    return kernel, stride, list(_pair(module.padding)), dilation


def _dtype(model: nn.Module) -> torch.dtype:
    tensors = itertools.chain(model.parameters(), model.buffers())
    return next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)


def module_stack_hooks(model: nn.Module, stack: list[str]) -> list:
    """Keep ``stack`` holding the qualified names of the modules being run, innermost last."""

    def leave(module: nn.Module, inputs: tuple, output: object) -> None:
        stack.pop()

    handles = []
    for qualified, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(lambda m, i, q=qualified: stack.append(q)))
        handles.append(module.register_forward_hook(leave))
    return handles


def _run_trace(
    model: nn.Module, input_shape: tuple[int, int, int], device: str, stop_after: str | None, partial: bool
) -> Analysis:
    if device == "meta":
        replica = structural_copy(model, lambda t: torch.empty_like(t, device="meta"))
    else:
        replica = structural_copy(model, lambda t: t.detach())
    replica.eval()
    tracer = _Tracer()

    def on_layer(name: str, module: nn.Module, inputs: tuple, output: object) -> None:
        out = output[0] if isinstance(output, tuple) else output
        f = tracer.field(out)
        if f is not None:
            tracer.layers.append(LayerField(name, type(module).__name__, *_layer_geometry(module, inputs, out), f))
        if name == stop_after:
            raise _Stop

    handles = module_stack_hooks(replica, tracer.stack) + name_layers(replica, on_layer)
    channels, height, width = input_shape
    x = torch.zeros((1, channels, height, width), device=device, dtype=_dtype(model))
    tracer.set(
        x,
        TensorField(
            (AxisField.identity(height), AxisField.identity(width)),
            ((), plain_layout([channels])[0], (Factor(height, 0),), (Factor(width, 1),)),
        ),
    )
    try:
        with tracer:
            replica(x)
    except _Stop:
        pass
    except Exception:
        if not partial:
            raise
    finally:
        for handle in handles:
            handle.remove()
    return Analysis(input_shape, tracer.layers, tracer.channel_safe, tracer.notes)


def trace(
    model: nn.Module, input_shape: tuple[int, int, int], *, stop_after: str | None = None, partial: bool = False
) -> Analysis:
    """Run the model once on the meta device (on the CPU if it cannot run there) and collect the fields.

    With ``partial`` a failure part-way (an input too small for a later layer) keeps the
    layers traced before it; ``stop_after`` ends the pass after that layer.
    """
    try:
        return _run_trace(model, input_shape, "meta", stop_after, partial)
    except ReceptiveFieldError:
        raise
    except (NotImplementedError, RuntimeError):  # data-dependent control flow cannot run on meta
        return _run_trace(model, input_shape, "cpu", stop_after, partial)


def smallest_input_size(model: nn.Module, channels: int, at_least: int = 1) -> int | None:
    """The smallest side of a square input the model accepts (None above 8192), by bisection."""

    def fits(side: int) -> bool:
        try:
            trace(model, (channels, side, side))
        except InputTooSmallError:
            return False
        return True

    low, high = at_least, max(at_least, 1)
    while not fits(high):
        low, high = high + 1, high * 2
        if high > 8192:
            return None
    while low < high:
        middle = (low + high) // 2
        low, high = (middle + 1, high) if not fits(middle) else (low, middle)
    return high


def analyse(model: nn.Module, input_shape: Sequence[int]) -> Analysis:
    """The analytic field of every convolution, pooling and linear layer of ``model``.

    ``input_shape`` is one sample's (channels, height, width). Raises NoSpatialLayerError,
    InputTooSmallError (naming the smallest square input that works) or
    UnsupportedOperationError. The model itself is not modified.
    """
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape):
        raise ReceptiveFieldError(f"input shape must be three positive integers (C, H, W), got {input_shape!r}")
    try:
        analysis = trace(model, shape)
    except InputTooSmallError as error:
        smallest = smallest_input_size(model, shape[0], at_least=min(shape[1:]) + 1)
        hint = f"; the smallest square input it accepts is {smallest}x{smallest}" if smallest else ""
        raise InputTooSmallError(f"input {shape[1]}x{shape[2]} is too small: {error}{hint}") from None
    if not any(layer.kind != "Linear" for layer in analysis.layers):
        raise NoSpatialLayerError(
            f"{type(model).__name__} has no convolution or pooling layer acting on its input's height and "
            "width, so it has no receptive field to compute"
        )
    return analysis

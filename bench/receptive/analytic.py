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

Where paths merge (addition, concatenation along channels) the field is the union of the
paths' fields; if their centres differ the merge is noted as misaligned. An axis is
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

from bench.receptive.formulas import output_size

AFFINE, GLOBAL, IRREGULAR = "affine", "global", "irregular"
# Exact boxes of units that see no input pixel at all (pure padding): min/max ignore them.
NO_LO = np.int64(2**62)
NO_HI = -NO_LO

LAYER_TYPES = (
    nn.Conv2d,
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


@dataclass(frozen=True, eq=False)
class AxisField:
    """What the units along one axis of a map see of the same axis of the input.

    ``size``, ``jump`` and ``start`` are the theoretical field (``None`` unless ``kind`` is
    affine); ``lo[i]``..``hi[i]`` is the exact box of unit i (NO_LO/NO_HI if it sees
    nothing). A collapsed axis (after flatten or a reduction) has a single unit.
    """

    kind: str
    size: int | None
    jump: int | None
    start: int | None
    lo: np.ndarray
    hi: np.ndarray
    misaligned: bool = False

    @classmethod
    def identity(cls, n: int) -> AxisField:
        units = np.arange(n, dtype=np.int64)
        return cls(AFFINE, 1, 1, 0, units, units.copy())

    def __len__(self) -> int:
        return len(self.lo)

    def box(self, unit: int) -> tuple[int, int] | None:
        """The exact first and last input index unit ``unit`` is connected to."""
        lo, hi = int(self.lo[unit]), int(self.hi[unit])
        return (lo, hi) if lo <= hi else None

    def interval(self, unit: int) -> tuple[int, int] | None:
        """The theoretical interval of unit ``unit`` (affine axes only)."""
        if self.kind != AFFINE:
            return None
        first = unit * self.jump + self.start
        return first, first + self.size - 1

    def clipped(self, unit: int) -> bool:
        """Whether the border cuts this unit's field (its box is not its theoretical interval)."""
        return self.kind == AFFINE and self.box(unit) != self.interval(unit)

    def with_arrays(self, lo: np.ndarray, hi: np.ndarray, kind: str | None = None) -> AxisField:
        kind = kind or self.kind
        if kind != AFFINE:
            return AxisField(kind, None, None, None, lo, hi, self.misaligned)
        return AxisField(kind, self.size, self.jump, self.start, lo, hi, self.misaligned)


@dataclass(frozen=True, eq=False)
class TensorField:
    """The field of every unit of a tensor: one AxisField for h and one for w.

    ``dims`` are the tensor dimensions holding h and w (``None`` once an axis is collapsed).
    ``size_dependent`` is set once an operation whose geometry depends on the input size
    (adaptive pooling, global pooling) lies on some path: such fields change with the input.
    """

    axes: tuple[AxisField, AxisField]
    dims: tuple[int | None, int | None]
    size_dependent: bool = False


def window(axis: AxisField, units: int, kernel: int, stride: int, pad: int, dilation: int) -> AxisField:
    """A convolution or pooling window along one axis, producing ``units`` outputs."""
    taps = np.arange(units)[:, None] * stride - pad + dilation * np.arange(kernel)[None, :]
    inside = (taps >= 0) & (taps < len(axis))
    index = np.clip(taps, 0, len(axis) - 1)
    lo = np.where(inside, axis.lo[index], NO_LO).min(axis=1)
    hi = np.where(inside, axis.hi[index], NO_HI).max(axis=1)
    if axis.kind != AFFINE:
        return axis.with_arrays(lo, hi)
    return AxisField(
        AFFINE,
        axis.size + dilation * (kernel - 1) * axis.jump,
        axis.jump * stride,
        axis.start - pad * axis.jump,
        lo,
        hi,
        axis.misaligned,
    )


def adaptive_window(axis: AxisField, units: int) -> AxisField:
    """Adaptive pooling to ``units`` outputs: bin i is [floor(i n / m), ceil((i + 1) n / m))."""
    n = len(axis)
    if units > 1 and n % units == 0:
        return window(axis, units, n // units, n // units, 0, 1)
    i = np.arange(units)
    first = (i * n) // units
    end = -((-(i + 1) * n) // units)
    taps = first[:, None] + np.arange((end - first).max())[None, :]
    inside = taps < end[:, None]
    index = np.minimum(taps, n - 1)
    lo = np.where(inside, axis.lo[index], NO_LO).min(axis=1)
    hi = np.where(inside, axis.hi[index], NO_HI).max(axis=1)
    return axis.with_arrays(lo, hi, GLOBAL if units == 1 or axis.kind == GLOBAL else IRREGULAR)


def collapse(axis: AxisField) -> AxisField:
    """Every unit along the axis merged into one that sees the whole map: a global field."""
    return axis.with_arrays(axis.lo.min(keepdims=True), axis.hi.max(keepdims=True), GLOBAL)


def pad_axis(axis: AxisField, before: int, after: int, mode: str) -> AxisField:
    """F.pad along one axis (negative amounts crop); ``mode`` as in F.pad."""
    n = len(axis)
    source = np.arange(n + before + after) - before
    if mode == "constant":
        inside = (source >= 0) & (source < n)
    else:
        inside = np.ones(len(source), dtype=bool)
        if mode == "reflect":
            period = 2 * (n - 1) if n > 1 else 1
            source = np.abs((source + period) % period)
            source = np.where(source >= n, period - source, source)
        elif mode == "replicate":
            source = np.clip(source, 0, n - 1)
        elif mode == "circular":
            source = source % n
        else:
            raise UnsupportedOperationError(f"F.pad mode {mode!r} is not supported")
    index = np.clip(source, 0, n - 1)
    lo = np.where(inside, axis.lo[index], NO_LO)
    hi = np.where(inside, axis.hi[index], NO_HI)
    if axis.kind != AFFINE:
        return axis.with_arrays(lo, hi)
    return AxisField(AFFINE, axis.size, axis.jump, axis.start - before * axis.jump, lo, hi, axis.misaligned)


def slice_axis(axis: AxisField, start: int, stop: int, step: int) -> AxisField:
    """Units start, start + step, ... < stop of the axis (step > 0)."""
    lo, hi = axis.lo[start:stop:step], axis.hi[start:stop:step]
    if axis.kind != AFFINE:
        return axis.with_arrays(lo, hi)
    return AxisField(AFFINE, axis.size, axis.jump * step, axis.start + start * axis.jump, lo, hi, axis.misaligned)


def union(axes: Sequence[AxisField], units: int) -> AxisField:
    """The field of units that depend on all of ``axes`` (each of length ``units`` or 1)."""
    lo = np.min([np.broadcast_to(a.lo, units) for a in axes], axis=0)
    hi = np.max([np.broadcast_to(a.hi, units) for a in axes], axis=0)
    misaligned = any(a.misaligned for a in axes)
    if any(a.kind == GLOBAL for a in axes):
        return AxisField(GLOBAL, None, None, None, lo, hi, misaligned)
    regular = all(a.kind == AFFINE and len(a) == units for a in axes)
    if not regular or len({a.jump for a in axes}) > 1:
        return AxisField(IRREGULAR, None, None, None, lo, hi, misaligned)
    first = min(a.start for a in axes)
    last = max(a.start + a.size - 1 for a in axes)
    # Twice the centre, start + (size - 1) / 2, so that half-pixel centres compare exactly.
    misaligned = misaligned or len({2 * a.start + a.size - 1 for a in axes}) > 1
    return AxisField(AFFINE, last - first + 1, axes[0].jump, first, lo, hi, misaligned)


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

    ``channel_safe`` says whether the graph never selects or reshapes channels, so that a
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


def _pair(value: object) -> tuple[int, int]:
    if isinstance(value, int):
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


class _Tracer(TorchFunctionMode):
    """Follows one forward pass, attaching a TensorField to every tensor that depends on the input."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[int, tuple[Tensor, TensorField]] = {}
        self.stack: list[str] = []
        self.layers: list[LayerField] = []
        self.channel_safe = True
        self.notes: list[str] = []

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
            self._propagate(func, name, args, kwargs, sources, result, outputs)
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
        elif name in WINDOW_OPS:
            self._window(name, args, kwargs, sources, outputs[0])
        elif name in ADAPTIVE_OPS:
            self._adaptive(args[0], outputs[0])
        elif name == "linear":
            self._linear(args, kwargs, sources, outputs[0])
        elif name in VIEW_OPS:
            self._view(args[0], outputs[0])
        elif name in PERMUTE_OPS:
            self._permute(func, args, kwargs, outputs[0])
        elif name in REDUCTION_OPS:
            self._reduce(name, args, kwargs, outputs)
        elif name in SOFTMAX_OPS:
            self._softmax(args, kwargs, outputs[0])
        elif name == "cat":
            self._cat(args, kwargs, outputs[0])
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
        dims: list[int | None] = [None, None]
        for t in sources:
            f = self.field(t)
            for a in (0, 1):
                if dims[a] is None and f.dims[a] is not None:
                    dims[a] = f.dims[a] + out.dim() - t.dim()
        axes = []
        for a in (0, 1):
            units = out.shape[dims[a]] if dims[a] is not None else 1
            parts = []
            for t in sources:
                f = self.field(t)
                parts.append(f.axes[a] if f.dims[a] is not None else collapse(f.axes[a]))
            merged = union(parts, units)
            if merged.misaligned and not any(p.misaligned for p in parts):
                self.notes.append(f"{self.where()}: paths with misaligned centres merge along axis {'hw'[a]}")
            axes.append(merged)
        size_dependent = any(self.field(t).size_dependent for t in sources)
        return TensorField((axes[0], axes[1]), (dims[0], dims[1]), size_dependent)

    def _spatial_last(self, x: Tensor, op: str) -> TensorField:
        f = self.field(x)
        for a, expected in ((0, x.dim() - 2), (1, x.dim() - 1)):
            if f.dims[a] is not None and f.dims[a] != expected:
                raise UnsupportedOperationError(f"{self.where()}: {op} over dimensions other than the map's h and w")
        return f

    def _window(self, name, args, kwargs, sources, out) -> None:
        x = args[0]
        if any(t is not x for t in sources):
            raise UnsupportedOperationError(f"{self.where()}: {name} with weights that depend on the input")
        f = self._spatial_last(x, name)
        kernel, stride, padding, dilation = window_geometry(name, args, kwargs)
        axes = []
        for a in (0, 1):
            if f.dims[a] is None:
                axes.append(f.axes[a])
            else:
                units = out.shape[out.dim() - 2 + a]
                axes.append(window(f.axes[a], units, kernel[a], stride[a], padding[a], dilation[a]))
        dims = tuple(None if d is None else out.dim() - 2 + a for a, d in enumerate(f.dims))
        self.set(out, TensorField((axes[0], axes[1]), dims, f.size_dependent))

    def _adaptive(self, x: Tensor, out: Tensor) -> None:
        f = self._spatial_last(x, "adaptive pooling")
        axes = tuple(
            f.axes[a] if f.dims[a] is None else adaptive_window(f.axes[a], out.shape[out.dim() - 2 + a]) for a in (0, 1)
        )
        self.set(out, TensorField(axes, f.dims, True))

    def _linear(self, args, kwargs, sources, out) -> None:
        x = args[0]
        if any(t is not x for t in sources):
            raise UnsupportedOperationError(f"{self.where()}: linear with weights that depend on the input")
        f = self.field(x)
        last = x.dim() - 1
        axes = tuple(collapse(ax) if d == last else ax for ax, d in zip(f.axes, f.dims, strict=True))
        dims = tuple(None if d == last else d for d in f.dims)
        self.set(out, TensorField(axes, dims, f.size_dependent or last in f.dims))

    def _view(self, x: Tensor, out: Tensor) -> None:
        f = self.field(x)
        shape, new = list(x.shape), list(out.shape)
        dims = tuple(None if d is None else _same_dim(shape, new, d) for d in f.dims)
        axes = tuple(ax if d is not None else collapse(ax) for ax, d in zip(f.axes, dims, strict=True))
        kept_channels = new[:2] == shape[:2] and all(d is None or d >= 2 for d in dims)
        flattened = len(new) == 2 and new[0] == shape[0]
        if not (kept_channels or flattened):
            self.channel_safe = False
        collapsed = any(was is not None and now is None for was, now in zip(f.dims, dims, strict=True))
        self.set(out, TensorField(axes, dims, f.size_dependent or collapsed))

    def _permute(self, func, args, kwargs, out) -> None:
        x = args[0]
        f = self.field(x)
        # Apply the same permutation to a tensor whose dimension sizes are all different.
        marker = torch.empty(tuple(range(2, 2 + x.dim())), device="meta")
        order = [size - 2 for size in func(marker, *args[1:], **kwargs).shape]
        dims = tuple(None if d is None else order.index(d) for d in f.dims)
        if order[:2] != [0, 1]:
            self.channel_safe = False
        self.set(out, TensorField(f.axes, dims, f.size_dependent))

    def _reduce(self, name, args, kwargs, outputs) -> None:
        x = args[0]
        f = self.field(x)
        dim = kwargs.get("dim", kwargs.get("axis", args[2] if name == "norm" and len(args) > 2 else None))
        if dim is None and name != "norm" and len(args) > 1 and not isinstance(args[1], bool):
            dim = args[1]
        dims_given = [dim] if isinstance(dim, int) else dim
        reduced = set(range(x.dim())) if dim is None else {d % x.dim() for d in dims_given}
        keep = outputs[0].dim() == x.dim()
        axes, dims = [], []
        for ax, d in zip(f.axes, f.dims, strict=True):
            if d is None or d in reduced:
                axes.append(collapse(ax) if d is not None else ax)
                dims.append(d if keep and d is not None else None)
            else:
                axes.append(ax)
                dims.append(d if keep else d - sum(r < d for r in reduced))
        size_dependent = f.size_dependent or any(d in reduced for d in f.dims if d is not None)
        for out in outputs:
            self.set(out, TensorField((axes[0], axes[1]), (dims[0], dims[1]), size_dependent))

    def _softmax(self, args, kwargs, out) -> None:
        x = args[0]
        f = self.field(x)
        dim = _arg(args, kwargs, 1, "dim")
        dim = None if dim is None else dim % x.dim()
        axes = tuple(
            ax.with_arrays(*(np.broadcast_to(v, len(ax)).copy() for v in (ax.lo.min(), ax.hi.max())), kind=GLOBAL)
            if d == dim or dim is None
            else ax
            for ax, d in zip(f.axes, f.dims, strict=True)
        )
        self.set(out, TensorField(axes, f.dims, f.size_dependent or dim in f.dims))

    def _cat(self, args, kwargs, out) -> None:
        tensors = list(_arg(args, kwargs, 0, "tensors"))
        dim = _arg(args, kwargs, 1, "dim", 0) % out.dim()
        with_field = [t for t in tensors if self.field(t) is not None]
        reference = self._broadcast(with_field, out)
        if dim not in reference.dims:  # channels: each unit's field is the union over the pieces
            self.set(out, reference)
            return
        a = reference.dims.index(dim)
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
        self.set(out, TensorField((axes[0], axes[1]), reference.dims, reference.size_dependent))

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
        new_dim, d = 0, 0
        axes, dims = list(f.axes), list(f.dims)
        for i in index:
            if i is None:
                new_dim += 1
                continue
            a = f.dims.index(d) if d in f.dims else None
            trivial = isinstance(i, slice) and i == slice(None)
            if a is None and not trivial and d != 0:
                self.channel_safe = False
            if isinstance(i, int):
                if a is not None:  # one unit picked: the axis is gone, its field is that unit's
                    unit = i % x.shape[d]
                    picked = slice(unit, unit + 1)
                    axes[a] = f.axes[a].with_arrays(f.axes[a].lo[picked], f.axes[a].hi[picked], IRREGULAR)
                    dims[a] = None
            else:
                if a is not None:
                    start, stop, step = i.indices(x.shape[d])
                    if step < 0:
                        raise UnsupportedOperationError(f"{self.where()}: reversing a spatial axis")
                    axes[a] = slice_axis(f.axes[a], start, stop, step)
                    dims[a] = new_dim
                new_dim += 1
            d += 1
        self.set(out, TensorField((axes[0], axes[1]), (dims[0], dims[1]), f.size_dependent))

    def _split(self, name, args, kwargs, outputs) -> None:
        x = args[0]
        f = self.field(x)
        if name == "narrow":
            dim, offsets = _arg(args, kwargs, 1, "dim"), [_arg(args, kwargs, 2, "start")]
        else:
            dim = _arg(args, kwargs, 2 if name != "unbind" else 1, "dim", 0)
            offsets = list(itertools.accumulate([0] + [o.shape[dim] for o in outputs[:-1]]))
        dim %= x.dim()
        if dim not in f.dims:
            if dim != 0:
                self.channel_safe = False
            for out in outputs:
                self.set(out, f)
            return
        a = f.dims.index(dim)
        for out, offset in zip(outputs, offsets, strict=True):
            axes = list(f.axes)
            dims = list(f.dims)
            if name == "unbind":
                axes[a] = f.axes[a].with_arrays(f.axes[a].lo[offset : offset + 1], f.axes[a].hi[offset : offset + 1])
                dims[a] = None
                dims = [d - 1 if d is not None and d > dim else d for d in dims]
            else:
                axes[a] = slice_axis(f.axes[a], offset, offset + out.shape[dim], 1)
            self.set(out, TensorField((axes[0], axes[1]), (dims[0], dims[1]), f.size_dependent))

    def _pad(self, args, kwargs, out) -> None:
        x = args[0]
        f = self.field(x)
        amounts = list(_arg(args, kwargs, 1, "pad"))
        mode = _arg(args, kwargs, 2, "mode", "constant")
        axes = list(f.axes)
        for k in range(len(amounts) // 2):
            d = x.dim() - 1 - k
            if d in f.dims:
                a = f.dims.index(d)
                axes[a] = pad_axis(f.axes[a], amounts[2 * k], amounts[2 * k + 1], mode)
            elif d != 0 and (amounts[2 * k] or amounts[2 * k + 1]):
                self.channel_safe = False
        self.set(out, TensorField((axes[0], axes[1]), f.dims, f.size_dependent))


def _same_dim(shape: list[int], new: list[int], d: int) -> int | None:
    """The dimension of a reshaped tensor that holds dimension ``d`` of the original unchanged."""
    before, after = math.prod(shape[:d]), math.prod(shape[d + 1 :])
    for j, size in enumerate(new):
        if size == shape[d] and math.prod(new[:j]) == before and math.prod(new[j + 1 :]) == after:
            return j
    return None


class _Stop(Exception):
    """Raised from a layer hook to end a forward pass once the layers needed have run."""


def _layer_geometry(module: nn.Module, inputs: tuple, out: Tensor) -> tuple[PerAxis, PerAxis, PerAxis, PerAxis]:
    if isinstance(module, nn.Linear):
        return None, None, None, None
    if isinstance(module, nn.Conv2d):
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
    tracer.set(x, TensorField((AxisField.identity(height), AxisField.identity(width)), (2, 3)))
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

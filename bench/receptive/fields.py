"""The fields an analytic trace attaches to tensors, and the rules that transform them.

``AxisField``: what the units along one axis of a map see of the same axis of the input
(theoretical field and exact boxes). ``TensorField``: both axes of a tensor, with its
``layout``: which digits of each axis's unit index each tensor dimension holds (``Factor``).
The functions below are the receptive-field rules of single operations on an axis (a
window, adaptive pooling, padding, slicing, a union of paths, a gather of taps) and on a
layout (a reshape, a merge of digits, depth-to-space); ``bench.receptive.analytic``
applies them as it follows a forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

AFFINE, GLOBAL, IRREGULAR = "affine", "global", "irregular"
# Exact boxes of units that see no input pixel at all (pure padding): min/max ignore them.
NO_LO = np.int64(2**62)
NO_HI = -NO_LO


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


@dataclass(frozen=True)
class Factor:
    """One digit of a tensor dimension's index, the dimension's index read in row-major order.

    ``size`` values; ``axis`` 0 (h) or 1 (w) when the digit is part of that spatial axis's
    unit index, where it weighs ``place`` (1 for the lowest digit); None for batch, channels
    and anything else. A map's h dimension is ``(Factor(H, 0),)``; after a 2x space-to-depth
    the channel dimension is ``(Factor(C, None), Factor(2, 0), Factor(2, 1))`` and the map's
    dimensions hold the high digits, ``(Factor(H // 2, 0, 2),)`` and ``(Factor(W // 2, 1, 2),)``.
    """

    size: int
    axis: int | None = None
    place: int = 1


Layout = tuple[tuple[Factor, ...], ...]


@dataclass(frozen=True, eq=False)
class TensorField:
    """The field of every unit of a tensor: one AxisField for h and one for w.

    ``layout`` says, per tensor dimension, which digits of which spatial axis it holds (see
    Factor): unit u of axis a is the unit whose digits are u's mixed-radix digits. An axis
    with a single unit may appear nowhere. ``size_dependent`` is set once an operation whose
    geometry depends on the input size (adaptive pooling, global pooling) lies on some
    path: such fields change with the input.
    """

    axes: tuple[AxisField, AxisField]
    layout: Layout
    size_dependent: bool = False

    @property
    def dims(self) -> tuple[int | None, int | None]:
        """The dimension holding all of each axis as one plain digit, or None."""
        found: list[int | None] = [None, None]
        for d, factors in enumerate(self.layout):
            if len(factors) == 1 and factors[0].axis is not None and factors[0].size == len(self.axes[factors[0].axis]):
                found[factors[0].axis] = d
        return found[0], found[1]

    def digits(self, a: int) -> list[tuple[int, int, Factor]]:
        """(dimension, position in it, factor) of axis ``a``'s digits, highest place first."""
        found = [(d, k, f) for d, fs in enumerate(self.layout) for k, f in enumerate(fs) if f.axis == a]
        return sorted(found, key=lambda item: -item[2].place)

    def boxes_at(self, fixed: dict[int, int]) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
        """The exact box, per axis, of the union of all units at tensor index ``fixed``
        (dimension -> index; the other dimensions, channels included, take every value)."""
        return self._union_at(fixed, lambda axis: (axis.lo, axis.hi))

    def intervals_at(self, fixed: dict[int, int]) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
        """The theoretical interval per axis of the units at tensor index ``fixed`` (None
        for an axis that is not affine)."""
        return self._union_at(fixed, lambda axis: _theory(axis) if axis.kind == AFFINE else None)

    def _union_at(self, fixed: dict[int, int], arrays: Callable) -> tuple:
        boxes = []
        for a, axis in enumerate(self.axes):
            pair = arrays(axis)
            if pair is None:
                boxes.append(None)
                continue
            digits = self.digits(a)
            index: list[object] = [slice(None)] * len(digits)
            for d, value in fixed.items():
                sizes = [f.size for f in self.layout[d]]
                for k in reversed(range(len(sizes))):
                    value, digit = divmod(value, sizes[k])
                    for j, (dd, kk, _) in enumerate(digits):
                        if (dd, kk) == (d, k):
                            index[j] = digit
            shape = [f.size for _, _, f in digits] or [len(axis)]
            if not digits:
                index = [slice(None)]
            lo, hi = (np.asarray(v).reshape(shape)[tuple(index)] for v in pair)
            lo, hi = int(np.min(lo)), int(np.max(hi))
            boxes.append((lo, hi) if lo <= hi else None)
        return boxes[0], boxes[1]

    def unit_index(self, sizes: Sequence[int], unit: tuple[int, int]) -> tuple[tuple[int, ...], tuple[object, ...]]:
        """A shape to view a tensor of shape ``sizes`` as (one dimension per digit) and the
        index, in that view, of every element (all samples and channels) of unit ``unit`` =
        (h, w). A dimension with no spatial digit may have any length (a larger batch)."""
        shape, index = [], []
        for factors, size in zip(self.layout, sizes, strict=True):
            if all(f.axis is None for f in factors):
                shape.append(size)
                index.append(slice(None))
                continue
            for f in factors:
                shape.append(f.size)
                index.append(slice(None) if f.axis is None else (unit[f.axis] // f.place) % f.size)
        return tuple(shape), tuple(index)


def plain_layout(shape: Sequence[int]) -> Layout:
    """The layout of a tensor with no spatial digit."""
    return tuple((Factor(n),) if n != 1 else () for n in shape)


def _theory(axis: AxisField) -> tuple[np.ndarray, np.ndarray]:
    """First and last input index of every unit's theoretical interval (affine axes)."""
    first = np.arange(len(axis), dtype=np.int64) * axis.jump + axis.start
    return first, first + axis.size - 1


def from_intervals(first: np.ndarray, last: np.ndarray, lo: np.ndarray, hi: np.ndarray, misaligned: bool) -> AxisField:
    """An axis whose units have theoretical intervals [first, last] and exact boxes [lo, hi]:
    affine when the intervals are equal and evenly spaced, irregular otherwise."""
    sizes, steps = last - first + 1, np.diff(first)
    if len(first) > 1 and (sizes == sizes[0]).all() and (steps == steps[0]).all() and steps[0] > 0:
        return AxisField(AFFINE, int(sizes[0]), int(steps[0]), int(first[0]), lo, hi, misaligned)
    return AxisField(IRREGULAR, None, None, None, lo, hi, misaligned)


def gather(axis: AxisField, taps: np.ndarray, inside: np.ndarray, reach: np.ndarray) -> AxisField:
    """Unit i of the result is connected to units ``taps[i, k]`` of ``axis`` where ``inside[i, k]``.

    ``reach`` marks the taps the theoretical field counts: those inside, and for windows
    the ones that land in padding, whose intervals extend the axis's progression.
    """
    index = np.clip(taps, 0, len(axis) - 1)
    lo = np.where(inside, axis.lo[index], NO_LO).min(axis=1)
    hi = np.where(inside, axis.hi[index], NO_HI).max(axis=1)
    if axis.kind != AFFINE or not reach.any(axis=1).all():
        return axis.with_arrays(lo, hi, GLOBAL if axis.kind == GLOBAL else IRREGULAR)
    first = np.where(reach, taps * axis.jump + axis.start, NO_LO).min(axis=1)
    last = np.where(reach, taps * axis.jump + axis.start + axis.size - 1, NO_HI).max(axis=1)
    return from_intervals(first, last, lo, hi, axis.misaligned)


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
            raise ValueError(f"F.pad mode {mode!r} is not supported (valid: constant, reflect, replicate, circular)")
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


def _atoms(layout: Layout) -> list[Factor]:
    """The digits of all dimensions in row-major order, neighbours that are one digit merged:
    adjacent non-spatial digits, and adjacent digits of one axis whose places run on."""
    merged: list[Factor] = []
    for f in (f for factors in layout for f in factors if f.size != 1):
        last = merged[-1] if merged else None
        if last is not None and last.axis is None and f.axis is None:
            merged[-1] = Factor(last.size * f.size)
        elif last is not None and f.axis is not None and last.axis == f.axis and last.place == f.place * f.size:
            merged[-1] = Factor(last.size * f.size, f.axis, f.place)
        else:
            merged.append(f)
    return merged


def relayout(layout: Layout, shape: Sequence[int]) -> Layout | None:
    """The layout after reshaping to ``shape``: digits split or merged along with the index,
    or None where a new dimension boundary cuts a spatial digit unevenly."""
    atoms, out = _atoms(layout), []
    for size in shape:
        taken: list[Factor] = []
        while math.prod(f.size for f in taken) < size:
            if not atoms:
                return None
            have, atom = math.prod(f.size for f in taken), atoms.pop(0)
            need = size // have if size % have == 0 else 0
            if need and atom.size % need == 0 and atom.size > need:  # split: the high part stays here
                taken.append(Factor(need, atom.axis, atom.place * (atom.size // need)))
                atoms.insert(0, Factor(atom.size // need, atom.axis, atom.place))
            elif need and need % atom.size == 0:
                taken.append(atom)
            else:
                return None
        out.append(tuple(taken))
    return tuple(out) if not atoms else None


def renumbered(layout: Layout, axes: Sequence[int]) -> Layout:
    """``layout`` with the places of the given axes' digits recomputed from their sizes."""
    places: dict[tuple[int, int], int] = {}
    for a in axes:
        found = sorted(
            ((d, k, f) for d, fs in enumerate(layout) for k, f in enumerate(fs) if f.axis == a),
            key=lambda item: -item[2].place,
        )
        place = 1
        for d, k, f in reversed(found):
            places[(d, k)] = place
            place *= f.size
    return tuple(
        tuple(Factor(f.size, f.axis, places[(d, k)]) if (d, k) in places else f for k, f in enumerate(fs))
        for d, fs in enumerate(layout)
    )


def union_digits(field: TensorField, removed: set[tuple[int, int]]) -> TensorField:
    """Units that depend on every value of the digits ``removed`` ((dimension, position)):
    each new unit's field is the union over those digits, which stop being spatial.

    Merging the lowest digit of an axis is a window (2 units at a time for a 2x
    space-to-depth); merging all of an axis's digits leaves one unit that sees the whole map.
    """
    axes = []
    for a, axis in enumerate(field.axes):
        digits = field.digits(a)
        gone = tuple(j for j, (d, k, f) in enumerate(digits) if (d, k) in removed)
        if not any(digits[j][2].size > 1 for j in gone):
            axes.append(axis)
            continue
        shape = [f.size for _, _, f in digits]
        lo = axis.lo.reshape(shape).min(axis=gone).ravel()
        hi = axis.hi.reshape(shape).max(axis=gone).ravel()
        if len(lo) == 1:
            axes.append(axis.with_arrays(lo, hi, GLOBAL))
        elif axis.kind != AFFINE:
            axes.append(axis.with_arrays(lo, hi))
        else:
            first, last = _theory(axis)
            first = first.reshape(shape).min(axis=gone).ravel()
            last = last.reshape(shape).max(axis=gone).ravel()
            axes.append(from_intervals(first, last, lo, hi, axis.misaligned))
    layout = tuple(
        tuple(Factor(f.size) if (d, k) in removed and f.axis is not None else f for k, f in enumerate(fs))
        for d, fs in enumerate(field.layout)
    )
    collapsed = any(len(b) == 1 < len(a) for a, b in zip(field.axes, axes, strict=True))
    return TensorField((axes[0], axes[1]), renumbered(layout, (0, 1)), field.size_dependent or collapsed)


def absorb(field: TensorField, d: int) -> TensorField:
    """Dimension ``d``'s non-spatial digits made part of the one axis whose digits it holds:
    its units repeat the field of the unit they came from (pixel shuffle, depth-to-space)."""
    factors = field.layout[d]
    spatial = {f.axis for f in factors if f.axis is not None}
    if len(spatial) != 1 or all(f.axis is not None for f in factors):
        return field
    a = spatial.pop()
    if any(dd != d for dd, _, _ in field.digits(a)):
        return field
    n = math.prod(f.size for f in factors)
    units = np.arange(n, dtype=np.int64)
    source = np.zeros(n, dtype=np.int64)
    rest = units.copy()
    for f in reversed(factors):
        rest, digit = np.divmod(rest, f.size)
        if f.axis is not None:
            source += digit * f.place
    axis = field.axes[a]
    reached = np.ones((n, 1), dtype=bool)
    axes = list(field.axes)
    axes[a] = gather(axis, source[:, None], reached, reached)
    layout = list(field.layout)
    layout[d] = (Factor(n, a, 1),)
    return TensorField((axes[0], axes[1]), tuple(layout), field.size_dependent)


def whole_axis(field: TensorField, d: int) -> int | None:
    """The axis dimension ``d`` holds entirely as one digit, or None if it holds no spatial digit.

    Raises ValueError (which the tracer reports as UnsupportedOperationError, naming the
    operation) when it holds part of an axis or digits of both: a window or a slice along
    it has no per-axis field.
    """
    factors = field.layout[d]
    if len(factors) == 1 and factors[0].axis is not None and factors[0].size == len(field.axes[factors[0].axis]):
        return factors[0].axis
    factors = [f for f in factors if f.size > 1]
    if not any(f.axis is not None for f in factors):
        return None
    held = ", ".join(
        f"{f.size} {'hw'[f.axis]}-units of weight {f.place}" if f.axis is not None else f"{f.size} others"
        for f in factors
    )
    raise ValueError(f"dimension {d} holds digits of the spatial axes ({held}) rather than one whole axis")

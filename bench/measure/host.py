"""What a training step costs the host: synchronisations, enqueue time, kernel launches.

A GPU step is fast only while the host stays ahead of the device. Two things stop it:

- **Host syncs.** An operation that reads a device tensor's value on the host (``.item()``,
  ``bool(t)``, ``nonzero``, a blocking copy to the CPU) waits for every queued kernel, so the
  device drains and then idles while the host queues the rest of the step. GradScaler with a
  non-fused optimizer does this every step (``GradScaler._maybe_opt_step`` reads
  ``found_inf`` with ``.item()``). ``count_host_syncs`` counts them in one untimed step: on
  CUDA with ``torch.cuda.set_sync_debug_mode("warn")``, which warns at every synchronising
  CUDA call; elsewhere with ``HostReadCounter``, a ``TorchFunctionMode`` that counts the
  operations that would synchronise if their tensor were on a CUDA device.
- **Launch rate.** Textbook (per-parameter) optimizers launch several kernels per parameter;
  with small kernels the device finishes each before the host has queued the next. The
  host clock alone cannot show this: once the driver's launch queue is full the host blocks
  on it, so host time per step equals device time whether the host or the device is the
  bottleneck. ``profile_step`` therefore reads the device's own record of one untimed step
  (``torch.profiler`` with CUDA activity only, which adds no per-operator work on the host):
  the kernels launched, the time the device was busy and the span from the step's first
  device activity to its last. A case is host-bound when the device was busy for less than
  ``HOST_BOUND_BUSY`` of that span, i.e. it waited for the host for more than a tenth of the
  step. Both figures come from the same profiled step: tracing slows a launch-heavy step
  (on an H100, a step of 47.5 ms ran 64.4 ms busy while profiled), so held against the
  unprofiled median step time the busy time could never fall below it.

``HostTimer`` keeps the host clock around every timed step's Python code beside it: on
CUDA that is the enqueue time (the call returns before the device is done) and, when it is
far below the device's step time, the host had time to spare.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType

import torch
from torch.optim import Optimizer
from torch.overrides import TorchFunctionMode

from bench.measure import timing

#: Device busy time below this fraction of the profiled step's device span flags the case host-bound.
HOST_BOUND_BUSY = 0.9
#: The warning ``torch.cuda.set_sync_debug_mode("warn")`` gives at each synchronising call
#: (c10/cuda/CUDAFunctions.cpp, ``warn_or_error_on_sync``).
SYNC_WARNING = "called a synchronizing CUDA operation"
#: Host-side CUDA runtime and driver calls that launch one kernel each (profiler names).
LAUNCH_CALLS = frozenset({"cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx"})

#: Tensor operations that return a value on the host (they wait for the tensor's producer
#: on CUDA), and operations whose output size depends on the data (the host must read it).
_HOST_READS = frozenset(
    {"item", "tolist", "__bool__", "is_nonzero", "__float__", "__int__", "__index__", "numpy", "cpu"}
)
_DATA_DEPENDENT_SHAPES = frozenset({"nonzero", "argwhere", "masked_select", "unique", "unique_consecutive"})


def host_resident_tensors(optimizer: Optimizer) -> set[int]:
    """``id`` of the optimizer's state tensors that stay on the host even in a CUDA run:
    torch.optim's ``step`` counters, unless the group is ``capturable`` or ``fused``
    (torch/optim/adam.py and sgd.py, ``_init_group``). Reading them never synchronises."""
    resident = set()
    for group in optimizer.param_groups:
        if group.get("capturable") or group.get("fused"):
            continue
        for param in group["params"]:
            step = optimizer.state.get(param, {}).get("step")
            if isinstance(step, torch.Tensor):
                resident.add(id(step))
    return resident


class HostReadCounter(TorchFunctionMode):
    """Counts, while active, the tensor operations that would synchronise the host with a
    CUDA device: reads of a value on the host (``item``, ``bool``, ``tolist``, ``cpu``, a
    blocking ``to`` onto the CPU, ...) and operations with data-dependent output shapes
    (``nonzero``, ``masked_select``, indexing by a boolean mask, ...). Tensors in ``host_resident`` (ids) are skipped.
    On the CPU, where host and device are one, this is what ``set_sync_debug_mode`` would
    report for the same code on CUDA; ``counts`` has the number per operation name."""

    def __init__(self, host_resident: Iterable[int] = ()) -> None:
        super().__init__()
        self.host_resident = set(host_resident)
        self.counts: dict[str, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 (torch's protocol)
        # The mode is off while this runs, so what ``func`` calls (float -> item) is not
        # seen again: each operation the step calls counts once.
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if self._syncs(name, args, kwargs):
            self.counts[name] = self.counts.get(name, 0) + 1
        return func(*args, **kwargs)

    def _syncs(self, name: str, args: tuple, kwargs: dict) -> bool:
        tensor = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if tensor is None or id(tensor) in self.host_resident:
            return False
        if name in _HOST_READS or name in _DATA_DEPENDENT_SHAPES:
            return True
        if name in ("__getitem__", "__setitem__"):
            return _has_mask(args[1] if len(args) > 1 else None)
        if name == "to" and not kwargs.get("non_blocking", False):
            targets = [*args[1:], kwargs.get("device")]
            return any(_is_host(target) for target in targets)
        return False

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _has_mask(index: object) -> bool:
    """A boolean tensor in an index: indexing by it needs its count of True on the host."""
    if isinstance(index, tuple):
        return any(_has_mask(part) for part in index)
    return isinstance(index, torch.Tensor) and index.dtype in (torch.bool, torch.uint8)


def _is_host(target: object) -> bool:
    if isinstance(target, torch.device):
        return target.type == "cpu"
    return isinstance(target, str) and target.split(":")[0] == "cpu"


@contextlib.contextmanager
def cuda_sync_warnings(cuda: ModuleType = torch.cuda) -> Iterator[list[warnings.WarningMessage]]:
    """While active, every synchronising CUDA call warns (``set_sync_debug_mode("warn")``)
    and the warnings land in the yielded list instead of on stderr; the previous mode comes
    back afterwards. ``cuda`` is a parameter so the logic is testable without a GPU."""
    previous = cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # the same call site warns every time, not once
        cuda.set_sync_debug_mode("warn")
        try:
            yield caught
        finally:
            cuda.set_sync_debug_mode(previous)


def count_host_syncs(
    step: Callable[[], None], device: torch.device, optimizer: Optimizer, cuda: ModuleType = torch.cuda
) -> tuple[int, str]:
    """Run ``step`` once and return (host syncs in it, how they were counted):
    ``cuda_sync_debug_mode`` on CUDA (the driver-level truth), ``host_reads`` elsewhere
    (``HostReadCounter``, skipping the optimizer's host-resident step counters)."""
    if device.type == "cuda":
        with cuda_sync_warnings(cuda) as caught:
            step()
        return sum(SYNC_WARNING in str(w.message) for w in caught), "cuda_sync_debug_mode"
    with HostReadCounter(host_resident_tensors(optimizer)) as counter:
        step()
    return counter.total, "host_reads"


@dataclass(frozen=True)
class DeviceActivity:
    """What the device did in one profiled step: ``launches`` (kernel launches), ``busy_ms``
    (the union of its activity intervals: kernels, copies, memsets) and ``span_ms`` (from the
    start of its first activity to the end of its last)."""

    launches: int
    busy_ms: float
    span_ms: float


def device_activity(events: Iterable[object]) -> DeviceActivity:
    """The device's activity in profiler events (objects with ``name``, ``device_type`` and
    ``time_range.start``/``.end`` in µs, as ``torch.profiler.profile().events()`` gives).
    Launches are the host-side launch calls (``LAUNCH_CALLS``) where the trace has them, else
    the kernels the device ran (neither copies nor memsets)."""
    calls = kernels = 0
    intervals = []
    for event in events:
        if event.name in LAUNCH_CALLS:
            calls += 1
        elif event.device_type == torch.autograd.DeviceType.CUDA:
            intervals.append((event.time_range.start, event.time_range.end))
            kernels += not event.name.startswith(("Memcpy", "Memset"))
    busy_us, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        start = max(start, reach)
        if end > start:
            busy_us += end - start
        reach = max(reach, end)
    span_us = max(end for _, end in intervals) - min(start for start, _ in intervals) if intervals else 0.0
    return DeviceActivity(calls or kernels, busy_us / 1e3, span_us / 1e3)


def profile_step(step: Callable[[], None]) -> DeviceActivity | None:
    """The device's activity in one CUDA step, read by ``torch.profiler`` with CUDA activity
    only; the device is drained before and after so the profile holds that step alone. None
    when the profiler saw no device activity at all (CUPTI unavailable, e.g. without the
    permission to profile): a CUDA training step always launches kernels."""
    # Without teardown Kineto leaves CUPTI attached after profiling, which slows every later
    # kernel launch (pytorch/pytorch#144455); the variable is read when profiling stops.
    os.environ.setdefault("TEARDOWN_CUPTI", "1")
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        step()
        torch.cuda.synchronize()
    activity = device_activity(profile.events())
    return activity if activity.busy_ms > 0 else None


def probe_step(step: Callable[[], None], device: torch.device, optimizer: Optimizer, compiled: bool) -> dict:
    """Record fields from untimed steps, run after the timed ones: host syncs per step (one
    step), and on CUDA the kernel launches, device busy time and device span of one profiled
    step. A compiled case is not counted off CUDA: a TorchFunctionMode changes what Dynamo's
    guards see and would make it recompile."""
    out: dict = {}
    if device.type == "cuda" or not compiled:
        out["host_syncs_per_step"], out["host_syncs_source"] = count_host_syncs(step, device, optimizer)
    if device.type == "cuda":
        activity = profile_step(step)
        out["kernel_launches_per_step"] = activity and activity.launches
        out["device_busy_ms"] = activity and activity.busy_ms
        out["device_span_ms"] = activity and activity.span_ms
    return out


class HostTimer:
    """Wraps the phases of a step so that each call's host time is kept: ``phases`` is the
    wrapped list, ``per_step_ms()`` the host milliseconds of every step (its phases summed).
    The wrapper costs two calls of ``now`` (a clock in seconds, ``time.perf_counter``) per phase."""

    def __init__(self, phases: Sequence[Callable[[], None]], now: Callable[[], float] = time.perf_counter) -> None:
        self.now = now
        self.samples_ms: list[list[float]] = [[] for _ in phases]
        self.phases = [self._timed(phase, samples) for phase, samples in zip(phases, self.samples_ms, strict=True)]

    def _timed(self, phase: Callable[[], None], samples: list[float]) -> Callable[[], None]:
        def timed() -> None:
            start = self.now()
            phase()
            samples.append((self.now() - start) * 1e3)

        return timed

    def per_step_ms(self) -> list[float]:
        return [sum(parts) for parts in zip(*self.samples_ms, strict=True)]


def host_fields(host_step_ms: Sequence[float], device_busy_ms: float | None, device_span_ms: float | None) -> dict:
    """``host_time_ms`` (median host time per timed step) and ``host_bound``: in the profiled
    step the device was busy for less than ``HOST_BOUND_BUSY`` of its span (None where the
    device's activity is unknown, e.g. on the CPU, where host and device are one)."""
    known = device_busy_ms is not None and device_span_ms
    host_bound = device_busy_ms < HOST_BOUND_BUSY * device_span_ms if known else None
    return {"host_time_ms": timing.summarize(host_step_ms).median, "host_bound": host_bound}

"""Optimizer-step cases: ``optimizer.step()`` alone, placed against the memory-bandwidth limit.

A case is one registry optimizer on one model's real parameter shapes, in one precision (the
dtype of the parameters, gradients and, in every registry optimizer, the state). The
gradients are fixed random tensors and the state already exists (``warmup`` untimed steps),
so the timed function is exactly ``optimizer.step()``, timed like a training step
(``bench.measure.timing``: CUDA events on a GPU, the host clock on the CPU; every sample kept).

A step has three times, which coincide on the CPU (the processor that runs the kernels also
runs the Python that calls them) and part on a GPU:

- wall time (``step_time_ms``): steps timed as they come, CUDA events in program order, so a
  device waiting for the host counts, as in training;
- host time (``host_time_ms``): the host clock around each timed step's call (on CUDA, the
  time to queue it: grouping tensors, Python, launches);
- device time (``device_time_ms``): the device's own time for the step's kernels, from many
  steps queued behind a device-side delay so that the host is far ahead
  (``timing.queued_times``), or, where that cannot be arranged, from the profiler's busy time
  of one step.

A step whose device time is below 0.9 x its wall time is host-bound (``host_bound``): the
device waited for the host for more than a tenth of it.

Each record then says how close the step came to the physical limit:

- ``compulsory_bytes_per_param``: what the algorithm must move (28 B for fp32 Adam, 20 B
  for SGDM; ``optimizers.traffic``), so ``achieved_bandwidth_gbs`` = compulsory bytes x
  parameters / median device time: what the step's kernels reached.
- The limit is the device's bandwidth for an in-place update kernel (``bench.measure.bandwidth``),
  measured in the same run twice: on DRAM-sized arrays (``measured_bandwidth_gbs``, by the
  caller) and on arrays as large as the case's working set, its parameters, gradients and
  state (``working_set_bandwidth_gbs``): a small model's working set stays in the
  last-level cache, whose bandwidth is higher. ``bandwidth_fraction`` is achieved / the
  working-set limit (the roofline position), ``dram_bandwidth_fraction`` achieved / the DRAM
  limit, and ``wall_bandwidth_fraction`` the same as ``bandwidth_fraction`` on wall time: the
  share of the step as a user waits for it that the memory limit accounts for.
- ``traffic_bytes_per_param``: what the implementation's kernels actually move, counted by
  ``count_traffic`` over one untimed step, and ``traffic_bandwidth_gbs`` at the same device
  time: an implementation near the bandwidth on this figure but far below on the compulsory
  one is limited by its extra passes; one far below on both by launches or the host.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import models
import optimizers
from bench.measure import faults, host, memory, timing
from bench.measure.bandwidth import LIMIT_KERNEL, Bandwidth, last_level_cache_bytes, measure_bandwidth
from bench.measure.env import provenance
from bench.record import (
    OPTIMIZER_STEP,
    BandwidthFigures,
    CaseConfig,
    HostCost,
    Provenance,
    Record,
    StaticMemory,
    StepTiming,
    blocks,
)
from optimizers.traffic import compulsory_bytes_per_param, traffic_bytes_per_param

KIND = OPTIMIZER_STEP
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
GRADIENT_SCALE = 1e-3  # fixed gradients ~ N(0, 1e-6): a step of realistic size, never overflowing fp16


@dataclass(frozen=True)
class OptimizerStepCase:
    """One optimizer on one model's parameters in one precision."""

    model: str
    optimizer: str
    precision: str  # fp32 | bf16 | fp16
    steps: int = 20
    warmup: int = 3
    repeats: int = 5

    @property
    def case_id(self) -> str:
        return f"{self.model}/{self.optimizer}/{KIND}/{self.precision}"


def cases(
    model_names: Sequence[str], optimizer_names: Sequence[str], precisions: Sequence[str], **protocol: int
) -> list[OptimizerStepCase]:
    """Every (model, optimizer, precision), each once (a name given twice is one case, as a
    suite's list is). Raises ValueError naming an empty list or an unknown precision,
    UnknownNameError (a ValueError) an unknown optimizer, and ValueError a protocol count
    below 1 (``warmup`` also needs 1: the first step creates the state)."""
    lists = {"models": model_names, "optimizers": optimizer_names, "precision": precisions}
    for flag, names in lists.items():
        if not names:
            raise ValueError(f"--{flag}: expected at least one name, got none")
    model_names, optimizer_names, precisions = (list(dict.fromkeys(names)) for names in lists.values())
    for precision in precisions:
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    for name in optimizer_names:
        optimizers.spec(name)
    for key, value in protocol.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    return [OptimizerStepCase(m, o, p, **protocol) for m in model_names for o in optimizer_names for p in precisions]


def _tensors(value: object) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensors(item)


def _key(t: torch.Tensor) -> tuple:
    return (t.data_ptr(), t.numel(), t.dtype)


class _TrafficCounter(TorchDispatchMode):
    """Adds up, for every operator dispatched, the bytes of the distinct tensors it reads
    (every tensor argument) and writes (arguments its schema marks as mutated, plus new
    outputs), each tensor once per operator."""

    def __init__(self) -> None:
        super().__init__()
        self.read_bytes = 0
        self.written_bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        reads: dict[tuple, int] = {}
        writes: dict[tuple, int] = {}
        schema_args = func._schema.arguments
        bound = list(
            zip(schema_args, args, strict=False)
        )  # trailing defaults omitted + [(a, kwargs[a.name]) for a in schema_args if a.name in kwargs]
        for argument, value in bound:
            written = argument.alias_info is not None and argument.alias_info.is_write
            for t in _tensors(value):
                reads[_key(t)] = t.nbytes
                if written:
                    writes[_key(t)] = t.nbytes
        result = func(*args, **kwargs)
        for t in _tensors(result):
            if _key(t) not in reads:  # a new tensor (an in-place op returns its argument)
                writes[_key(t)] = t.nbytes
        self.read_bytes += sum(reads.values())
        self.written_bytes += sum(writes.values())
        return result


def count_traffic(step: Callable[[], object]) -> tuple[int, int]:
    """(bytes read, bytes written) by the operators ``step`` dispatches, one eager call.

    A kernel is taken to read every tensor argument and write every argument its schema
    marks as mutated (``Tensor(a!)``) and every new output, each once: the traffic of a
    kernel that streams its operands through memory with no reuse between kernels. Compiled
    code bypasses the dispatcher and is not counted (the result is then (0, 0))."""
    counter = _TrafficCounter()
    with counter:
        step()
    return counter.read_bytes, counter.written_bytes


def _parameters(case: OptimizerStepCase, device: torch.device) -> list[torch.nn.Parameter]:
    torch.manual_seed(0)
    model = models.build(case.model).to(device=device, dtype=PRECISIONS[case.precision])
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * GRADIENT_SCALE
    return params


def _fused_traffic_counted(spec: optimizers.OptimizerSpec) -> bool:
    """The fused kernels mark the gradients mutable (they unscale them in place when given a
    grad scale), which the schema-based count would take as a write; and compiled code is not
    dispatched at all. Those implementations use the derived figure instead."""
    return spec.implementation not in ("fused", "compiled")


@dataclass(frozen=True)
class StepTimes:
    """The three times of a step, every sample in milliseconds."""

    wall_ms: list[float]  # one per timed step, as ``timing.time_steps`` gives them
    host_ms: list[float]  # one per timed step: the host clock around its call
    device_ms: list[float]  # one per repeat (mean over ``device_steps`` queued steps); [] if unknown
    device_source: str | None  # queued | profiler | wall (host and device are one) | None
    device_steps: int | None  # steps each queued span covered


def time_step(
    step: Callable[[], object],
    clock: timing.Clock,
    steps: int,
    repeats: int,
    now: Callable[[], float] = time.perf_counter,
) -> StepTimes:
    """Time ``step`` ``repeats`` x ``steps`` times as it comes (wall time, host time around
    each call on ``now``, seconds), then, on an asynchronous clock, ``repeats`` spans of
    ``steps`` steps queued ahead of the device (``timing.queued_times``, held back by twice
    the median host time per step). Where the clock is not asynchronous the device time is the
    wall time; where no queued span was clean it is left empty for the caller to fill."""
    timer = host.HostTimer([step], now)
    wall: list[float] = []
    for _ in range(repeats):
        (samples,) = timing.time_steps(timer.phases, steps, clock)
        wall.extend(samples)
    host_ms = timer.per_step_ms()
    if not clock.asynchronous:
        return StepTimes(wall, host_ms, wall, "wall", None)
    queued = timing.queued_times(step, steps, repeats, clock, timing.summarize(host_ms).median)
    if queued is None:
        return StepTimes(wall, host_ms, [], None, None)
    device_ms, count = queued
    return StepTimes(wall, host_ms, device_ms, "queued", count)


def measure(
    case: OptimizerStepCase, device: torch.device, clock: timing.Clock, bandwidth: Bandwidth, out: dict
) -> None:
    """Time ``case``'s optimizer step and put its measurements in ``out`` as they are made;
    ``bandwidth`` is the DRAM-sized limit measured before the case."""
    spec = optimizers.spec(case.optimizer)
    dtype = PRECISIONS[case.precision]
    params = _parameters(case, device)
    out["params"] = sum(p.numel() for p in params)
    out["param_bytes"] = memory.tensor_bytes(params)
    out["grad_bytes"] = memory.tensor_bytes(p.grad for p in params)
    _measure_working_set_limit(device, clock, out)
    optimizer = optimizers.build(case.optimizer, params)
    out["hyperparameters"] = optimizers.hyperparameters(optimizer)
    for _ in range(case.warmup):
        optimizer.step()
    out["optimizer_state_bytes"] = memory.optimizer_state_bytes(optimizer)
    out["state_buffers_per_param"] = memory.state_buffers_per_param(optimizer)
    out["state_bytes_per_param"] = out["optimizer_state_bytes"] / out["params"]

    compulsory = compulsory_bytes_per_param(spec.algorithm, dtype)
    out["compulsory_bytes_per_param"] = compulsory
    if _fused_traffic_counted(spec):
        read, written = count_traffic(optimizer.step)
        out["traffic_bytes_per_param"] = (read + written) / out["params"]
    else:
        out["traffic_bytes_per_param"] = traffic_bytes_per_param(
            spec.source, spec.algorithm, spec.implementation, dtype
        )

    _time(optimizer.step, case, device, clock, out)
    out["measured_bandwidth_gbs"] = bandwidth.median_gbs(LIMIT_KERNEL)
    out.update(bandwidth_figures(compulsory * out["params"], out["traffic_bytes_per_param"], out))


def _time(
    step: Callable[[], object], case: OptimizerStepCase, device: torch.device, clock: timing.Clock, out: dict
) -> None:
    """The step's wall, host and device time into ``out``; on CUDA also one profiled step's
    launches and busy time (after the timed steps: CUPTI must not be attached while they
    run), whose busy time is the device time where no queued span was clean."""
    times = time_step(step, clock, case.steps, case.repeats)
    wall = timing.summarize(times.wall_ms)
    out["step_time_samples_ms"] = times.wall_ms
    out["step_time_ms"], out["step_time_iqr_ms"], out["step_time_min_ms"] = wall.median, wall.iqr, wall.min
    out["optimizer_ms"] = wall.median
    device_ms = times.device_ms
    out["device_time_source"], out["device_time_steps"] = times.device_source, times.device_steps
    if device.type == "cuda":
        activity = host.profile_step(step)
        out["kernel_launches_per_step"] = activity and activity.launches
        out["device_busy_ms"] = activity and activity.busy_ms
        if not device_ms and out["device_busy_ms"] is not None:
            device_ms, out["device_time_source"] = [out["device_busy_ms"]], "profiler"
    if device_ms:
        device_time = timing.summarize(device_ms)
        out["device_time_samples_ms"] = device_ms
        out["device_time_ms"], out["device_time_iqr_ms"] = device_time.median, device_time.iqr
    # host-bound is judged where host and device are two (not on the CPU): the device's time
    # for a step against the step's wall time
    judged = out.get("device_time_ms") if clock.asynchronous else None
    out.update(host.host_fields(times.host_ms, judged, wall.median))


def _measure_working_set_limit(device: torch.device, clock: timing.Clock, out: dict) -> None:
    """The in-place update's bandwidth on arrays as large as the step's working set (its
    parameters, gradients and the algorithm's state buffers, each as large as the
    parameters): two arrays of half of it each, the two the update kernel reads and writes."""
    buffers = out["state_buffers_theory"]
    out["working_set_bytes"] = out["param_bytes"] + out["grad_bytes"] + buffers * out["param_bytes"]
    out["last_level_cache_bytes"] = last_level_cache_bytes(device)
    limit = measure_bandwidth(device, max(1024, out["working_set_bytes"] // 2), clock=clock, kernels=(LIMIT_KERNEL,))
    out["working_set_bandwidth_samples_gbs"] = limit.samples_gbs[LIMIT_KERNEL]
    out["working_set_bandwidth_gbs"] = limit.median_gbs(LIMIT_KERNEL)


def bandwidth_figures(compulsory_bytes: float, traffic_bytes_per_param: float | None, out: dict) -> dict:
    """The roofline figures from the times and limits in ``out`` (``params``,
    ``step_time_ms``, ``device_time_ms``, ``measured_bandwidth_gbs``,
    ``working_set_bandwidth_gbs``): bandwidths on device time, GB/s (1e9 B/s), and the
    fractions of the limits; a figure whose time is unknown is left out."""
    figures: dict = {}
    limit = out["working_set_bandwidth_gbs"]
    figures["wall_bandwidth_fraction"] = compulsory_bytes / (out["step_time_ms"] * 1e6) / limit
    device_ms = out.get("device_time_ms")
    if device_ms is None:
        return figures
    figures["achieved_bandwidth_gbs"] = compulsory_bytes / (device_ms * 1e6)
    if traffic_bytes_per_param is not None:
        figures["traffic_bandwidth_gbs"] = traffic_bytes_per_param * out["params"] / (device_ms * 1e6)
    figures["bandwidth_fraction"] = figures["achieved_bandwidth_gbs"] / limit
    figures["dram_bandwidth_fraction"] = figures["achieved_bandwidth_gbs"] / out["measured_bandwidth_gbs"]
    return figures


def run_case(
    case: OptimizerStepCase,
    device: torch.device,
    bandwidth: Bandwidth,
    *,
    run_id: str,
    suite: str,
    env: dict,
    device_name: str,
    clock: timing.Clock | None = None,
) -> Record:
    """Run one optimizer-step case and return its Record, whatever happened (bar
    KeyboardInterrupt): ``oom`` for out of device memory, ``error`` with the message for any
    other exception (e.g. an implementation that does not support the precision)."""
    out: dict = {"state_buffers_theory": optimizers.state_buffers(case.optimizer)}
    with faults.case_outcome(device) as outcome:
        measure(case, device, clock or timing.clock_for(device), bandwidth, out)
    return Record(
        kind=KIND,
        case_id=case.case_id,
        case=CaseConfig(
            model=case.model,
            optimizer=case.optimizer,
            precision=case.precision,
            steps=case.steps,
            warmup=case.warmup,
            repeats=case.repeats,
            hyperparameters=out.pop("hyperparameters", {}),
        ),
        status=outcome.status,
        error=outcome.error,
        **blocks(provenance(run_id, suite, device, device_name, env), Provenance),
        **blocks(out, StepTiming, StaticMemory, HostCost, BandwidthFigures),
    )

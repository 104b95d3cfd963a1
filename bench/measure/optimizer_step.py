"""Optimizer-step cases: ``optimizer.step()`` alone, placed against the memory-bandwidth limit.

A case is one registry optimizer on one model's real parameter shapes, in one precision (the
dtype of the parameters, gradients and, in every registry optimizer, the state). The
gradients are fixed random tensors and the state already exists (``warmup`` untimed steps),
so the timed function is exactly ``optimizer.step()``, timed like a training step
(``bench.measure.timing``: CUDA events on a GPU, the host clock on the CPU; every sample kept).

Each record then says how close the step came to the physical limit:

- ``compulsory_bytes_per_param``: what the algorithm must move (28 B for fp32 Adam, 20 B
  for SGDM; ``optimizers.traffic``), so ``achieved_bandwidth_gbs`` = compulsory bytes x
  parameters / median step time, and ``bandwidth_fraction`` = that / the device's measured
  bandwidth of an in-place update kernel (``bench.measure.bandwidth``, measured in the same run):
  the roofline position.
- ``traffic_bytes_per_param``: what the implementation's kernels actually move, counted by
  ``count_traffic`` over one untimed step, and ``traffic_bandwidth_gbs`` at the same step
  time: an implementation near the bandwidth on this figure but far below on the compulsory
  one is limited by its extra passes; one far below on both by launches or the host.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import models
import optimizers
from bench.measure import faults, memory, timing
from bench.measure.bandwidth import LIMIT_KERNEL, Bandwidth
from bench.measure.runner import fault_outcome, hyperparameters, provenance
from bench.record import Record
from optimizers.traffic import compulsory_bytes_per_param, traffic_bytes_per_param

KIND = "optimizer-step"
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


def measure(
    case: OptimizerStepCase, device: torch.device, clock: timing.Clock, bandwidth: Bandwidth, out: dict
) -> None:
    """Time ``case``'s optimizer step and put its measurements in ``out`` as they are made."""
    spec = optimizers.spec(case.optimizer)
    dtype = PRECISIONS[case.precision]
    params = _parameters(case, device)
    out["params"] = sum(p.numel() for p in params)
    out["param_bytes"] = memory.tensor_bytes(params)
    out["grad_bytes"] = memory.tensor_bytes(p.grad for p in params)
    optimizer = optimizers.build(case.optimizer, params)
    out["hyperparameters"] = hyperparameters(optimizer)
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

    samples: list[float] = []
    for _ in range(case.repeats):
        (new,) = timing.time_steps([optimizer.step], case.steps, clock)
        samples.extend(new)
    summary = timing.summarize(samples)
    out["step_time_samples_ms"] = samples
    out["step_time_ms"], out["step_time_iqr_ms"], out["step_time_min_ms"] = summary.median, summary.iqr, summary.min
    out["optimizer_ms"] = summary.median
    seconds = summary.median / 1e3
    out["achieved_bandwidth_gbs"] = compulsory * out["params"] / seconds / 1e9
    if out["traffic_bytes_per_param"] is not None:
        out["traffic_bandwidth_gbs"] = out["traffic_bytes_per_param"] * out["params"] / seconds / 1e9
    out["measured_bandwidth_gbs"] = bandwidth.median_gbs(LIMIT_KERNEL)
    out["bandwidth_fraction"] = out["achieved_bandwidth_gbs"] / out["measured_bandwidth_gbs"]


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
    status, error = "ok", None
    device_scope = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    try:
        with device_scope:
            measure(case, device, clock or timing.clock_for(device), bandwidth, out)
    except faults.STOPS:
        raise
    except BaseException as fault:  # noqa: BLE001  (any failure of one case is that case's result, sys.exit too)
        status, error = fault_outcome(fault)
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return Record(
        **provenance(run_id, suite, device, device_name, env),
        case_id=case.case_id,
        model=case.model,
        optimizer=case.optimizer,
        batch_size=None,  # no batch: the step does not see data
        precision=case.precision,
        channels_last=False,
        compile=False,  # no model is compiled; a compiled optimizer says so in its name
        dataset="none",
        input_shape=[],
        steps=case.steps,
        warmup=case.warmup,
        repeats=case.repeats,
        status=status,
        error=error,
        kind=KIND,
        **out,
    )

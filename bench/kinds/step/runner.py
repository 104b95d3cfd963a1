"""Running cases: build the model and optimizer, warm up, time the steps, measure memory,
and turn the outcome into a Record.

The training step is ``Trainer.step``: forward under autocast, loss, backward through the
GradScaler, optimizer step, gradients zeroed in place. Everything else here is set-up,
measurement and bookkeeping around it. A case that fails is a Record too: ``oom`` (out
of device memory, the caching allocator's or cuBLAS's/cuDNN's, see ``bench.measure.faults``; the
case's memory is freed and the sweep goes on), ``diverged`` (a non-finite loss, or fp16
gradients that overflowed at every loss scale so the optimizer never stepped) or ``error``
(any other exception, message kept). Fields measured before the fault stay in the record.
A ``SystemExit`` (a model calling ``sys.exit``) is an ``error`` like any exception; only
KeyboardInterrupt and SIGTERM end the sweep.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

import models
import optimizers
from bench.kinds.step import autotune, max_batch, memory_pass, prediction_worker, setup_cache
from bench.kinds.step.suite import Case
from bench.kinds.step.trainer import Trainer
from bench.measure import data, faults, flops, host, memory, peaks, precision, timing
from bench.measure.env import provenance
from bench.measure.faults import Diverged, fault_outcome, message
from bench.measure.setup import device_name
from bench.record import (
    DATA_PARALLEL,
    TRAINING_STEP,
    CaseConfig,
    Flops,
    HostCost,
    LargestBatch,
    MemoryPass,
    PeakMemory,
    Provenance,
    Record,
    StaticMemory,
    StepTiming,
    Telemetry,
    blocks,
)
from bench.telemetry.gpu import CaseTelemetry

#: Untimed steps allowed beyond ``warmup`` while fp16 loss scaling skips the optimizer's
#: update. Each skip halves GradScaler's scale; from its default 2**16, 64 halvings reach
#: 2**-48, where no finite float32 gradient can overflow float16 any more.
EXTRA_WARMUP_LIMIT = 64


@dataclass(frozen=True)
class RunContext:
    """What every case of a run shares: where it runs and what it is filed under."""

    run_id: str
    suite: str
    device: torch.device
    env: dict = field(default_factory=dict)  # bench.measure.env.collect_env()
    data_root: Path | str = data.DEFAULT_ROOT
    download: bool = False
    #: Builds a case's model, optimizer and trainer instead of ``build`` (same signature);
    #: data-parallel runs wrap the model for their strategy here.
    builder: Callable[[Case, RunContext, dict], tuple[nn.Module, torch.optim.Optimizer, Trainer]] | None = None
    peak_tflops: float | None = None  # --peak-tflops: the device's peak, over bench.measure.peaks' table
    find_max_batch: bool = False  # search each case's largest batch (bench.kinds.step.max_batch)
    memory_pass: bool = True  # run each case's untimed memory pass (bench.kinds.step.memory_pass)
    memory_cap_bytes: int | None = None  # the memory that search fits in (None: the device's)
    #: Cut the set-up between cases where that cannot change a figure (bench.kinds.step.setup_cache):
    #: share built models and the memory predictions of fp32/tf32 twins, and keep what outlives
    #: every case out of the garbage collections that free each case's memory.
    reuse: bool = True


#: The blocks a training-step record can hold besides its configuration and provenance
#: (a data-parallel one adds its parallel figures).
STEP_BLOCKS = (StepTiming, StaticMemory, PeakMemory, HostCost, Telemetry, Flops, MemoryPass, LargestBatch)

#: ``memory_pass_error`` of a case run with ``--no-memory-pass``.
SKIPPED_MEMORY_PASS = "not run (--no-memory-pass)"


def instruments_for(device: torch.device) -> tuple[timing.Clock, memory.Meter]:
    """The clock and the memory meter for ``device``."""
    return timing.clock_for(device), memory.meter_for(device)


def build(case: Case, context: RunContext, out: dict) -> tuple[nn.Module, torch.optim.Optimizer, Trainer]:
    """The case's data, model, optimizer and trainer, on the device; records what they are."""
    device = context.device
    torch.manual_seed(0)
    batches = data.make_batches(
        case.dataset,
        case.input_shape,
        case.num_classes,
        case.batch_size,
        case.warmup + case.repeats * case.steps,
        device,
        context.data_root,
        context.download,
    )
    model = build_model(case, context.reuse).to(device)
    if case.channels_last:
        model = model.to(memory_format=torch.channels_last)
        batches = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in batches]
    out["params"] = sum(p.numel() for p in model.parameters())
    out["param_bytes"] = memory.param_bytes(model)
    optimizer = optimizers.build(case.optimizer, model.parameters(), **case.hyperparameters)
    out["hyperparameters"] = optimizers.hyperparameters(optimizer)
    if case.compile:
        torch.compiler.reset()  # a fresh cache: Dynamo's recompile limit would fall back to eager
    compiled = torch.compile(model, mode=case.compile_mode) if case.compile else model
    trainer = Trainer(compiled, optimizer, batches, case.precision, device)
    return model, optimizer, trainer


def build_model(case: Case, reuse: bool) -> nn.Module:
    """The case's model, initialised on the host from the CPU random generator's state now;
    with ``reuse``, a copy of the same model built earlier in the run where there is one
    (``setup_cache.build_model``: the same weights, bit for bit, and the same generator state after)."""

    def fresh() -> nn.Module:
        return models.build(
            case.model, in_channels=case.input_shape[0], num_classes=case.num_classes, **case.model_kwargs
        )

    return setup_cache.build_model(case, fresh) if reuse else fresh()


def warm_up(case: Case, trainer: Trainer, meter: memory.Meter, out: dict) -> None:
    """The untimed steps: ``case.warmup`` of them, and more (at most ``EXTRA_WARMUP_LIMIT``)
    until the optimizer has made an update that GradScaler did not skip, so its state exists
    and every figure after this comes from an optimizer that has stepped. Around the update
    that creates the state, an allocator meter sees it appear. Raises Diverged when no
    update happens within the limit."""
    optimizer, stepped, steps = trainer.optimizer, False, 0
    while steps < case.warmup or not stepped:
        if steps == case.warmup + EXTRA_WARMUP_LIMIT:
            raise Diverged(
                f"the optimizer never stepped: GradScaler skipped all {steps} warm-up updates "
                f"(gradients non-finite at every loss scale down to {trainer.scaler.get_scale():g})"
            )
        trainer.forward()
        trainer.backward()
        creating = not optimizer.state
        if creating:
            before, requested_before = meter.in_use(), meter.requested_in_use()
        skipped_before = trainer.skipped
        trainer.update()
        trainer.check_finite()  # reads this step's skip flag; the warm-up may wait for the device
        steps += 1
        stepped = stepped or trainer.skipped == skipped_before
        if creating and optimizer.state and meter.counts_allocations:
            out["optimizer_state_allocated_bytes"] = meter.in_use() - before
            if requested_before is not None:
                out["optimizer_state_requested_bytes"] = meter.requested_in_use() - requested_before
        out["warmup_steps_run"] = steps
        if trainer.scaler.is_enabled():
            out["skipped_steps_warmup"] = trainer.skipped


def _check_state_allocation(optimizer: torch.optim.Optimizer, device: torch.device, out: dict) -> None:
    """Flag a state allocation that the state tensors do not explain: something else stayed
    allocated, or the state was not all created in that update. Judged on the allocator's
    requested bytes, which must equal the state tensors' bytes on the device exactly; the
    allocated delta is kept as information, since the caching allocator may hand each large
    state tensor a cached block up to 1 MiB larger than it asked for. Only where the
    allocator keeps no requested count is the allocated delta held against what its block
    rules allow (``bench.measure.memory.state_allocation_bounds``)."""
    allocated, requested = out.get("optimizer_state_allocated_bytes"), out.get("optimizer_state_requested_bytes")
    if allocated is None:
        return
    alloc_conf = ",".join(os.environ.get(name, "") for name in memory.ALLOC_CONF_VARIABLES)
    least, most = memory.state_allocation_bounds(optimizer, device, alloc_conf)
    if requested is not None:
        out["optimizer_state_mismatch"] = requested != least
    else:
        out["optimizer_state_mismatch"] = not least <= allocated <= most


def _build_for(context: RunContext, case: Case, out: dict) -> tuple[nn.Module, torch.optim.Optimizer, Trainer]:
    return build(case, context, out)


def measure(
    case: Case,
    context: RunContext,
    clock: timing.Clock,
    meter: memory.Meter,
    out: dict,
    memory_at_start: tuple[int, int] = (0, 0),
) -> None:
    """Train ``case`` and put its measurements in ``out`` as they are made. The static and
    peak figures leave out ``memory_at_start``: (allocated, requested) bytes the device held
    before the case began."""
    out["flops_per_sample"] = flops.flops_per_sample(case.model, case.model_kwargs, case.input_shape, case.num_classes)
    model, optimizer, trainer = (context.builder or build)(case, context, out)
    if context.device.type == "cuda":
        out.update(precision.effective())
    # cuDNN's autotuning is set-up: done before the warm-up, it stays out of steps_s.
    out["autotune_s"] = autotune.autotune_pass(case, trainer, context.device, data_parallel=context.builder is not None)

    warm_start = time.perf_counter()
    warm_up(case, trainer, meter, out)  # reads every step's loss, so the device is done when it returns
    warm_up_s = time.perf_counter() - warm_start
    out["grad_bytes"] = memory.grad_bytes(model)
    out["optimizer_state_bytes"] = memory.optimizer_state_bytes(optimizer)
    out["state_buffers_per_param"] = memory.state_buffers_per_param(optimizer)
    out["state_bytes_per_param"] = out["optimizer_state_bytes"] / out["params"]
    _check_state_allocation(optimizer, context.device, out)

    phases: list[Callable[[], None]] = (
        [trainer.forward, trainer.backward, trainer.update] if case.detailed else [trainer.step]
    )
    host_timer = host.HostTimer(phases)
    per_phase: list[list[float]] = [[] for _ in phases]
    # What the case holds between steps (parameters, gradients, state, data, its library
    # workspaces) is static; the step's own memory is the peak above it. Neither counts what
    # was allocated before the case began (an earlier case's leftovers).
    start, requested_start = memory_at_start
    out["static_memory_bytes"] = meter.in_use() - start
    requested = meter.requested_in_use()
    out["static_memory_requested_bytes"] = None if requested is None else requested - requested_start
    telemetry = CaseTelemetry.for_device(context.device)
    meter.reset_peak()
    skipped_before = trainer.skipped
    for _ in range(case.repeats):
        telemetry.before_repeat()
        for samples, new in zip(per_phase, timing.time_steps(host_timer.phases, case.steps, clock), strict=True):
            samples.extend(new)
        telemetry.after_repeat()
        out["final_loss"] = trainer.check_finite()
    out["peak_memory_bytes"] = meter.peak() - start
    out["peak_memory_source"] = meter.source
    out["activation_bytes"] = out["peak_memory_bytes"] - out["static_memory_bytes"]
    requested_peak = meter.requested_peak()
    out["peak_memory_requested_bytes"] = None if requested_peak is None else requested_peak - requested_start
    out["peak_memory_reserved_bytes"] = meter.reserved_peak()
    if trainer.scaler.is_enabled():
        out["skipped_steps_timed"] = trainer.skipped - skipped_before
        out["loss_scale"] = trainer.scaler.get_scale()

    step_samples = [sum(parts) for parts in zip(*per_phase, strict=True)]
    summary = timing.summarize(step_samples)
    out["steps_s"] = warm_up_s + sum(step_samples) / 1e3
    out["step_time_samples_ms"] = step_samples
    out["step_time_ms"], out["step_time_iqr_ms"], out["step_time_min_ms"] = summary.median, summary.iqr, summary.min
    out["throughput"] = case.batch_size / (summary.median / 1e3)
    # After the timed steps and the peak: the profiled step must not touch either.
    out.update(host.probe_step(trainer.step, context.device, optimizer, case.compile))
    out.update(host.host_fields(host_timer.per_step_ms(), out.get("device_busy_ms"), out.get("device_span_ms")))
    out.update(telemetry.fields(case.batch_size, case.steps))
    if case.detailed:
        medians = [timing.summarize(samples).median for samples in per_phase]
        out["forward_ms"], out["backward_ms"], out["optimizer_ms"] = medians
    out["peak_tflops"], out["peak_tflops_source"] = peaks.peak_for(
        device_name(context.device, context.env), case.precision, context.peak_tflops
    )
    out["achieved_tflops"], out["mfu"] = flops.utilisation(
        out["flops_per_sample"], out["throughput"], out["peak_tflops"]
    )


def run_case(case: Case, context: RunContext) -> Record:
    """Run one case and return its Record, whatever happened: any exception the case raises,
    ``SystemExit`` included, is its ``error``; only a stop signal (``faults.STOPS``) ends the run."""
    started = time.perf_counter()
    if context.reuse:
        setup_cache.freeze_survivors()
    prediction_worker.starting(case)  # its prediction and the next case's, where a worker makes them
    out: dict = {"state_buffers_theory": optimizers.state_buffers(case.optimizer)}
    status, error = "ok", None
    device = context.device
    clock, meter = instruments_for(device)
    device_scope = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    try:
        with device_scope, precision.cuda_backend_settings(case.precision, device):
            measure(case, context, clock, meter, out, _memory_at_start(meter, out))
    except faults.STOPS:
        raise
    except BaseException as fault:  # noqa: BLE001  (any failure of one case is that case's result, sys.exit too)
        status, error = fault_outcome(fault)
        # The traceback's frames hold the case's model, optimizer and batches; cleared, they
        # go even if something keeps the exception (a chained one, a debugger's last error).
        traceback.clear_frames(fault.__traceback__)
    finally:
        # Past the except clauses the exception and its frames are gone, so nothing holds
        # the case's tensors any more and their memory can go back.
        release_error = _release(meter)
    if release_error is not None and status == "ok":
        status, error = "error", release_error
    if status == "ok":
        build_case = functools.partial(_build_for, context)
        if context.memory_pass:
            fields = memory_pass.record_fields(
                case, device, build_case, out, share=context.reuse, predictor=prediction_worker.predict
            )
            out.update(fields)
        else:
            out["memory_pass_error"] = SKIPPED_MEMORY_PASS
        if context.find_max_batch:
            try:
                out.update(max_batch.search_case(case, device, build_case, context.memory_cap_bytes))
            except faults.STOPS:
                raise
            except BaseException as search_fault:  # noqa: BLE001  (the timed figures stand; say why the search is missing)
                out["max_batch_error"] = f"{type(search_fault).__name__}: {message(search_fault)}"
        if context.memory_pass or context.find_max_batch:
            _release(meter)  # their steps made workspaces again: the next case starts without
    out["case_wall_s"] = time.perf_counter() - started
    return case_record(case, context, status, error, out)


def _memory_at_start(meter: memory.Meter, out: dict) -> tuple[int, int]:
    """(allocated, requested) bytes the device's allocator holds before the case builds
    anything, where the meter counts allocations (CUDA; else zeros): library workspaces, or
    what an earlier case left behind. The allocated figure goes in the record."""
    if not meter.counts_allocations:
        return 0, 0
    out["memory_at_case_start_bytes"] = meter.in_use()
    return out["memory_at_case_start_bytes"], meter.requested_in_use() or 0


def _release(meter: memory.Meter) -> str | None:
    """Release the case's memory; the error, where a sticky CUDA error makes that fail too."""
    try:
        meter.release()
    except RuntimeError as fault:
        return f"{type(fault).__name__}: {message(fault)}"
    return None


def case_record(case: Case, context: RunContext, status: str, error: str | None, out: dict) -> Record:
    """The Record of ``case``: its configuration, where it ran, its outcome and the
    measurements in ``out`` (flat field name to value), each in the block it belongs to."""
    device = context.device
    protocol = dict(steps=case.steps, warmup=case.warmup, repeats=case.repeats, detailed=case.detailed)
    where = provenance(context.run_id, context.suite, device, device_name(device, context.env), context.env)
    return Record(
        kind=DATA_PARALLEL if case.strategy else TRAINING_STEP,
        case_id=case.case_id,
        status=status,
        error=error,
        **blocks({**where, **case.config(), **protocol, **out}, CaseConfig, Provenance, *STEP_BLOCKS),
    )


def run_cases(cases: Sequence[Case], context: RunContext, on_record: Callable[[Case, Record], None]) -> None:
    """Run the cases in order, handing each Record to ``on_record`` as soon as it exists."""
    for case in cases:
        on_record(case, run_case(case, context))

"""Records: what one case of one run was and measured, as an envelope and typed blocks.

A record is written once, by the code that ran the case, as one line of ``records.jsonl``;
everything downstream (reports, the history, comparison, export) reads it back flattened,
one field per column, as a dict or a DataFrame row.

On disk (``SCHEMA`` 2) a record is a JSON object: the envelope, then one object per block
that applies to the case::

    {"schema": 2, "kind": "training-step", "run_id": "...", "case_id": "...",
     "timestamp": "...", "suite": "smoke", "status": "ok", "error": null,
     "case": {"model": "cnn", "optimizer": "adam", "batch_size": 16, ...},
     "provenance": {"device": "cpu", "device_name": "...", "hostname": "...", ...},
     "load": {"load_average_1m": 0.4, "other_cpu_fraction": 0.01},
     "timing": {"step_time_ms": 34.4, ...}, "static_memory": {...}, "host": {...}, ...}

``kind`` is one of ``KINDS``; a block that does not apply is absent (an optimizer step has no
batch and no peak memory, a CPU case no telemetry), and inside a block a figure that was not
measured is absent. Read back (``flatten``), every block's fields become the record's own,
under the names records had before blocks (``RECORD_FIELDS``; a field name belongs to one
block only, and the memory pass's two ``MemoryCategories`` prefix theirs: ``tracked_peak_bytes``,
``predicted_peak_bytes``); what is absent reads as its field's default (None for a figure).
Schema 1 was one flat object of every field: ``upgrade`` reads such a line into the envelope
and blocks, and the kind of case it is (``record_kind``) is decided there, once.

Adding a measurement is one field in its block (with its unit and source) and the code that
fills it: the flat column, the reader's type check and the history's copy follow from it.
Units are in the field names: ``_ms`` milliseconds, ``_s`` seconds, ``_bytes`` bytes,
``throughput`` samples per second.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from urllib.parse import quote

import numpy as np


def utc_now() -> str:
    """The current time as ISO 8601 in UTC, to the second (a Record's ``timestamp``)."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


#: The version of the record format ``Record.to_json`` writes; 1 is the flat format before it.
SCHEMA = 2

#: What a record measured: the training step; the optimizer step alone (``convbench optim``);
#: training to a target accuracy (``convbench train``); a training step on several ranks
#: (a step record with parallel figures).
TRAINING_STEP = "training-step"
OPTIMIZER_STEP = "optimizer-step"
TRAINING_TO_ACCURACY = "training-to-accuracy"
DATA_PARALLEL = "data-parallel"
KINDS = (TRAINING_STEP, OPTIMIZER_STEP, TRAINING_TO_ACCURACY, DATA_PARALLEL)
#: The kinds whose records time a training step (batch, throughput, peak memory).
STEP_KINDS = (TRAINING_STEP, DATA_PARALLEL)

#: Outcomes of a case. ``oom``: out of device memory; ``error``: any other exception
#: (message in ``error``); ``diverged``: the loss became non-finite; ``timeout``: in a
#: data-parallel case, a collective or a rank's result did not arrive within the timeout.
STATUSES = ("ok", "oom", "error", "diverged", "timeout")

#: The fields that say which case a record is; two records of the same case (in two runs)
#: agree on all of them. ``case_id`` is built from them.
CASE_FIELDS = (
    "model",
    "optimizer",
    "batch_size",
    "precision",
    "channels_last",
    "compile",
    "dataset",
    "input_shape",
    "strategy",
    "world_size",
    "sync_batchnorm",
    "hyperparameters",  # cases trained with other hyperparameters are other cases
    "model_kwargs",
    "compile_mode",
)

#: How a case was measured. Two records can only be compared when these agree too.
PROTOCOL_FIELDS = ("steps", "warmup", "repeats", "detailed", "threads")


@dataclass(kw_only=True, slots=True)
class CaseConfig:
    """What the case was (``CASE_FIELDS``) and how it was measured (``PROTOCOL_FIELDS``).
    A field that does not apply to the kind is None, and absent on disk: an optimizer step
    has no batch, dataset, input shape, memory format or compiled model."""

    model: str
    optimizer: str
    batch_size: int | None = None  # data parallel: one rank's batch
    precision: str  # fp32 | tf32 | bf16 | fp16
    channels_last: bool | None = None
    compile: bool | None = None
    dataset: str | None = None  # synthetic | mnist | fashionmnist | cifar10
    input_shape: list[int] | None = None  # (C, H, W) of one sample
    steps: int  # timed steps per repeat; training to accuracy: the training steps taken
    warmup: int  # untimed steps before the first repeat
    repeats: int
    hyperparameters: dict = field(default_factory=dict)  # training to accuracy: the recipe's, schedule included
    detailed: bool = False  # forward / backward / optimizer step timed separately
    model_kwargs: dict | None = None  # keyword arguments given to the model's builder; None: none given
    compile_mode: str | None = None  # torch.compile mode; None: not compiled, or the default mode
    strategy: str | None = None  # data parallel: ddp | zero1 | fsdp
    world_size: int | None = None  # data parallel: ranks the case ran on
    sync_batchnorm: bool | None = None  # data parallel: BatchNorm layers converted to torch.nn.SyncBatchNorm
    recipe: str | None = None  # training to accuracy: the suite's [[recipe]] name
    seed: int | None = None  # training to accuracy: initial weights, batch order and augmentation
    target_accuracy: float | None = None  # training to accuracy: test accuracy (fraction) the time to target is for


@dataclass(kw_only=True, slots=True)
class Provenance:
    """Where and with what the case ran."""

    device: str = "cpu"  # cpu | cuda:N
    device_name: str = ""
    hostname: str = ""
    torch_version: str = ""
    git_commit: str | None = None
    isolated: bool = False  # ran in a process of its own (--isolate)
    matmul_precision: str | None = None  # CUDA: float32 matmuls in effect, ieee | tf32 (bench.measure.precision)
    cudnn_conv_precision: str | None = None  # CUDA: float32 cuDNN convolutions in effect, ieee | tf32
    tf32_override: str | None = None  # CUDA: NVIDIA_TF32_OVERRIDE / TORCH_ALLOW_TF32_CUBLAS_OVERRIDE as set
    # torch intra-op threads the case ran with (torch.get_num_threads()), part of the protocol
    # (PROTOCOL_FIELDS); None: not kept
    threads: int | None = None


@dataclass(kw_only=True, slots=True)
class Load:
    """Interference (bench.measure.load): the machine's load while the case ran."""

    load_average_1m: float | None = None  # 1-minute load average as the case started (os.getloadavg)
    other_cpu_fraction: float | None = None  # share of all CPUs' time other processes used during the case, 0-1


@dataclass(kw_only=True, slots=True)
class StepTiming:
    """The timed steps (``bench.measure.timing``): every sample kept, ms."""

    step_time_ms: float | None = None  # median over all timed steps
    step_time_iqr_ms: float | None = None  # 75th minus 25th percentile
    step_time_min_ms: float | None = None
    step_time_samples_ms: list[float] = field(default_factory=list)  # every timed step
    throughput: float | None = None  # batch_size / median step time, samples/s
    forward_ms: float | None = None  # medians, detailed mode only; optimizer steps: optimizer_ms, the step's median
    backward_ms: float | None = None
    optimizer_ms: float | None = None
    # the loss after the timed steps; training to accuracy: the mean training loss since the previous evaluation
    final_loss: float | None = None
    # where the case's wall time went: inside its warm-up and timed steps, against the whole case
    # (building, the memory pass, probes, bookkeeping included), seconds
    steps_s: float | None = None
    case_wall_s: float | None = None
    # cuDNN's autotuning of the case's convolutions, run before its warm-up (bench.kinds.step.autotune), s:
    # 0.0 where an earlier case of the process tuned the same shapes; None off CUDA, without
    # cudnn.benchmark, for compiled and data-parallel cases (they autotune inside their warm-up)
    autotune_s: float | None = None
    # loss scaling: untimed steps run (warmup, or more until the optimizer had stepped), and fp16 updates
    # GradScaler skipped (inf/NaN gradients) in the warm-up and the timed steps
    warmup_steps_run: int | None = None
    skipped_steps_warmup: int | None = None
    skipped_steps_timed: int | None = None
    loss_scale: float | None = None  # fp16: GradScaler's scale after the last timed step


@dataclass(kw_only=True, slots=True)
class StaticMemory:
    """The model's parameters and what the case holds between steps (``bench.measure.memory``), bytes."""

    params: int | None = None  # parameters of the model (a count)
    param_bytes: int | None = None
    grad_bytes: int | None = None
    optimizer_state_bytes: int | None = None  # summed over the optimizer's state tensors
    optimizer_state_allocated_bytes: int | None = None  # CUDA memory_allocated delta, update creating the state
    optimizer_state_requested_bytes: int | None = None  # CUDA: requested_bytes.all.current delta, same update
    # CUDA: the requested-bytes delta around the update that created the state differs from the state
    # tensors' bytes on the device (exact); without a requested count, the allocated delta lies
    # outside what the allocator's block rules allow (bench.measure.memory.state_allocation_bounds)
    optimizer_state_mismatch: bool | None = None
    state_buffers_per_param: float | None = None  # measured: state tensors shaped like their param
    state_buffers_theory: int | None = None  # optimizers.state_buffers(name)
    state_bytes_per_param: float | None = None  # optimizer_state_bytes / params
    # in use when the peak counter was reset, before the timed steps: parameters, gradients,
    # optimizer state, data and the case's library workspaces (CUDA: less memory_at_case_start_bytes)
    static_memory_bytes: int | None = None
    # CUDA, less what was requested at the case's start: requested_bytes.all.current at the peak reset
    static_memory_requested_bytes: int | None = None
    # CUDA: memory_allocated before the case built anything (what earlier cases or libraries left
    # allocated); the static, peak and requested figures are the case's own, this taken off
    memory_at_case_start_bytes: int | None = None


@dataclass(kw_only=True, slots=True)
class PeakMemory:
    """Memory at the timed steps' peak, bytes."""

    peak_memory_bytes: int | None = None  # CUDA: max_memory_allocated over the timed steps, less at case start
    peak_memory_source: str | None = None  # cuda_max_allocated | process_rss | process_rss_sampled
    activation_bytes: int | None = None  # peak_memory_bytes minus static_memory_bytes
    peak_memory_requested_bytes: int | None = None  # CUDA: requested_bytes.all.peak over the timed steps
    peak_memory_reserved_bytes: int | None = None  # CUDA: max_memory_reserved over the timed steps (cache too)


@dataclass(kw_only=True, slots=True)
class MemoryCategories:
    """One step's live tensor storages at its peak, sorted by what they are
    (``bench.measure.memory_breakdown``), bytes; the categories add up to ``peak_bytes``.
    The memory pass keeps two: ``tracked`` (real tensors) and ``predicted`` (fake tensors)."""

    parameters_bytes: int | None = None
    buffers_bytes: int | None = None
    gradients_bytes: int | None = None
    optimizer_state_bytes: int | None = None
    inputs_bytes: int | None = None  # the batch the step reads (images, labels)
    activations_bytes: int | None = None  # saved by autograd for backward, alive at the peak
    temporaries_bytes: int | None = None  # everything else alive at the peak
    peak_bytes: int | None = None
    peak_phase: str | None = None  # forward | backward | optimizer


@dataclass(kw_only=True, slots=True)
class MemoryPass:
    """The memory pass (``bench.kinds.step.memory_pass``): one untimed steady-state step after
    the timed ones, tracked tensor by tensor, and the same step predicted on fake tensors
    before anything is allocated."""

    tracked: MemoryCategories | None = None
    predicted: MemoryCategories | None = None
    tracked_allocator_peak_bytes: int | None = None  # CUDA: max_memory_allocated over the tracked step
    rss_activation_bytes: int | None = None  # CPU: the resident-set activation figure, before the tracker's replaced it
    predicted_device: str | None = None  # what the fake step ran as: cpu | cuda | "cpu for cuda"
    prediction_s: float | None = None  # wall time of the prediction, s
    memory_pass_error: str | None = None  # why tracked_* or predicted_* are missing


@dataclass(kw_only=True, slots=True)
class HostCost:
    """What a step costs the host (``bench.measure.host``), from untimed steps after warm-up and the timed steps."""

    host_syncs_per_step: int | None = None  # host-device synchronisations in one step
    host_syncs_source: str | None = None  # cuda_sync_debug_mode | host_reads (ops that synchronise on CUDA)
    host_time_ms: float | None = None  # median host-clock time of a timed step's Python code; CUDA: enqueue
    kernel_launches_per_step: int | None = None  # CUDA: kernel launches in one profiled step (torch.profiler)
    device_busy_ms: float | None = None  # CUDA: time the device was busy in that step (union of its activity)
    device_span_ms: float | None = None  # CUDA: that step's first device activity's start to its last's end
    # CUDA: training steps: device_busy_ms < 0.9 x device_span_ms; optimizer steps: device_time_ms < 0.9 x
    # step_time_ms; the device waited for the host
    host_bound: bool | None = None


@dataclass(kw_only=True, slots=True)
class Telemetry:
    """GPU telemetry (``bench.telemetry.gpu``): the case's GPU sampled before and after every repeat."""

    telemetry_source: str | None = None  # pynvml | libnvidia-ml | nvidia-smi
    gpu_power_w_samples: list[float] | None = None  # NVML power draw after each repeat, W
    gpu_sm_clock_mhz_samples: list[float] | None = None  # SM clock after each repeat, MHz
    gpu_temperature_c_samples: list[float] | None = None  # GPU temperature after each repeat, degrees C
    gpu_throttle_reasons: list[str] | None = None  # NVML clocks-event reasons seen in any sample
    energy_per_step_j: float | None = None  # total-energy counter's rise over the timed repeats / timed steps, J
    samples_per_joule: float | None = None  # batch_size / energy_per_step_j
    energy_window_s: float | None = None  # host time the energy readings spanned, s


@dataclass(kw_only=True, slots=True)
class Flops:
    """FLOPs and utilisation (``bench.measure.flops``, ``bench.measure.peaks``)."""

    flops_per_sample: float | None = None  # forward + backward FLOPs of one sample (torch FlopCounterMode, meta device)
    achieved_tflops: float | None = None  # flops_per_sample * throughput / 1e12, TFLOP/s
    peak_tflops: float | None = None  # the device's dense peak for the case's precision, TFLOP/s
    peak_tflops_source: str | None = None  # bench.measure.peaks table entry or --peak-tflops
    mfu: float | None = None  # model FLOP utilisation, achieved_tflops / peak_tflops (a fraction)


@dataclass(kw_only=True, slots=True)
class LargestBatch:
    """--find-max-batch (``bench.kinds.step.max_batch``): the largest batch whose step fits,
    by doubling then bisection."""

    max_batch_size: int | None = None  # measured: the largest batch that trained without running out
    max_batch_predicted: int | None = None  # the same search on predicted peaks
    max_batch_memory_bytes: int | None = None  # the memory it had to fit in
    max_batch_source: str | None = None  # what ran out: cuda_allocator | tracker_cap
    max_batch_attempts: list = field(default_factory=list)  # [batch, fitted] in the order tried
    max_batch_error: str | None = None  # why a search is missing (the case's timed figures stand)


@dataclass(kw_only=True, slots=True)
class ParallelFigures:
    """Data parallel (``bench.kinds.parallel``). There the timing's ``batch_size`` is one
    rank's batch, the step time the slowest rank's per step, ``throughput`` one rank's
    (batch_size / step time), and the static and peak memory figures the largest over ranks."""

    backend: str | None = None  # nccl | gloo
    collective_timeout_s: float | None = None  # a collective slower than this fails the case (timeout)
    global_batch_size: int | None = None  # batch_size x world_size, samples per step
    global_throughput: float | None = None  # global_batch_size / median step time, samples/s
    # global_throughput / (world_size x global_throughput of the same case at world size 1 in
    # the same run): weak scaling, the per-rank batch fixed; 1 is linear
    scaling_efficiency: float | None = None
    rank_status: list[str] | None = None  # per rank; a rank that sent nothing is timeout
    rank_step_time_ms: list[float] | None = None  # per rank: median of its own step times
    rank_param_bytes: list[int] | None = None  # per rank: its parameters (its shard under fsdp)
    rank_grad_bytes: list[int] | None = None
    rank_optimizer_state_bytes: list[int] | None = None  # its partition's state under zero1/fsdp
    rank_peak_memory_bytes: list[int] | None = None  # peak_memory_source as for the case


@dataclass(kw_only=True, slots=True)
class BandwidthFigures:
    """The optimizer step against the memory-bandwidth limit (``bench.kinds.optimizer_step``).
    Wall time is the timing's step_time_ms, host time the host cost's; on the CPU device time = wall time."""

    device_time_ms: float | None = None  # median of device_time_samples_ms: the device's own time for a step
    device_time_iqr_ms: float | None = None  # their 75th minus 25th percentile
    device_time_samples_ms: list[float] | None = None  # queued: one per repeat, the span / device_time_steps
    device_time_source: str | None = None  # queued (CUDA events, host far ahead) | profiler (busy) | wall (CPU)
    device_time_steps: int | None = None  # queued: steps per span, behind a torch.cuda._sleep delay
    compulsory_bytes_per_param: float | None = None  # the algorithm's minimum (optimizers.traffic)
    traffic_bytes_per_param: float | None = None  # what the implementation's kernels move
    achieved_bandwidth_gbs: float | None = None  # compulsory bytes x params / device_time_ms, 1e9 B/s
    traffic_bandwidth_gbs: float | None = None  # traffic bytes x params / device_time_ms, 1e9 B/s
    measured_bandwidth_gbs: float | None = None  # the in-place update on DRAM-sized arrays, median, same run
    working_set_bytes: int | None = None  # parameters + gradients + state buffers (theory) of the case, bytes
    working_set_bandwidth_gbs: float | None = None  # the in-place update on arrays of that size, median, 1e9 B/s
    working_set_bandwidth_samples_gbs: list[float] | None = None  # its ten rates
    last_level_cache_bytes: int | None = None  # the device's (bench.measure.bandwidth.last_level_cache_bytes)
    bandwidth_fraction: float | None = None  # achieved / working_set_bandwidth_gbs: device time against its limit
    dram_bandwidth_fraction: float | None = None  # achieved / measured_bandwidth_gbs (above 1: cache-resident)
    wall_bandwidth_fraction: float | None = None  # compulsory bytes x params / step_time_ms / working-set limit


@dataclass(kw_only=True, slots=True)
class TrainingOutcome:
    """Training to accuracy (``convbench train``): one record per (model, recipe, seed). Times
    are seconds of wall clock; the training clock stops for evaluations (``eval_time_s``)."""

    train_time_s: float | None = None  # training only (device synchronised at each evaluation)
    eval_time_s: float | None = None  # all test evaluations together
    epochs_trained: float | None = None  # samples_seen / training-set size
    samples_seen: int | None = None  # training samples processed (with repetition across epochs)
    time_to_target_s: float | None = None  # training time at the first evaluation >= target; None: not reached
    samples_to_target: int | None = None  # samples seen by then; None: not reached
    epochs_to_target: float | None = None  # samples_to_target / training-set size; None: not reached
    final_test_accuracy: float | None = None  # at the last evaluation, fraction of the test split
    best_test_accuracy: float | None = None  # highest at any evaluation
    final_train_accuracy: float | None = None  # on the (augmented) batches since the previous evaluation
    train_throughput: float | None = None  # samples_seen / train_time_s, samples/s
    data_load_s: float | None = None  # reading both splits from disk onto the device, once per run
    input_epoch_s: float | None = None  # one epoch of batches alone (gather, augment, normalise), synchronised


@dataclass(kw_only=True, slots=True)
class Record:
    """One case of one run: the envelope (what the case was, where it ran, how it ended) and
    the blocks that apply to its kind, each None where it does not."""

    run_id: str
    case_id: str
    timestamp: str  # ISO 8601, UTC, when the case finished
    suite: str
    case: CaseConfig
    provenance: Provenance = field(default_factory=Provenance)
    status: str = "ok"  # one of STATUSES
    error: str | None = None  # why a case that is not ok ended
    load: Load | None = None
    timing: StepTiming | None = None
    static_memory: StaticMemory | None = None
    peak_memory: PeakMemory | None = None
    host: HostCost | None = None
    telemetry: Telemetry | None = None
    parallel: ParallelFigures | None = None
    flops: Flops | None = None
    memory_pass: MemoryPass | None = None
    largest_batch: LargestBatch | None = None
    training: TrainingOutcome | None = None
    bandwidth: BandwidthFigures | None = None
    kind: str = TRAINING_STEP  # one of KINDS

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"record kind {self.kind!r} is not one of {', '.join(KINDS)}")

    def __getattr__(self, name: str) -> object:
        """A flat field read as an attribute (``record.step_time_ms``), as ``to_dict()`` reads it:
        from its block, or its default where the block is absent. Only reading: a
        measurement is set in its block (``record.timing.step_time_ms = ...``), and setting
        a name that is not the envelope's raises AttributeError."""
        slot = SLOTS.get(name)
        if slot is None or name in _ENVELOPE:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        value: object = self
        for key in slot.path:
            value = getattr(value, key) if value is not None else None
        return slot.default() if value is None else value

    def to_json(self) -> dict:
        """The record as ``records.jsonl`` holds it (schema ``SCHEMA``): the envelope, then
        each block that applies as an object of the fields it measured."""
        return {"schema": SCHEMA, "kind": self.kind, **_as_json(self)}

    def to_dict(self) -> dict:
        """The record as readers see it: one field per column, ``RECORD_FIELDS`` (``flatten``)."""
        return flatten(self.to_json())

    def with_fields(self, **changes: object) -> Record:
        """A copy with the flat fields ``changes`` (``RECORD_FIELDS`` names) set, each in its block."""
        return Record.from_flat({**self.to_dict(), **changes})

    @classmethod
    def from_json(cls, data: dict) -> Record:
        """The Record a schema-2 dict (``to_json``) describes. TypeError for a field that no
        block has."""
        return _from_json(cls, {k: v for k, v in data.items() if k != "schema"})

    @classmethod
    def from_flat(cls, flat: dict) -> Record:
        """The Record of ``flat``, a dict of flat fields (``RECORD_FIELDS``, as a schema-1
        line or a measuring function's output holds them), each put in its block
        (``upgrade``). TypeError for a name that is no record field."""
        return cls.from_json(upgrade(flat, strict=True))


def _block_type(annotation: object) -> type | None:
    """The block class a field annotated ``annotation`` (``Block | None``) holds, or None for a plain value."""
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    found = [option for option in options if dataclasses.is_dataclass(option)]
    return found[0] if found else None


@functools.cache
def _hints(cls: type) -> dict[str, object]:
    return typing.get_type_hints(cls)


def _as_json(block: object) -> dict:
    """``block``'s fields that hold something, sub-blocks as objects (left out when empty)."""
    found = {}
    for item in fields(block):
        value = getattr(block, item.name)
        if dataclasses.is_dataclass(value):
            value = _as_json(value) or None
        if value is not None and item.name != "kind":
            found[item.name] = value
    return found


def _from_json(cls: type, data: dict) -> object:
    hints = _hints(cls)
    values = {}
    for name, value in data.items():
        block = _block_type(hints.get(name))
        values[name] = _from_json(block, value) if block is not None and value is not None else value
    return cls(**values)


@dataclass(frozen=True)
class Slot:
    """Where a flat field lives in a schema-2 record: ``path`` of keys from the top, its
    annotation, and what it reads as when absent (``default()``)."""

    path: tuple[str, ...]
    annotation: object
    default: typing.Callable[[], object]


@functools.cache
def _slots(cls: type, path: tuple[str, ...] = (), prefix: str = "") -> dict[str, Slot]:
    """The flat fields of ``cls`` (the Record, or a block) by name: a block's fields are the
    Record's own, a sub-block's are prefixed with its name (``tracked_``), a plain field is
    itself. ``path``: where ``cls`` sits in the record; ``prefix``: what its names take."""
    found: dict[str, Slot] = {}
    for item in fields(cls):
        annotation = _hints(cls)[item.name]
        block = _block_type(annotation)
        if block is not None:
            inner = prefix if cls is Record else f"{prefix}{item.name}_"
            found.update(_slots(block, (*path, item.name), inner))
            continue
        if item.default_factory is not dataclasses.MISSING:
            default = item.default_factory
        else:
            default = _constant(None if item.default is dataclasses.MISSING else item.default)
        name = prefix + item.name
        if name in found:
            raise TypeError(f"record field {name} is declared twice")
        found[name] = Slot((*path, item.name), annotation, default)
    return found


def _constant(value: object) -> typing.Callable[[], object]:
    return lambda: value


#: Every flat field (the names records had before blocks, one column each when read) and
#: where it lives in the envelope and its blocks.
SLOTS: dict[str, Slot] = _slots(Record)
RECORD_FIELDS = tuple(SLOTS)
#: The envelope's blocks by name, each a dataclass.
BLOCKS: dict[str, type] = {
    item.name: block for item in fields(Record) if (block := _block_type(_hints(Record)[item.name])) is not None
}
_BLOCK_NAMES = {block: name for name, block in BLOCKS.items()}
#: The envelope's own values (not blocks).
_ENVELOPE_VALUES = tuple(item.name for item in fields(Record) if item.name not in BLOCKS)


def _holds(value: object, slot: Slot) -> bool:
    """Whether ``value`` says something: not None, nor the empty list or object that is its
    field's default (a failed case's samples)."""
    return value is not None and not (isinstance(value, list | dict) and not value and slot.default() == value)


def blocks(flat: dict, *kinds: type) -> dict[str, object]:
    """Keyword arguments of Record from flat fields, for a kind's record assembly
    (``Record(**blocks(out, StepTiming, HostCost), ...)``): the envelope's own fields in
    ``flat`` (``run_id``, ``status``...) as they are, and the blocks of the given classes
    (``kinds``) that its other fields fill, each under its name in the Record
    (``timing=StepTiming(...)``); a block none of whose fields holds anything is left out.
    TypeError names a field of ``flat`` that none of them has: a measurement the kind's
    record would otherwise lose without a word."""
    found = {name: flat[name] for name in _ENVELOPE_VALUES if name in flat}
    used = set(found)
    for kind in kinds:
        values: dict = {}
        for name, slot in _slots(kind).items():
            used.add(name)
            if name in flat and _holds(flat[name], slot):
                place = values
                for key in slot.path[:-1]:
                    place = place.setdefault(key, {})
                place[slot.path[-1]] = flat[name]
        if values:
            found[_BLOCK_NAMES[kind]] = _from_json(kind, values)
    lost = [name for name in flat if name not in used]
    if lost:
        raise TypeError(f"no block among {', '.join(k.__name__ for k in kinds)} has the field(s) {', '.join(lost)}")
    return found


#: Schema-1 fields that say nothing for a kind: an optimizer step timed no batch, no data,
#: no memory format and no compiled model (older versions wrote None, "none", [], False, False).
NOT_APPLICABLE = {OPTIMIZER_STEP: ("batch_size", "channels_last", "compile", "dataset", "input_shape")}


def record_kind(flat: dict) -> str:
    """The kind of a flat (schema 1) record: older versions wrote ``kind`` as
    ``training-step`` for every record but optimizer steps (or not at all), so a training
    record is known by its ``recipe``, a data-parallel one by its ``strategy``."""
    if flat.get("recipe") is not None:
        return TRAINING_TO_ACCURACY
    if flat.get("strategy") is not None:
        return DATA_PARALLEL
    return flat.get("kind") or TRAINING_STEP


def upgrade(flat: dict, strict: bool = False) -> dict:
    """A flat (schema 1) record as schema 2: its kind decided (``record_kind``), each field
    put in its block, fields that hold nothing (None, an empty list or object where that is
    the default) and fields that do not apply to the kind (``NOT_APPLICABLE``) left out.
    A name that is no record field stays at the top (or with ``strict``, TypeError)."""
    kind = record_kind(flat)
    nested: dict = {"schema": SCHEMA, "kind": kind}
    skipped = NOT_APPLICABLE.get(kind, ())
    for name, value in flat.items():
        slot = SLOTS.get(name)
        if slot is None:
            if strict:
                raise TypeError(f"a record has no field {name!r}")
            if name != "schema":
                nested[name] = value
            continue
        if name == "kind" or name in skipped or not _holds(value, slot):
            continue
        place = nested
        for key in slot.path[:-1]:
            place = place.setdefault(key, {})
        place[slot.path[-1]] = value
    return nested


def read_flat(line: dict) -> dict:
    """A record as a line of ``records.jsonl`` holds it, of either schema, read flat:
    ``flatten`` for schema 2; for schema 1 the same as ``flatten(upgrade(line))``, without
    building the blocks (every record of every history passes here). Unchecked, which
    ``bench.storage.store.check_record`` adds."""
    if line.get("schema", 1) != 1:
        return flatten(line)
    kind = record_kind(line)
    flat = _defaults()
    skipped = NOT_APPLICABLE.get(kind, ())
    for key, value in line.items():
        if key not in flat:
            if key != "schema":
                flat[key] = value
        elif value is not None and key not in skipped:
            flat[key] = value
    flat["kind"] = kind
    return flat


def flatten(record: dict) -> dict:
    """A schema-2 record (``Record.to_json``, its blocks objects) as readers see it: every
    field of ``RECORD_FIELDS`` under its flat name, what is absent as the field's default
    (None for a figure), in that order; keys no block knows are kept as they are."""
    flat = _defaults()
    for key, value in record.items():
        place = _PLACES.get(key)
        if place is None:
            if key != "schema":
                flat[key] = value
        elif place is _VALUE:
            flat[key] = value
        elif isinstance(value, dict):
            _spread(value, place, flat)
    return flat


def _spread(block: dict, place: dict, flat: dict) -> None:
    """``block``'s fields into ``flat`` under their flat names (``place``: field to name, or
    to a sub-block's own ``place``); fields no block knows are left out."""
    for key, value in block.items():
        name = place.get(key)
        if name.__class__ is str:
            flat[name] = value
        elif name is not None and isinstance(value, dict):
            _spread(value, name, flat)


def _defaults() -> dict:
    """Every flat field at its default, in ``RECORD_FIELDS`` order (fresh lists and objects)."""
    flat = dict(_DEFAULTS)
    for name in _MUTABLE_DEFAULTS:
        flat[name] = SLOTS[name].default()
    return flat


def _places() -> dict:
    """Where ``flatten`` puts each key of a schema-2 record: the envelope's values as
    themselves (``_VALUE``), a block's fields by their flat names."""
    places: dict = {}
    for name, slot in SLOTS.items():
        if len(slot.path) == 1:
            places[slot.path[0]] = _VALUE
            continue
        place = places.setdefault(slot.path[0], {})
        for key in slot.path[1:-1]:
            place = place.setdefault(key, {})
        place[slot.path[-1]] = name
    return places


_VALUE = object()
_PLACES = _places()
_DEFAULTS = {name: slot.default() for name, slot in SLOTS.items()}
_MUTABLE_DEFAULTS = tuple(name for name, value in _DEFAULTS.items() if isinstance(value, list | dict))
_ENVELOPE = frozenset(item.name for item in fields(Record))


#: The name under which readers keep ``repeat_medians`` of a record in place of its samples
#: (a column of the history, a key ``compare`` reads).
REPEAT_MEDIANS = "step_time_repeat_medians_ms"


def repeat_medians(record: dict) -> list[float] | None:
    """The median step time of each repeat of a record (a dict with ``step_time_samples_ms``,
    ``repeats`` and ``steps``), in ms, in order; None if the samples do not split into
    ``repeats`` blocks of ``steps``. The repeat is the unit ``compare`` tests (steps within
    one share its conditions), and the history keeps these for it."""
    samples = list(record.get("step_time_samples_ms") or [])
    repeats, steps = record.get("repeats"), record.get("steps")
    if not samples or not repeats or not steps or len(samples) != int(repeats) * int(steps):
        return None
    return np.median(np.reshape(samples, (int(repeats), int(steps))), axis=1).tolist()


def _escape(text: str) -> str:
    # Percent-encoding every character outside a small readable set keeps "/", "[", "]",
    # "," and "=" free as separators, whatever a model reference or an argument holds.
    return quote(text, safe=":.-_+")


def _with_arguments(name: str, arguments: dict | None) -> str:
    """``name`` escaped, then ``[key=value,...]`` (keys sorted, values as JSON) if any."""
    if not arguments:
        return _escape(name)
    pairs = (f"{_escape(k)}={_escape(json.dumps(arguments[k], separators=(',', ':')))}" for k in sorted(arguments))
    return f"{_escape(name)}[{','.join(pairs)}]"


def case_id(config: dict) -> str:
    """A readable key naming the case, e.g. ``resnet20/adam/b128/fp32/cl0/eager/synthetic/3x32x32``.

    Optional keys add to it only when set, so the ids of plain cases never change:
    ``model_kwargs`` (``timm:resnet18[drop_rate=0.1]``), ``hyperparameter_overrides``, the
    hyperparameters that differ from the optimizer's defaults (``sgdm[lr=0.1]``), and
    ``compile_mode`` (``compiled-max-autotune``). Names and values are percent-encoded
    outside ``A-Z a-z 0-9 : . - _ +``, so two different cases never share an id.
    Data-parallel cases end with strategy and world size: ``.../3x32x32/ddp/w8``.
    """
    shape = "x".join(str(n) for n in config["input_shape"])
    mode = config.get("compile_mode")
    parallel = []
    if config.get("strategy"):
        parallel = [config["strategy"], f"w{config['world_size']}"] + (["syncbn"] if config["sync_batchnorm"] else [])
    return "/".join(
        [
            _with_arguments(config["model"], config.get("model_kwargs")),
            _with_arguments(config["optimizer"], config.get("hyperparameter_overrides")),
            f"b{config['batch_size']}",
            config["precision"],
            f"cl{int(config['channels_last'])}",
            ("compiled" + (f"-{_escape(mode)}" if mode else "")) if config["compile"] else "eager",
            config["dataset"],
            shape,
            *parallel,
        ]
    )

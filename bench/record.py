"""The Record: one benchmark case's configuration, outcome and measurements, as plain data.

A Record is written once, by the runner, as one line of ``records.jsonl``; everything
downstream (reports, history, comparison) reads it back as a dict or a DataFrame row.
Units are in the field names: ``_ms`` milliseconds, ``_bytes`` bytes, ``throughput``
samples per second. A measurement that does not apply (a failed case, a CUDA-only
figure on the CPU) is ``None``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from urllib.parse import quote

import numpy as np


def utc_now() -> str:
    """The current time as ISO 8601 in UTC, to the second (a Record's ``timestamp``)."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


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


@dataclass
class Record:
    """One case of one run. Field order is the column order of ``records.jsonl``."""

    # identity
    run_id: str
    case_id: str
    timestamp: str  # ISO 8601, UTC, when the case finished
    suite: str
    # configuration (CASE_FIELDS, then PROTOCOL_FIELDS)
    model: str
    optimizer: str
    batch_size: int | None  # None for optimizer-step cases
    precision: str  # fp32 | tf32 | bf16 | fp16
    channels_last: bool
    compile: bool
    dataset: str  # synthetic | mnist | fashionmnist | cifar10
    input_shape: list[int]  # (C, H, W) of one sample
    steps: int  # timed steps per repeat
    warmup: int  # untimed steps before the first repeat
    repeats: int
    hyperparameters: dict = field(default_factory=dict)
    detailed: bool = False  # forward / backward / optimizer step timed separately
    threads: int | None = None  # torch intra-op threads the case ran with (torch.get_num_threads()); None: not kept
    # where it ran
    device: str = "cpu"  # cpu | cuda:N
    device_name: str = ""
    hostname: str = ""
    torch_version: str = ""
    git_commit: str | None = None
    # outcome
    status: str = "ok"
    error: str | None = None
    # the model
    params: int | None = None
    # time
    step_time_ms: float | None = None  # median over all timed steps
    step_time_iqr_ms: float | None = None  # 75th minus 25th percentile
    step_time_min_ms: float | None = None
    step_time_samples_ms: list[float] = field(default_factory=list)  # every timed step
    throughput: float | None = None  # batch_size / median step time, samples/s
    forward_ms: float | None = None  # medians, detailed mode only
    backward_ms: float | None = None
    optimizer_ms: float | None = None
    final_loss: float | None = None
    # where the case's wall time went: inside its warm-up and timed steps, against the whole case
    # (building, the memory pass, probes, bookkeeping included), seconds
    steps_s: float | None = None
    case_wall_s: float | None = None
    # cuDNN's autotuning of the case's convolutions, run before its warm-up (bench.kinds.step.autotune), s:
    # 0.0 where an earlier case of the process tuned the same shapes; None off CUDA, without
    # cudnn.benchmark, for compiled and data-parallel cases (they autotune inside their warm-up)
    autotune_s: float | None = None
    # memory
    param_bytes: int | None = None
    grad_bytes: int | None = None
    optimizer_state_bytes: int | None = None  # summed over the optimizer's state tensors
    optimizer_state_allocated_bytes: int | None = None  # CUDA memory_allocated delta, update creating the state
    state_buffers_per_param: float | None = None  # measured: state tensors shaped like their param
    state_buffers_theory: int | None = None  # optimizers.state_buffers(name)
    state_bytes_per_param: float | None = None  # optimizer_state_bytes / params
    peak_memory_bytes: int | None = None  # CUDA: max_memory_allocated over the timed steps, less at case start
    peak_memory_source: str | None = None  # cuda_max_allocated | process_rss | process_rss_sampled
    activation_bytes: int | None = None  # peak_memory_bytes minus static_memory_bytes
    # in use when the peak counter was reset, before the timed steps: parameters, gradients,
    # optimizer state, data and the case's library workspaces (CUDA: less memory_at_case_start_bytes)
    static_memory_bytes: int | None = None
    # loss scaling, float32 precision, allocator detail, process isolation
    warmup_steps_run: int | None = None  # untimed steps run: warmup, or more until the optimizer had stepped
    skipped_steps_warmup: int | None = None  # fp16: warm-up updates GradScaler skipped (inf/NaN gradients)
    skipped_steps_timed: int | None = None  # fp16: timed steps whose update GradScaler skipped
    loss_scale: float | None = None  # fp16: GradScaler's scale after the last timed step
    matmul_precision: str | None = None  # CUDA: float32 matmuls in effect, ieee | tf32 (bench.measure.precision)
    cudnn_conv_precision: str | None = None  # CUDA: float32 cuDNN convolutions in effect, ieee | tf32
    tf32_override: str | None = None  # CUDA: NVIDIA_TF32_OVERRIDE / TORCH_ALLOW_TF32_CUBLAS_OVERRIDE as set
    optimizer_state_requested_bytes: int | None = None  # CUDA: requested_bytes.all.current delta, same update
    # CUDA: the requested-bytes delta around the update that created the state differs from the state
    # tensors' bytes on the device (exact); without a requested count, the allocated delta lies
    # outside what the allocator's block rules allow (bench.measure.memory.state_allocation_bounds)
    optimizer_state_mismatch: bool | None = None
    # CUDA, less what was requested at the case's start: requested_bytes.all.current at the peak
    # reset, and requested_bytes.all.peak over the timed steps
    static_memory_requested_bytes: int | None = None
    peak_memory_requested_bytes: int | None = None
    peak_memory_reserved_bytes: int | None = None  # CUDA: max_memory_reserved over the timed steps (cache too)
    isolated: bool = False  # ran in a process of its own (--isolate)
    # CUDA: memory_allocated before the case built anything (what earlier cases or libraries left
    # allocated); the static, peak and requested figures are the case's own, this taken off
    memory_at_case_start_bytes: int | None = None
    # what a step costs the host (bench.measure.host), from untimed steps after warm-up and the timed steps
    host_syncs_per_step: int | None = None  # host-device synchronisations in one step
    host_syncs_source: str | None = None  # cuda_sync_debug_mode | host_reads (ops that synchronise on CUDA)
    host_time_ms: float | None = None  # median host-clock time of a timed step's Python code; CUDA: enqueue
    kernel_launches_per_step: int | None = None  # CUDA: kernel launches in one profiled step (torch.profiler)
    device_busy_ms: float | None = None  # CUDA: time the device was busy in that step (union of its activity)
    device_span_ms: float | None = None  # CUDA: that step's first device activity's start to its last's end
    # CUDA: training steps: device_busy_ms < 0.9 x device_span_ms; optimizer steps: device_time_ms < 0.9 x
    # step_time_ms; the device waited for the host
    host_bound: bool | None = None
    # GPU telemetry (bench.telemetry.gpu): the case's GPU sampled before and after every repeat
    telemetry_source: str | None = None  # pynvml | libnvidia-ml | nvidia-smi; None off CUDA or without one
    gpu_power_w_samples: list[float] | None = None  # NVML power draw after each repeat, W
    gpu_sm_clock_mhz_samples: list[float] | None = None  # SM clock after each repeat, MHz
    gpu_temperature_c_samples: list[float] | None = None  # GPU temperature after each repeat, degrees C
    gpu_throttle_reasons: list[str] | None = None  # NVML clocks-event reasons seen in any sample
    energy_per_step_j: float | None = None  # total-energy counter's rise over the timed repeats / timed steps, J
    samples_per_joule: float | None = None  # batch_size / energy_per_step_j
    energy_window_s: float | None = None  # host time the energy readings spanned, s
    # data parallel (bench/distributed); None in single-process cases. There ``batch_size`` is
    # one rank's batch, the step time is the slowest rank's per step, ``throughput`` is one
    # rank's (batch_size / step time) and the single-rank memory fields are the largest over ranks.
    strategy: str | None = None  # ddp | zero1 | fsdp
    world_size: int | None = None  # ranks the case ran on
    sync_batchnorm: bool | None = None  # BatchNorm layers converted to torch.nn.SyncBatchNorm
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
    # interference (bench.measure.load): the machine's load while the case ran
    load_average_1m: float | None = None  # 1-minute load average as the case started (os.getloadavg)
    other_cpu_fraction: float | None = None  # share of all CPUs' time other processes used during the case, 0-1
    # models by reference, run switches, FLOPs and utilisation
    model_kwargs: dict | None = None  # keyword arguments given to the model's builder; None: none given
    compile_mode: str | None = None  # torch.compile mode; None: not compiled, or the default mode
    flops_per_sample: float | None = None  # forward + backward FLOPs of one sample (torch FlopCounterMode, meta device)
    achieved_tflops: float | None = None  # flops_per_sample * throughput / 1e12, TFLOP/s
    peak_tflops: float | None = None  # the device's dense peak for the case's precision, TFLOP/s
    peak_tflops_source: str | None = (
        None  # where peak_tflops comes from (bench.measure.peaks table entry or --peak-tflops)
    )
    mfu: float | None = None  # model FLOP utilisation, achieved_tflops / peak_tflops (a fraction)
    # memory pass (bench.kinds.step.memory_pass): one untimed steady-state step after the timed ones,
    # every live tensor storage sorted by what it is at the step's peak (bench.measure.memory_breakdown),
    # bytes; the categories add up to the peak. tracked_*: real tensors; predicted_*: the same
    # step on fake tensors, before anything is allocated.
    tracked_parameters_bytes: int | None = None
    tracked_buffers_bytes: int | None = None
    tracked_gradients_bytes: int | None = None
    tracked_optimizer_state_bytes: int | None = None
    tracked_inputs_bytes: int | None = None  # the batch the step reads (images, labels)
    tracked_activations_bytes: int | None = None  # saved by autograd for backward, alive at the peak
    tracked_temporaries_bytes: int | None = None  # everything else alive at the peak
    tracked_peak_bytes: int | None = None
    tracked_peak_phase: str | None = None  # forward | backward | optimizer
    tracked_allocator_peak_bytes: int | None = None  # CUDA: max_memory_allocated over the tracked step
    rss_activation_bytes: int | None = None  # CPU: the resident-set activation figure, before the tracker's replaced it
    predicted_parameters_bytes: int | None = None
    predicted_buffers_bytes: int | None = None
    predicted_gradients_bytes: int | None = None
    predicted_optimizer_state_bytes: int | None = None
    predicted_inputs_bytes: int | None = None
    predicted_activations_bytes: int | None = None
    predicted_temporaries_bytes: int | None = None
    predicted_peak_bytes: int | None = None
    predicted_peak_phase: str | None = None
    predicted_device: str | None = None  # what the fake step ran as: cpu | cuda | "cpu for cuda"
    prediction_s: float | None = None  # wall time of the prediction, s
    memory_pass_error: str | None = None  # why tracked_* or predicted_* are missing
    # --find-max-batch (bench.kinds.step.max_batch): the largest batch whose step fits, by doubling then bisection
    max_batch_size: int | None = None  # measured: the largest batch that trained without running out
    max_batch_predicted: int | None = None  # the same search on predicted peaks
    max_batch_memory_bytes: int | None = None  # the memory it had to fit in
    max_batch_source: str | None = None  # what ran out: cuda_allocator | tracker_cap
    max_batch_attempts: list = field(default_factory=list)  # [batch, fitted] in the order tried
    max_batch_error: str | None = None  # why a search is missing (the case's timed figures stand)
    # training to accuracy (``convbench train``; all None in benchmark runs). One record per
    # (model, recipe, seed); ``steps`` is then the training steps taken, ``warmup`` 0 and
    # ``repeats`` 1, ``hyperparameters`` the recipe's (schedule included), ``final_loss`` the
    # mean training loss since the previous evaluation. Times are seconds of wall clock;
    # the training clock stops for evaluations, whose time is ``eval_time_s``.
    recipe: str | None = None  # the suite's [[recipe]] name; not None marks a training record
    seed: int | None = None  # initial weights, batch order and augmentation
    target_accuracy: float | None = None  # test accuracy (fraction) the time to target is for
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
    # what was timed: a whole training step, or the optimizer step alone (``convbench optim``)
    kind: str = "training-step"  # training-step | optimizer-step
    # optimizer-step cases: the step against the memory-bandwidth limit (bench.kinds.optimizer_step.runner).
    # Wall time is step_time_ms, host time host_time_ms; on the CPU device time = wall time.
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

    def to_dict(self) -> dict:
        return asdict(self)


RECORD_FIELDS = tuple(f.name for f in fields(Record))


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

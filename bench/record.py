"""The Record: one benchmark case's configuration, outcome and measurements, as plain data.

A Record is written once, by the runner, as one line of ``records.jsonl``; everything
downstream (reports, history, comparison) reads it back as a dict or a DataFrame row.
Units are in the field names: ``_ms`` milliseconds, ``_bytes`` bytes, ``throughput``
samples per second. A measurement that does not apply (a failed case, a CUDA-only
figure on the CPU) is ``None``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

#: Outcomes of a case. ``oom``: out of device memory; ``error``: any other exception
#: (message in ``error``); ``diverged``: the loss became non-finite.
STATUSES = ("ok", "oom", "error", "diverged")

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
)

#: How a case was measured. Two records can only be compared when these agree too.
PROTOCOL_FIELDS = ("steps", "warmup", "repeats", "hyperparameters", "detailed")


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
    # memory
    param_bytes: int | None = None
    grad_bytes: int | None = None
    optimizer_state_bytes: int | None = None  # summed over the optimizer's state tensors
    optimizer_state_allocated_bytes: int | None = None  # CUDA memory_allocated delta, first step
    state_buffers_per_param: float | None = None  # measured: state tensors shaped like their param
    state_buffers_theory: int | None = None  # optimizers.state_buffers(name)
    state_bytes_per_param: float | None = None  # optimizer_state_bytes / params
    peak_memory_bytes: int | None = None
    peak_memory_source: str | None = None  # cuda_max_allocated | process_rss | process_rss_sampled
    activation_bytes: int | None = None  # peak_memory_bytes minus static_memory_bytes
    static_memory_bytes: int | None = None  # in use before the first step (params, data) + grads + state
    # what was timed: a whole training step, or the optimizer step alone (``convbench optim``)
    kind: str = "training-step"  # training-step | optimizer-step
    # optimizer-step cases: the step against the memory-bandwidth limit (bench.optimizer_step)
    compulsory_bytes_per_param: float | None = None  # the algorithm's minimum (optimizers.traffic)
    traffic_bytes_per_param: float | None = None  # what the implementation's kernels move
    achieved_bandwidth_gbs: float | None = None  # compulsory bytes x params / median step, 1e9 B/s
    traffic_bandwidth_gbs: float | None = None  # traffic bytes x params / median step, 1e9 B/s
    measured_bandwidth_gbs: float | None = None  # the device's STREAM triad, median, same run
    bandwidth_fraction: float | None = None  # achieved / measured bandwidth

    def to_dict(self) -> dict:
        return asdict(self)


RECORD_FIELDS = tuple(f.name for f in fields(Record))


def case_id(config: dict) -> str:
    """A readable key naming the case, e.g. ``resnet20/adam/b128/fp32/cl0/eager/synthetic/3x32x32``."""
    shape = "x".join(str(n) for n in config["input_shape"])
    return "/".join(
        [
            config["model"],
            config["optimizer"],
            f"b{config['batch_size']}",
            config["precision"],
            f"cl{int(config['channels_last'])}",
            "compiled" if config["compile"] else "eager",
            config["dataset"],
            shape,
        ]
    )

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
    batch_size: int
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
    # memory pass (bench.memory_pass): one untimed steady-state step after the timed ones,
    # every live tensor storage sorted by what it is at the step's peak (bench.memory_breakdown),
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
    # --find-max-batch (bench.max_batch): the largest batch whose step fits, by doubling then bisection
    max_batch_size: int | None = None  # measured: the largest batch that trained without running out
    max_batch_predicted: int | None = None  # the same search on predicted peaks
    max_batch_memory_bytes: int | None = None  # the memory it had to fit in
    max_batch_source: str | None = None  # what ran out: cuda_allocator | tracker_cap
    max_batch_attempts: list = field(default_factory=list)  # [batch, fitted] in the order tried

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

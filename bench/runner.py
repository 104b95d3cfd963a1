"""Running cases: build the model and optimizer, warm up, time the steps, measure memory,
and turn the outcome into a Record.

The training step is ``Trainer.step``: forward under autocast, loss, backward through the
GradScaler, optimizer step, gradients zeroed in place. Everything else here is set-up,
measurement and bookkeeping around it. A case that fails is a Record too: ``oom`` (CUDA
out of memory; the case's memory is freed and the sweep goes on), ``diverged`` (a
non-finite loss) or ``error`` (any other exception, message kept). Fields measured before
the fault stay in the record. KeyboardInterrupt is not caught: it ends the sweep.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import models
import optimizers
from bench import data, memory, timing
from bench.record import Record
from bench.store import utc_now
from bench.suite import Case

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: The hyperparameters the registry's optimizers take (their values go in the record).
HYPERPARAMETERS = ("lr", "betas", "eps", "momentum")


class SetupError(ValueError):
    """A case that cannot run here at all (no such device, a precision the device lacks, a
    model that cannot take the input); raised before anything runs."""


class Diverged(Exception):
    """The loss became non-finite."""


@dataclass(frozen=True)
class RunContext:
    """What every case of a run shares: where it runs and what it is filed under."""

    run_id: str
    suite: str
    device: torch.device
    env: dict = field(default_factory=dict)  # bench.env.collect_env()
    data_root: Path | str = data.DEFAULT_ROOT
    download: bool = False


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SetupError(f"device {name!r}: CUDA is not available on this machine; use --device cpu")
        index = torch.cuda.current_device() if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise SetupError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        device = torch.device("cuda", index)
    return device


def check_cases(cases: Sequence[Case], device: torch.device) -> None:
    """Fail before any work on a case that cannot run: TF32 off CUDA, or a model that cannot
    take its input (checked by a forward pass on the meta device, which costs no memory)."""
    for case in cases:
        if case.precision == "tf32" and device.type != "cuda":
            raise SetupError(f"{case.case_id}: precision 'tf32' needs a CUDA device, not {device}")
    shapes = {(c.model, c.input_shape, c.num_classes, c.batch_size) for c in cases}
    for model_name, input_shape, num_classes, batch_size in sorted(shapes):
        try:
            with torch.device("meta"):
                model = models.build(model_name, in_channels=input_shape[0], num_classes=num_classes)
                output = model(torch.empty(batch_size, *input_shape))
        except NotImplementedError:
            continue  # an operator without a meta kernel: nothing learnt, the real run will tell
        except (RuntimeError, ValueError) as error:
            raise SetupError(
                f"model {model_name!r} cannot train on batches of {batch_size} x {tuple(input_shape)}: {error}"
            ) from None
        if tuple(output.shape) != (batch_size, num_classes):
            raise SetupError(
                f"model {model_name!r} gives outputs of shape {tuple(output.shape)} for input "
                f"{tuple(input_shape)}; expected ({batch_size}, {num_classes})"
            )


@contextlib.contextmanager
def cuda_backend_settings(precision: str, device: torch.device) -> Iterator[None]:
    """On CUDA, for one case: cuDNN autotuning on (shapes are fixed, as in training; the
    warm-up pays for it), and TF32 for float32 matmuls and convolutions only in ``tf32``
    cases (PyTorch's own default allows it for cuDNN convolutions, which would make ``fp32``
    partly TF32). The previous settings come back afterwards. TF32 is set through the
    ``allow_tf32`` flags, which every supported PyTorch has; mixing them with the newer
    ``fp32_precision`` API is an error in PyTorch, so only these are touched."""
    if device.type != "cuda":
        yield
        return
    cuda, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = cuda.allow_tf32, cudnn.allow_tf32, cudnn.benchmark
    cuda.allow_tf32 = cudnn.allow_tf32 = precision == "tf32"
    cudnn.benchmark = True
    try:
        yield
    finally:
        cuda.allow_tf32, cudnn.allow_tf32, cudnn.benchmark = saved


class Trainer:
    """One training step, split into the phases that detailed mode times separately."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        batches: Sequence[tuple[Tensor, Tensor]],
        precision: str,
        device: torch.device,
    ) -> None:
        self.model, self.optimizer = model, optimizer
        self.batches = itertools.cycle(batches)
        dtype = AUTOCAST_DTYPES.get(precision)
        # No autocast context at all in float32: even a disabled one costs microseconds a step.
        self.autocast = functools.partial(torch.autocast, device.type, dtype=dtype) if dtype else contextlib.nullcontext
        # fp16 needs loss scaling; for other precisions the disabled scaler passes through.
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        self.loss: Tensor | None = None
        self.losses: list[Tensor] = []  # checked for non-finite values between repeats
        self.checked = 0  # steps whose loss has been checked

    def forward(self) -> None:
        images, labels = next(self.batches)
        with self.autocast():
            self.loss = F.cross_entropy(self.model(images), labels)
        self.losses.append(self.loss.detach())

    def backward(self) -> None:
        self.scaler.scale(self.loss).backward()

    def update(self) -> None:
        self.scaler.step(self.optimizer)
        self.scaler.update()
        # In place rather than set to None: gradients then stay allocated between steps,
        # so params + grads + optimizer state are the static memory and the rest is activations.
        self.optimizer.zero_grad(set_to_none=False)

    def step(self) -> None:
        self.forward()
        self.backward()
        self.update()

    def check_finite(self) -> float:
        """The last loss; raises Diverged if a loss since the last check was not finite."""
        losses = torch.stack(self.losses).float().cpu()
        self.losses.clear()
        finite = torch.isfinite(losses)
        if not bool(finite.all()):
            first = int((~finite).nonzero()[0])
            raise Diverged(f"the loss became {losses[first].item()} at step {self.checked + first + 1}")
        self.checked += len(losses)
        return float(losses[-1])


def hyperparameters(optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's ``HYPERPARAMETERS`` as JSON-ready values (tuples as lists)."""
    values = {k: optimizer.defaults[k] for k in HYPERPARAMETERS if k in optimizer.defaults}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


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
    model = models.build(case.model, in_channels=case.input_shape[0], num_classes=case.num_classes).to(device)
    if case.channels_last:
        model = model.to(memory_format=torch.channels_last)
        batches = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in batches]
    out["params"] = sum(p.numel() for p in model.parameters())
    out["param_bytes"] = memory.param_bytes(model)
    optimizer = optimizers.build(case.optimizer, model.parameters())
    out["hyperparameters"] = hyperparameters(optimizer)
    if case.compile:
        torch.compiler.reset()  # a fresh cache: Dynamo's recompile limit would fall back to eager
    trainer = Trainer(torch.compile(model) if case.compile else model, optimizer, batches, case.precision, device)
    return model, optimizer, trainer


def measure(case: Case, context: RunContext, clock: timing.Clock, meter: memory.Meter, out: dict) -> None:
    """Train ``case`` and put its measurements in ``out`` as they are made."""
    model, optimizer, trainer = build(case, context, out)

    # The first step creates the optimizer state; an allocator meter sees it appear.
    baseline = meter.in_use()
    trainer.forward()
    trainer.backward()
    before = meter.in_use()
    trainer.update()
    if meter.counts_allocations:
        out["optimizer_state_allocated_bytes"] = meter.in_use() - before
    for _ in range(case.warmup - 1):
        trainer.step()
    trainer.check_finite()

    out["grad_bytes"] = memory.grad_bytes(model)
    out["optimizer_state_bytes"] = memory.optimizer_state_bytes(optimizer)
    out["state_buffers_per_param"] = memory.state_buffers_per_param(optimizer)
    out["state_bytes_per_param"] = out["optimizer_state_bytes"] / out["params"]
    out["static_memory_bytes"] = baseline + out["grad_bytes"] + out["optimizer_state_bytes"]

    phases: list[Callable[[], None]] = (
        [trainer.forward, trainer.backward, trainer.update] if case.detailed else [trainer.step]
    )
    per_phase: list[list[float]] = [[] for _ in phases]
    meter.reset_peak()
    for _ in range(case.repeats):
        for samples, new in zip(per_phase, timing.time_steps(phases, case.steps, clock), strict=True):
            samples.extend(new)
        out["final_loss"] = trainer.check_finite()
    out["peak_memory_bytes"] = meter.peak()
    out["peak_memory_source"] = meter.source
    out["activation_bytes"] = out["peak_memory_bytes"] - out["static_memory_bytes"]

    step_samples = [sum(parts) for parts in zip(*per_phase, strict=True)]
    summary = timing.summarize(step_samples)
    out["step_time_samples_ms"] = step_samples
    out["step_time_ms"], out["step_time_iqr_ms"], out["step_time_min_ms"] = summary.median, summary.iqr, summary.min
    out["throughput"] = case.batch_size / (summary.median / 1e3)
    if case.detailed:
        medians = [timing.summarize(samples).median for samples in per_phase]
        out["forward_ms"], out["backward_ms"], out["optimizer_ms"] = medians


def run_case(case: Case, context: RunContext) -> Record:
    """Run one case and return its Record, whatever happened (bar KeyboardInterrupt)."""
    out: dict = {"state_buffers_theory": optimizers.state_buffers(case.optimizer)}
    status, error = "ok", None
    device = context.device
    clock, meter = instruments_for(device)
    device_scope = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    try:
        with device_scope, cuda_backend_settings(case.precision, device):
            measure(case, context, clock, meter, out)
    except torch.cuda.OutOfMemoryError as fault:
        status, error = "oom", _message(fault)
    except Diverged as fault:
        status, error = "diverged", str(fault)
    except Exception as fault:  # noqa: BLE001  (any failure of one case is that case's result)
        status, error = "error", f"{type(fault).__name__}: {_message(fault)}"
    finally:
        # Past the except clauses the exception and its frames are gone, so nothing holds
        # the case's tensors any more and their memory can go back.
        meter.release()
    return Record(
        run_id=context.run_id,
        case_id=case.case_id,
        timestamp=utc_now(),
        suite=context.suite,
        **case.config(),
        steps=case.steps,
        warmup=case.warmup,
        repeats=case.repeats,
        detailed=case.detailed,
        device=str(device),
        device_name=device_name(device, context.env),
        hostname=context.env.get("hostname", ""),
        torch_version=torch.__version__,
        git_commit=context.env.get("git_commit"),
        status=status,
        error=error,
        **out,
    )


def _message(fault: BaseException) -> str:
    return str(fault).strip() or type(fault).__name__


def device_name(device: torch.device, env: dict) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return env.get("cpu", {}).get("model", "")


def run_cases(cases: Sequence[Case], context: RunContext, on_record: Callable[[Case, Record], None]) -> None:
    """Run the cases in order, handing each Record to ``on_record`` as soon as it exists."""
    for case in cases:
        on_record(case, run_case(case, context))

"""The memory pass of a case: the exact breakdown of one tracked step, measured on real
tensors and predicted on fake ones, and the largest batch that fits.

It runs after a case is timed, on a fresh model and optimizer built exactly as the timed
pass builds them (``bench.kinds.step.runner.build``, handed in as ``build``), so timing is untouched.
The same code measures and predicts: ``tracked_step`` builds the case, trains one step to
create the gradients and the optimizer state, then breaks down a second, steady-state step
(``bench.measure.memory_breakdown``). Under ``FakeTensorMode``
(``torch._subclasses.fake_tensor``) every tensor is shape and dtype only, so the same step
costs no memory and needs no device: that is the prediction.

A prediction for CUDA needs CUDA's fake tensors, whose backward pass wants a real device.
Where there is none, the step runs as a CPU stand-in (CPU autocast rules, CPU kernels'
saved tensors) with every storage rounded up as the CUDA allocator rounds it;
``predicted_device`` says which it was.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

import models
import optimizers
from bench.kinds.step import setup_cache
from bench.kinds.step.suite import Case
from bench.kinds.step.trainer import Trainer
from bench.measure import faults, memory_breakdown
from bench.measure.memory_breakdown import Breakdown

#: ``build(case, out)`` -> (model, optimizer, trainer): ``bench.kinds.step.runner.build`` for one run
#: context; ``out`` collects what it records about the case.
Build = Callable[[Case, dict], tuple[nn.Module, torch.optim.Optimizer, object]]


@dataclass(frozen=True)
class Prediction:
    """A breakdown predicted on fake tensors: ``device`` is what the fake step ran as
    (``cuda``, ``cpu``, or ``cpu for cuda`` for the stand-in); ``seconds`` its wall time."""

    breakdown: Breakdown
    device: str
    seconds: float


def tracked_step(
    case: Case,
    device: torch.device,
    build: Build,
    bytes_on: str | None = None,
    cap_bytes: int | None = None,
    before: Callable[[], None] | None = None,
) -> Breakdown:
    """Build ``case``, train one step, and break down the next (``memory_breakdown.track_step``);
    ``before()`` is called just before that second step. With ``cap_bytes`` both steps are
    tracked, and either raises ``memory_breakdown.MemoryCapExceeded`` as soon as its tensors
    exceed the cap."""
    model, optimizer, trainer = build(case, {})
    if cap_bytes is None:
        trainer.step()
    else:
        memory_breakdown.track_step(model, optimizer, trainer.step, device, bytes_on, cap_bytes)
    if before is not None:
        before()
    return memory_breakdown.track_step(model, optimizer, trainer.step, device, bytes_on, cap_bytes)


def eager_only(case: Case) -> str | None:
    """Why the memory pass cannot run ``case``, or None: the tracker and the fake-tensor
    prediction see eager steps only, and a compiled optimizer step on fake tensors crashes
    the process (it reads their data pointers)."""
    if case.compile:
        return "compiled case: the tracker and the prediction see eager steps only"
    if optimizers.spec(case.optimizer).implementation == "compiled":
        return f"compiled optimizer {case.optimizer!r}: the tracker and the prediction see eager steps only"
    return None


def predict(case: Case, device: torch.device) -> Prediction:
    """The breakdown of ``case`` on ``device``, from one step on fake tensors.

    The case is predicted eager, on synthetic data (a real dataset's batches have the same
    shapes and dtypes), with the model, optimizer and ``bench.kinds.step.trainer.Trainer`` the timed
    pass uses. Raises ``memory_breakdown.TrackerUnavailable`` where torch lacks the
    tracker, ``KeyError`` for an unknown model or optimizer, ValueError for a compiled case or
    optimizer (``eager_only``)."""
    reason = eager_only(case)
    if reason is not None:
        raise ValueError(reason)
    device = torch.device(device)
    fake_on = stand_in_device(device)
    start = time.perf_counter()
    mode = FakeTensorMode()
    built = _fake_build(case, fake_on, mode)
    with mode, torch.device(fake_on):
        breakdown = tracked_step(case, fake_on, lambda _case, _out: built, bytes_on=device.type)
    label = fake_on.type if fake_on.type == device.type else f"{fake_on.type} for {device.type}"
    return Prediction(breakdown, label, time.perf_counter() - start)


def _fake_build(case: Case, device: torch.device, mode: FakeTensorMode) -> tuple:
    """``bench.kinds.step.runner.build`` on fake tensors, made on ``device`` directly: ``Module.to``
    cannot convert a fake module (it swaps tensors, and fake ones are weakly referenced),
    so channels-last conversion replaces the parameters and buffers instead, as ``to``
    would convert them (the 4-D and 5-D ones), before the optimizer sees them."""
    with mode, torch.device(device):
        model = models.build(
            case.model, in_channels=case.input_shape[0], num_classes=case.num_classes, **case.model_kwargs
        )
        if case.channels_last:
            _to_channels_last(model)
        images = torch.randn(case.batch_size, *case.input_shape)
        labels = torch.randint(0, case.num_classes, (case.batch_size,))
        if case.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        optimizer = optimizers.build(case.optimizer, model.parameters(), **case.hyperparameters)
        trainer = Trainer(model, optimizer, [(images, labels)], case.precision, device)
    # fp16's loss scaler decides whether to step by reading its overflow flag, a value fake
    # tensors do not have. Without it the step differs by a few 0-d tensors (the scale, the
    # flag, the scaled loss): it unscales the gradients in place.
    trainer.scaler = torch.amp.GradScaler(device.type, enabled=False)
    return model, optimizer, trainer


def _to_channels_last(model: nn.Module) -> None:
    for module in model.modules():
        for tensors in (module._parameters, module._buffers):
            for name, tensor in tensors.items():
                if tensor is not None and tensor.dim() in (4, 5):
                    layout = torch.channels_last if tensor.dim() == 4 else torch.channels_last_3d
                    converted = tensor.detach().contiguous(memory_format=layout)
                    tensors[name] = (
                        nn.Parameter(converted, tensor.requires_grad) if name in module._parameters else converted
                    )


def stand_in_device(device: torch.device) -> torch.device:
    """The device a fake step for ``device`` runs on here: itself if it exists, else the CPU."""
    if device.type == "cuda" and not torch.cuda.is_available():
        return torch.device("cpu")
    return device


def record_fields(
    case: Case,
    device: torch.device,
    build: Build,
    measured: dict,
    cuda: object = torch.cuda,
    share: bool = False,
    predictor: Callable[[Case, torch.device], Prediction] | None = None,
) -> dict:
    """The Record fields of the memory pass: the tracked breakdown (``tracked_*``), the
    prediction (``predicted_*``) and, on CUDA, the allocator's peak over the tracked step
    (``tracked_allocator_peak_bytes``). Where the timed pass's peak was the process's
    resident set (the CPU; ``measured`` holds the timed pass's fields), the tracked figure
    becomes ``activation_bytes`` (activations plus temporaries) and the resident-set one
    moves to ``rss_activation_bytes``. A part that cannot run
    leaves its fields out and says why in ``memory_pass_error``; ``cuda`` is the module
    whose allocator statistics are read (a fake in tests). With ``share``, the prediction is
    the one an earlier case of the run made where it cannot differ
    (``bench.kinds.step.setup_cache.prediction``; its ``prediction_s`` is the seconds that one took).
    ``predictor`` makes the prediction (default ``predict``; the runner's makes it ahead in a
    worker, ``bench.kinds.step.prediction_worker``)."""
    out: dict = {}
    errors = []
    reason = eager_only(case)
    if reason is not None:
        return {"memory_pass_error": reason}
    try:
        on_cuda = device.type == "cuda"
        reset_peak = (lambda: cuda.reset_peak_memory_stats(device)) if on_cuda else None
        tracked = tracked_step(case, device, build, before=reset_peak)
        if on_cuda:
            out["tracked_allocator_peak_bytes"] = cuda.max_memory_allocated(device)
        out.update(tracked.fields("tracked"))
        if str(measured.get("peak_memory_source")).startswith("process_rss"):
            out["rss_activation_bytes"] = measured.get("activation_bytes")
            out["activation_bytes"] = tracked.activations + tracked.temporaries
    except faults.STOPS:
        raise
    except BaseException as error:  # noqa: BLE001  (the timed figures stand; say why these are missing)
        errors.append(f"tracked step: {type(error).__name__}: {error}")
    try:
        predictor = predictor or predict
        prediction = setup_cache.prediction(case, device, predictor) if share else predictor(case, device)
        out.update(prediction.breakdown.fields("predicted"))
        out["predicted_device"] = prediction.device
        out["prediction_s"] = prediction.seconds
    except faults.STOPS:
        raise
    except BaseException as error:  # noqa: BLE001
        errors.append(f"prediction: {type(error).__name__}: {error}")
    if errors:
        out["memory_pass_error"] = "; ".join(errors)
    return out

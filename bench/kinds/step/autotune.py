"""cuDNN's autotuning, done before a case's warm-up rather than inside it.

With ``torch.backends.cudnn.benchmark`` on (``bench.measure.precision.cuda_backend_settings``
turns it on for every CUDA case), the first convolution of each new shape times every cuDNN
algorithm for it, forward and backward, and caches the fastest for the process. On an H100
that took about 10 s in the first case of each (model, batch, precision, layout) of a
nightly, inside its warm-up, so inside the reported ``steps_s``: set-up counted as
measuring. ``autotune_pass`` does it beforehand, once per ``key`` in a process: one forward
and backward on the case's first batch (``rehearse``), after which the case's model,
gradients, optimizer, batches and random generators are as they were, so the warm-up and
the timed steps that follow run what they ran before and every figure is the same; only the
time moves, into ``autotune_s``.

Not done for compiled cases (their warm-up compiles, and a rehearsal outside it would run a
compiled graph that the warm-up has not yet set up, cudagraph trees included), nor for
data-parallel ones (a backward outside the step would run the strategy's collectives).
"""

from __future__ import annotations

import time
from types import ModuleType

import torch
import torch.nn.functional as F

from bench.kinds.step.suite import Case
from bench.kinds.step.trainer import Trainer

_tuned: set[tuple] = set()  # keys autotuned in this process: cuDNN's cache is the process's


def clear() -> None:
    """Forget which shapes were autotuned (a new process starts with none)."""
    _tuned.clear()


def key(case: Case, device: torch.device) -> tuple:
    """What sets the convolutions cuDNN tunes for ``case``: the model and its arguments, the
    batch's shape, the precision (dtype, and TF32 allowed or not, both in cuDNN's cache
    key), the memory layout, and the device."""
    return (
        case.model,
        repr(sorted(case.model_kwargs.items())),
        case.num_classes,
        case.batch_size,
        tuple(case.input_shape),
        case.precision,
        case.channels_last,
        str(device),
    )


def tunes(device: torch.device, backends: ModuleType = torch.backends) -> bool:
    """Whether steps on ``device`` autotune cuDNN now: on CUDA with ``cudnn.benchmark`` on."""
    return device.type == "cuda" and bool(backends.cudnn.benchmark)


def autotune_pass(case: Case, trainer: Trainer, device: torch.device, data_parallel: bool = False) -> float | None:
    """Autotune ``case``'s convolutions before its warm-up; the seconds it took (``autotune_s``):
    0.0 where an earlier case of the process tuned the same ``key``, None where steps do not
    autotune (not CUDA, ``cudnn.benchmark`` off) or the case is compiled or ``data_parallel``
    (see the module docstring). Leaves everything the warm-up reads as it was (``rehearse``)."""
    if not tunes(device) or case.compile or data_parallel:
        return None
    tuned = key(case, device)
    if tuned in _tuned:
        return 0.0
    start = time.perf_counter()
    rehearse(trainer, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    _tuned.add(tuned)
    return time.perf_counter() - start


def rehearse(trainer: Trainer, device: torch.device) -> None:
    """One forward and backward of ``trainer``'s step on its first batch, without the
    optimizer's update, leaving what a step changes as it was: parameters (never updated),
    buffers (BatchNorm's running statistics and counters, restored), gradients (restored:
    none in a model that has not stepped), the optimizer's state (untouched), the batches
    (not drawn from: the first is read from the batch list), the loss scale (read, not
    updated) and the CPU's and ``device``'s random generators (restored, for dropout).
    Raises what the step raises."""
    model = trainer.model
    images, labels = trainer.first_batch
    buffers = [(buffer, buffer.clone()) for buffer in model.buffers()]
    gradients = [(parameter, _copy(parameter.grad)) for parameter in model.parameters()]
    cpu_generator = torch.get_rng_state()
    device_generator = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    try:
        with trainer.autocast():
            loss = F.cross_entropy(model(images), labels)
        trainer.scaler.scale(loss).backward()
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
            for parameter, gradient in gradients:
                if gradient is None or parameter.grad is None:
                    parameter.grad = gradient
                else:  # in place: whatever holds the gradient tensor keeps holding it
                    parameter.grad.copy_(gradient)
        torch.set_rng_state(cpu_generator)
        if device_generator is not None:
            torch.cuda.set_rng_state(device_generator, device)


def _copy(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.detach().clone()

"""Set-up that cases of one run share, where sharing cannot change a figure.

A suite's cases repeat their expensive set-up: every case of a model builds and
initialises it again (twice, with the memory pass), and the fp32 and tf32 twins of a case
predict the same memory. On a fast device that set-up costs more wall time than the steps
it surrounds. Two caches cut it, each keyed by everything its result depends on:

- **Built models** (``build_model``): a model's initial weights depend on its builder, its
  arguments and the state of torch's CPU random generator when the builder starts (the
  runner seeds it, then makes the batches, which draw from it on the CPU). Drawing them is
  most of a build's cost (0.37 s for resnet50 on a 2-core CPU). The initial parameters and
  buffers of the first build for a key are kept, on the host, with the generator's state
  after it; a later build for the same key runs the builder on the meta device (its code
  runs as in a fresh build; nothing is drawn) and fills the model with the kept values, and
  sets the generator to that state, so the model, bit for bit, and every random number
  drawn afterwards are what a fresh build gives.
- **Memory predictions** (``prediction``): ``bench.kinds.step.memory_pass.predict`` runs
  one step on fake tensors outside the case's CUDA backend settings, so what it predicts
  depends on the case's model, input, batch, autocast dtype, memory layout, optimizer and
  its hyperparameters, and the device, but not on the float32 matmul precision: ``fp32``
  and ``tf32`` (the same program, TF32 being a flag inside cuBLAS and cuDNN) share one
  prediction. Nor on the dataset: the prediction always runs on synthetic batches of the
  same shapes. Optimizers never share one: the state they keep and the temporaries of
  their step set the peak and the phase it falls in.

A third cut is not a cache: a case ends by freeing its memory, and the full garbage
collection that frees its reference cycles walks every Python object of the process (some
300,000 with torch, 0.15 s on a 2-core CPU, several times a case). ``freeze_survivors``,
called as a case begins, moves what is alive then (modules, the caches above, nothing of a
case: the previous one was collected as it ended) out of the collector's sight
(``gc.freeze``), so each collection walks only what the case itself made.

The caches live for one process (a run, or one isolated case); ``clear`` empties them.
"""

from __future__ import annotations

import gc
import json
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

import models
from bench.kinds.step.suite import Case

#: Built models kept at once: a suite's cases run model by model, and the timed pass and the
#: memory pass of a case build the same one, so a few cover a run; each holds a model's
#: weights in host memory.
MODEL_SLOTS = 2

_models: OrderedDict[tuple, tuple[nn.Module, torch.Tensor]] = OrderedDict()
_predictions: dict[tuple, object] = {}


def clear() -> None:
    """Forget every kept model and prediction."""
    _models.clear()
    _predictions.clear()


def freeze_survivors() -> None:
    """Exempt every object alive now from later garbage collections (``gc.freeze``): call
    between cases, when all that is alive outlives them. Objects made afterwards (the
    case's model, tensors and their reference cycles) are collected as before."""
    gc.freeze()


def model_key(case: Case) -> tuple:
    """What a model built for ``case`` now depends on: its builder (the function itself, so a
    name registered again is a new key), arguments, and the CPU random generator's state
    (bytes) at this moment. Raises what ``models.build`` raises for an unknown name."""
    arguments = json.dumps(case.model_kwargs, sort_keys=True, default=repr)
    generator = bytes(torch.get_rng_state().numpy())
    builder = models.spec(case.model).builder
    return case.model, builder, arguments, case.input_shape[0], case.num_classes, generator


def build_model(case: Case, build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` (the case's model, on the host), or, where an earlier call with the same
    ``model_key`` built one, the same model made without its initialisation: ``build()`` runs
    on the meta device (the builder's own code runs, so the model is what it builds now, with
    no weights drawn) and every parameter and buffer gets the kept initial values, bit for
    bit and in the same layout; the CPU random generator is left as ``build()`` left it. A
    builder that cannot build on the meta device, or a model with a tensor outside its
    parameters and buffers, is built afresh."""
    key = model_key(case)
    kept = _models.get(key)
    if kept is not None:
        _models.move_to_end(key)
        initial, generator_after = kept
        model = _filled(build, initial)
        if model is not None:
            torch.set_rng_state(generator_after)
            return model
    model = build()
    _models[key] = ({name: tensor.detach().clone() for name, tensor in _tensors(model)}, torch.get_rng_state())
    while len(_models) > MODEL_SLOTS:
        _models.popitem(last=False)
    return model


def _tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Every parameter and buffer by name, a tied one under each of its names."""
    return [
        *model.named_parameters(remove_duplicate=False),
        *model.named_buffers(remove_duplicate=False),
    ]


def _filled(build: Callable[[], nn.Module], initial: dict[str, torch.Tensor]) -> nn.Module | None:
    """``build()`` on the meta device, moved to the host and given the ``initial`` tensors;
    None where that cannot reproduce the fresh build."""
    try:
        with torch.device("meta"):
            model = build()
    except Exception:  # noqa: BLE001  (a builder that needs real tensors is built afresh)
        return None
    if {name for name, _ in _tensors(model)} != set(initial) or _stray_meta_tensor(model):
        return None
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for name, tensor in _tensors(model):
            if tensor.shape != initial[name].shape or tensor.stride() != initial[name].stride():
                return None
            tensor.copy_(initial[name])
    return model


def _stray_meta_tensor(model: nn.Module) -> bool:
    """Whether a module keeps a meta tensor outside its parameters and buffers (a plain
    attribute), which moving the model would not give storage."""
    return any(
        isinstance(value, torch.Tensor) and value.is_meta
        for module in model.modules()
        for value in vars(module).values()
    )


def prediction_key(case: Case, device: torch.device) -> tuple:
    """What ``memory_pass.predict(case, device)`` depends on (see the module docstring)."""
    precision = "fp32" if case.precision == "tf32" else case.precision
    return (
        case.model,
        json.dumps(case.model_kwargs, sort_keys=True, default=repr),
        tuple(case.input_shape),
        case.num_classes,
        case.batch_size,
        precision,
        case.channels_last,
        case.compile,
        case.optimizer,
        json.dumps(case.hyperparameters, sort_keys=True, default=repr),
        str(device),
    )


def prediction(case: Case, device: torch.device, predict: Callable[[Case, torch.device], object]) -> object:
    """``predict(case, device)``, or what it returned for an earlier case with the same
    ``prediction_key``. An exception is not kept: the next case tries again."""
    key = prediction_key(case, device)
    if key not in _predictions:
        _predictions[key] = predict(case, device)
    return _predictions[key]

"""The commands that look things up without running a suite: the registries, the machine,
a model's receptive fields and a training step's predicted memory."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def models_frame(names: Sequence[str] = ()) -> pd.DataFrame:
    """The model registry (or the models ``names``): model, family, parameter count, input
    (C, H, W), classes. Raises UnknownNameError."""
    import pandas as pd
    import torch

    import models

    rows = []
    for name in names or models.available():
        entry = models.spec(name)
        with torch.device("meta"):
            model = models.build(name)
        rows.append(
            {
                "model": name,
                "family": entry.family,
                "params": sum(p.numel() for p in model.parameters()),
                "input (C, H, W)": "x".join(map(str, entry.input_shape)) if entry.input_shape else None,
                "classes": entry.num_classes,
            }
        )
    return pd.DataFrame(rows)


def optimizers_frame(names: Sequence[str] = ()) -> pd.DataFrame:
    """The optimizer registry (or ``names``) with the state each keeps per parameter."""
    import pandas as pd

    import optimizers

    rows = []
    for name in names or optimizers.available():
        entry = optimizers.spec(name)
        rows.append(
            {
                "optimizer": name,
                "algorithm": entry.algorithm,
                "implementation": entry.implementation,
                "source": entry.source,
                "state buffers / param": optimizers.state_buffers(name),
            }
        )
    return pd.DataFrame(rows)


def environment() -> dict:
    """This machine and its software (bench.measure.env.collect_env)."""
    from bench.measure.env import collect_env

    return collect_env()


def receptive_fields(
    model: str,
    input_size: Sequence[int] | int | None = None,
    layers: Sequence[str] | None = None,
    erf_samples: int = 8,
    progress: Callable[[str], None] | None = None,
) -> object:
    """Every layer's receptive field of ``model``: analytic, gradient-mask probe and effective
    (bench.receptive.measure's report). ``input_size`` is C,H,W, or one number N for an N x N
    input with the model's own channels (default: the model's own input).

    Raises:
        ModelReferenceError: the model does not say its input shape and none is given whole.
        ReceptiveFieldError: the analysis fails on the model.
        SetupError: the model cannot take the input.
    """
    import models
    from bench.measure.setup import SetupError
    from bench.receptive import ReceptiveFieldError, build_seeded, measure

    entry = models.spec(model)
    sizes = [input_size] if isinstance(input_size, int) else list(input_size or ())
    if len(sizes) == 3:
        shape = tuple(sizes)
    elif entry.input_shape is None:
        raise models.ModelReferenceError(
            model,
            "does not say its input shape: give --input-size C,H,W, or set the function's input_shape = (C, H, W)",
        )
    else:
        channels, height, width = entry.input_shape
        shape = (channels, height, width) if not sizes else (channels, sizes[0], sizes[0])
    try:
        rf_model = build_seeded(model, weights=erf_samples > 0)
        return measure(rf_model, shape, layers, erf_samples, progress=progress)
    except ReceptiveFieldError as error:
        raise SetupError(f"model {model!r}: {error}") from None
    except (RuntimeError, ValueError, TypeError) as error:  # a model that cannot take the input
        raise SetupError(f"model {model!r} fails on input {shape}: {type(error).__name__}: {error}") from None


@dataclasses.dataclass(frozen=True)
class MemoryPrediction:
    """``convbench memory``'s answer: the predicted breakdown by category (bytes), the phase
    the peak falls in, the device predicted as, the seconds the prediction took, and the
    largest batch that fits ``memory_bytes`` (None where no memory was given or none fits)."""

    breakdown: object
    phase: str
    device: str
    seconds: float
    memory_bytes: int | None
    largest_batch: int | None

    def frame(self) -> pd.DataFrame:
        """One row per category and the peak: name, bytes, MiB."""
        import pandas as pd

        from bench.measure.memory_breakdown import CATEGORIES

        rows = [{"": name.replace("_", " "), "bytes": getattr(self.breakdown, name)} for name in (*CATEGORIES, "peak")]
        return pd.DataFrame(rows).assign(MiB=lambda frame: (frame["bytes"] / 2**20).round(2))


def predict_memory(
    model: str,
    optimizer: str,
    batch_size: int,
    *,
    precision: str = "fp32",
    channels_last: bool = False,
    input_size: Sequence[int] | None = None,
    num_classes: int | None = None,
    device: str | None = None,
    device_memory: int | None = None,
    gpu: str | None = None,
    progress: Callable[[int, bool], None] | None = None,
) -> MemoryPrediction:
    """Predict one training step's memory on fake tensors (bench.kinds.step.memory_pass) and,
    given a memory (``device_memory`` bytes, a known ``gpu``'s, or the CUDA device's), the
    largest batch that fits it; ``progress(batch, fits)`` hears of each batch the search tries.
    Raises UnknownNameError, SetupError."""
    import torch

    import models
    import optimizers
    from bench.kinds.step import max_batch, memory_pass
    from bench.kinds.step.suite import single_case
    from bench.measure import setup

    models.spec(model)
    optimizers.spec(optimizer)
    target = torch.device(device or ("cuda" if gpu or torch.cuda.is_available() else "cpu"))
    memory = device_memory or max_batch.GPU_MEMORY_BYTES.get(gpu)
    if memory is None and target.type == "cuda" and torch.cuda.is_available():
        memory = max_batch.memory_for(target, None)
    case = single_case(model, optimizer, batch_size, precision, channels_last, input_size, num_classes)
    reason = memory_pass.eager_only(case)
    if reason is not None:
        raise setup.SetupError(f"--optimizer {optimizer}: {reason}; predict its eager form instead")
    setup.check_cases([case], target)  # the precision on this device, and the model on its input
    try:
        prediction = memory_pass.predict(case, target)
    except (RuntimeError, ValueError, TypeError) as error:  # e.g. a batch whose tensors overflow
        raise setup.SetupError(f"cannot predict {model} / {optimizer} / batch {batch_size}: {error}") from None
    largest = None
    if memory is not None:
        largest = max_batch.predicted_largest_batch(case, target, memory, progress=progress)
    breakdown = prediction.breakdown
    return MemoryPrediction(breakdown, breakdown.phase, str(prediction.device), prediction.seconds, memory, largest)

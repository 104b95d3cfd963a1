"""FLOPs of a training step and the utilisation they imply.

FLOPs are counted by torch's own counter (``torch.utils.flop_counter.FlopCounterMode``) on
the meta device: the model runs forward, cross-entropy and backward on tensors that have
shapes but no storage, so counting costs no memory and no arithmetic, whatever the model.
The counter counts matrix products and convolutions (2 FLOPs per multiply-add, the
convention of every MFU figure); element-wise work (activations, normalisation, the
optimizer step) is left out, as in the PaLM paper's MFU (Chowdhery et al. 2022, appendix B).
Backward counts what autograd runs: a convolution's weight gradient and, except for the
first layer, whose input needs none, its input gradient, each as many FLOPs as the forward.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

#: Samples in the counting batch: two, because BatchNorm refuses one sample of a 1x1 map.
_BATCH = 2


@dataclass(frozen=True)
class TrainingFlops:
    """FLOPs per sample of one training step: ``forward`` (model and loss) and ``backward``."""

    forward: float
    backward: float

    @property
    def total(self) -> float:
        return self.forward + self.backward


def training_flops(model: nn.Module, input_shape: tuple[int, int, int], num_classes: int) -> TrainingFlops:
    """Count one training step of ``model`` (built on the meta device) on samples of
    ``input_shape`` (C, H, W) with ``num_classes`` classes; FLOPs per sample.

    Raises NotImplementedError for an operator without a meta kernel.
    """
    images = torch.empty(_BATCH, *input_shape, device="meta")
    labels = torch.zeros(_BATCH, dtype=torch.long, device="meta")
    model.train()
    with FlopCounterMode(display=False) as counter:
        loss = F.cross_entropy(model(images), labels)
        forward = counter.get_total_flops()
        loss.backward()
        total = counter.get_total_flops()
    return TrainingFlops(forward / _BATCH, (total - forward) / _BATCH)


@functools.lru_cache(maxsize=256)
def _case_flops(model: str, kwargs_json: str, input_shape: tuple[int, int, int], num_classes: int) -> float | None:
    import models

    try:
        with torch.device("meta"):
            built = models.build(model, in_channels=input_shape[0], num_classes=num_classes, **json.loads(kwargs_json))
        return training_flops(built, input_shape, num_classes).total
    except (NotImplementedError, RuntimeError):  # an operator the meta device lacks: no count
        return None


def flops_per_sample(
    model: str, model_kwargs: dict, input_shape: tuple[int, int, int], num_classes: int
) -> float | None:
    """Forward + backward FLOPs of one sample for a model by name (counted once per
    configuration); ``None`` if the model cannot run on the meta device."""
    return _case_flops(model, json.dumps(model_kwargs, sort_keys=True), tuple(input_shape), num_classes)


def utilisation(
    flops: float | None, throughput: float | None, peak_tflops: float | None
) -> tuple[float | None, float | None]:
    """(achieved TFLOP/s, MFU): ``flops`` per sample times ``throughput`` (samples/s) over
    1e12, and that as a fraction of ``peak_tflops``; ``None`` where an input is missing."""
    if flops is None or throughput is None:
        return None, None
    achieved = flops * throughput / 1e12
    return achieved, (achieved / peak_tflops if peak_tflops else None)

"""Receptive fields of every layer: analytic (graph trace), empirical (gradient masks) and effective.

- ``bench.receptive.formulas``: the lab's formulas for one axis of a stack of layers.
- ``bench.receptive.analytic``: ``analyse(model, input_shape)`` traces the real forward pass
  and gives, per convolution, pooling and linear layer and per axis [h, w], the size, jump
  (effective stride) and start (minus the effective padding) of its field: output unit i
  covers input [i * jump + start, i * jump + start + size - 1].
- ``bench.receptive.probe``: ``gradient_masks`` (which input pixels get a non-zero gradient
  from one output unit of a linearised copy) and ``effective_fields`` (Luo et al. 2016).
"""

from bench.receptive.analytic import (
    Analysis,
    InputTooSmallError,
    LayerField,
    NoSpatialLayerError,
    ReceptiveFieldError,
    UnknownLayerError,
    UnsupportedOperationError,
    analyse,
)
from bench.receptive.probe import EffectiveField, GradientMask, effective_fields, gradient_masks

__all__ = [
    "Analysis",
    "EffectiveField",
    "GradientMask",
    "InputTooSmallError",
    "LayerField",
    "NoSpatialLayerError",
    "ReceptiveFieldError",
    "UnknownLayerError",
    "UnsupportedOperationError",
    "analyse",
    "effective_fields",
    "gradient_masks",
]

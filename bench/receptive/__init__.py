"""Receptive fields: the lab formulas and the analytic field of every layer of a traced graph.

``analyse(model, input_shape)`` gives, per convolution, pooling and linear layer and per
axis [h, w], the size, jump (effective stride) and start (minus the effective padding) of
its field: output unit i covers input [i * jump + start, i * jump + start + size - 1].
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

__all__ = [
    "Analysis",
    "InputTooSmallError",
    "LayerField",
    "NoSpatialLayerError",
    "ReceptiveFieldError",
    "UnknownLayerError",
    "UnsupportedOperationError",
    "analyse",
]

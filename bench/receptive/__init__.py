"""Receptive fields of every layer: analytic (graph trace), empirical (gradient masks) and effective.

- ``bench.receptive.formulas``: the lab's formulas for one axis of a stack of layers.
- ``bench.receptive.fields``: the per-axis fields and tensor layouts the trace carries, and
  the rules of single operations on them (windows, padding, unions, reshapes).
- ``bench.receptive.analytic``: ``analyse(model, input_shape)`` traces the real forward pass
  and gives, per convolution, pooling and linear layer and per axis [h, w], the size, jump
  (effective stride) and start (minus the effective padding) of its field: output unit i
  covers input [i * jump + start, i * jump + start + size - 1].
- ``bench.receptive.probe``: ``gradient_masks`` (which input pixels get a non-zero gradient
  from one output unit of a linearised copy) and ``effective_fields`` (Luo et al. 2016).
- ``bench.receptive.table``: ``measure`` runs all three and ``FieldReport.frame()`` is the
  table ``convbench rf`` prints.
- ``bench.receptive.section``: the ``[rf]`` section of a suite, for ``convbench run``.

Columns of the table (and of ``rf.csv``, which adds ``model`` and ``input_size`` in front).
Per-axis values are [h, w] lists; an axis whose units all see the whole input says
"global", one whose fields are not equal intervals at a fixed step says "irregular".

    layer            qualified module name from named_modules() (``name:k`` for the k-th reuse)
    kind             module class: Conv2d, MaxPool2d, AvgPool2d, LPPool2d, AdaptiveAvgPool2d,
                     AdaptiveMaxPool2d, Linear
    kernel, stride,  the layer's own geometry; for adaptive pooling the window it uses at this
    padding,         input size ("global" when it pools the whole map); empty for Linear
    dilation
    rf, jump, start  analytic field size, effective stride, first input index of unit 0
    rf_empirical     size of the probed unit's gradient-mask bounding box
    jump_empirical   shift of the box from the probed unit to its neighbour (None: one unit)
    start_empirical  the box's start extrapolated back to unit 0
    fill             fraction of the box with a non-zero gradient (< 1 for dilated stacks)
    probe_size       side of the square input the probe ran at (larger than the requested
                     input where that was needed to keep the field off the border)
    clipped          the border cuts the probed units' fields: empirical values are cut too
    match            probe boxes == analytic boxes for the probed unit and its neighbour
                     (where not clipped: equal size, jump and start)
    erf95            side of the smallest square, centred on the theoretical field's centre,
                     holding 95% of the effective field (mean |gradient|, random weights)
    erf_ratio        erf95 / rf per axis
    misaligned       some merge of paths on the way had paths whose centres differ
    not_probed       why the probe did not run on the layer (empty when it did)
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
from bench.receptive.table import COLUMNS, FieldReport, build_seeded, measure

__all__ = [
    "COLUMNS",
    "Analysis",
    "EffectiveField",
    "FieldReport",
    "GradientMask",
    "InputTooSmallError",
    "LayerField",
    "NoSpatialLayerError",
    "ReceptiveFieldError",
    "UnknownLayerError",
    "UnsupportedOperationError",
    "analyse",
    "build_seeded",
    "effective_fields",
    "gradient_masks",
    "measure",
]

"""One row per layer: the analytic field beside the gradient-mask probe and the effective field."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from bench.receptive.analytic import Analysis, LayerField, analyse
from bench.receptive.probe import EffectiveField, GradientMask, effective_fields, gradient_masks

COLUMNS = [
    "layer",
    "kind",
    "kernel",
    "stride",
    "padding",
    "dilation",
    "rf",
    "jump",
    "start",
    "rf_empirical",
    "jump_empirical",
    "start_empirical",
    "fill",
    "probe_size",
    "clipped",
    "match",
    "erf95",
    "erf_ratio",
    "misaligned",
    "not_probed",
]


def _per_axis(values: Sequence[object]) -> object:
    """[h, w], or the single word both axes share ('global')."""
    values = list(values)
    return values[0] if isinstance(values[0], str) and values[0] == values[1] else values


@dataclass(frozen=True, eq=False)
class FieldReport:
    """The three views of a model's receptive fields, for the same layers."""

    analysis: Analysis
    layers: list[LayerField]
    masks: dict[str, GradientMask]
    effective: dict[str, EffectiveField]

    def row(self, layer: LayerField) -> dict[str, object]:
        mask, erf = self.masks[layer.name], self.effective.get(layer.name)
        measured = mask.measured()
        return {
            "layer": layer.name,
            "kind": layer.kind,
            "kernel": layer.kernel,
            "stride": layer.stride,
            "padding": layer.padding,
            "dilation": layer.dilation,
            "rf": layer.rf,
            "jump": layer.jump,
            "start": layer.start,
            "rf_empirical": [axis["size"] for axis in measured],
            "jump_empirical": [axis["jump"] for axis in measured],
            "start_empirical": [axis["start"] for axis in measured],
            "fill": None if mask.skipped else round(mask.fill, 4),
            "probe_size": _per_axis(mask.input_size)
            if mask.input_size[0] != mask.input_size[1]
            else mask.input_size[0],
            "clipped": mask.clipped,
            "match": mask.matches(),
            "erf95": None if erf is None else erf.erf95,
            "erf_ratio": None if erf is None else _per_axis(erf.ratio),
            "misaligned": any(axis.misaligned for axis in layer.axes),
            "not_probed": mask.skipped,
        }

    def frame(self) -> pd.DataFrame:
        """The table ``convbench rf`` prints (columns: COLUMNS)."""
        return pd.DataFrame([self.row(layer) for layer in self.layers], columns=COLUMNS)


def measure(
    model: nn.Module,
    input_shape: Sequence[int],
    layers: Sequence[str] | None = None,
    erf_samples: int = 8,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> FieldReport:
    """Analytic fields, gradient masks and (unless ``erf_samples`` is 0) effective fields.

    ``layers`` are qualified module names (default: every convolution, pooling and linear
    layer); an unknown name raises UnknownLayerError before any probing starts.
    """
    if progress:
        progress(f"tracing {type(model).__name__} on a {'x'.join(map(str, input_shape))} input")
    analysis = analyse(model, input_shape)
    chosen = analysis.select(layers)
    masks = gradient_masks(model, analysis, chosen, progress)
    effective = effective_fields(model, analysis, chosen, erf_samples, seed, progress) if erf_samples else {}
    return FieldReport(analysis, chosen, masks, effective)


def build_seeded(name: str, seed: int = 0, weights: bool = True) -> nn.Module:
    """``models.build(name)`` with torch's generator seeded, leaving the global one as it was.

    The effective field depends on the weights, so the same seed gives the same table.
    Without ``weights`` the model is built on the meta device: the analytic fields and the
    probe never read them, and a large model's random initialisation takes seconds.
    """
    import models

    if not weights:
        with torch.device("meta"):
            return models.build(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return models.build(name)

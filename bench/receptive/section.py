"""The ``[rf]`` section of a suite: receptive fields of chosen models into a run's folder.

    [rf]
    models = ["resnet18", "cnn"]     # registry names (required, at least one)
    input_size = 224                 # optional: square input side for every model
                                     # (default: each model's natural input)
    erf_samples = 8                  # optional: random inputs averaged for the effective
                                     # field; 0 skips it (default 8)

    [rf.heatmap_layers]              # optional: layers whose maps are saved, per model
    resnet18 = ["layer4.1.conv2"]    # (default: each model's last Conv2d whose field is not global)

``run_rf_section`` writes into the run folder:

- ``rf.csv``: one row per layer of every model, the columns of ``bench.receptive.COLUMNS``
  after ``model`` and ``input_size`` ([h, w] of the input the fields were analysed at).
  Per-axis values are written as Python list literals ("[3, 3]"), words as words.
- ``rf_maps.npz``: for each model M and heat-map layer L, the arrays
  ``M/L/mask``       bool (H', W'): input pixels with a non-zero gradient from the probed
                     unit (H', W' is that row's ``probe_size``);
  ``M/L/field``      int (2, 2): rows h and w, the analytic [first, last] input index of
                     the probed unit's field, in the mask's coordinates;
  ``M/L/erf``        float64 (H, W): mean |gradient| of the centre unit over the random
                     inputs, at the analysed input size (absent when erf_samples is 0);
  ``M/L/erf_field``  int (2, 2): the centre unit's analytic field in the erf's coordinates.

Both files are written to a temporary name and renamed, so a reader never sees half a file.
Weights are random, drawn with torch's generator seeded with 0 for every model.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.receptive.analytic import InputTooSmallError, LayerField, ReceptiveFieldError, analyse
from bench.receptive.table import build_seeded, measure
from bench.storage.store import write_atomic

KEYS = ("models", "input_size", "heatmap_layers", "erf_samples")


@dataclass(frozen=True)
class RfSection:
    """A validated ``[rf]`` section; ``heatmap_layers`` has an entry for every model."""

    models: tuple[str, ...]
    input_size: int | None = None
    heatmap_layers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    erf_samples: int = 8


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _names(value: object, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"rf.{key} must be a non-empty list of strings, got {value!r}")
    return tuple(value)


def _input_shape(name: str, input_size: int | None) -> tuple[int, int, int]:
    import models

    shape = models.spec(name).input_shape
    if shape is None:
        raise ValueError(f"rf.models: model {name!r} does not say its input shape; set the function's input_shape")
    channels, height, width = shape
    return (channels, height, width) if input_size is None else (channels, input_size, input_size)


def rf_section_from_toml(table: dict) -> RfSection:
    """Validate a parsed ``[rf]`` table; a ValueError names the offending key.

    Every model is traced once on the meta device (no arithmetic), so unknown models, models
    without spatial layers, inputs too small and unknown layer names fail here, before a
    run starts.
    """
    import models

    if not isinstance(table, dict):
        raise ValueError(f"rf must be a table, got {type(table).__name__}")
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise ValueError(f"rf.{unknown[0]} is not a known key; valid keys: {', '.join(KEYS)}")
    if "models" not in table:
        raise ValueError("rf.models is required: a list of model names")
    names = _names(table["models"], "models")
    input_size = table.get("input_size")
    if input_size is not None and (not _is_int(input_size) or input_size < 1):
        raise ValueError(f"rf.input_size must be a positive integer, got {input_size!r}")
    erf_samples = table.get("erf_samples", 8)
    if not _is_int(erf_samples) or erf_samples < 0:
        raise ValueError(f"rf.erf_samples must be an integer >= 0, got {erf_samples!r}")
    chosen = table.get("heatmap_layers", {})
    if not isinstance(chosen, dict):
        raise ValueError(f"rf.heatmap_layers must be a table of model = [layer names], got {chosen!r}")
    for model in chosen:
        if model not in names:
            raise ValueError(f"rf.heatmap_layers.{model}: {model!r} is not one of rf.models")
    heatmap_layers = {}
    for name in names:
        try:
            models.spec(name)
        except models.UnknownNameError as error:
            raise ValueError(f"rf.models: {error}") from None
        try:
            analysis = analyse(build_seeded(name, weights=False), _input_shape(name, input_size))
        except ReceptiveFieldError as error:
            key = "input_size" if isinstance(error, InputTooSmallError) and input_size is not None else "models"
            raise ValueError(f"rf.{key}: model {name!r}: {error}") from None
        if name in chosen:
            layers = _names(chosen[name], f"heatmap_layers.{name}")
            try:
                analysis.select(layers)
            except ReceptiveFieldError as error:
                raise ValueError(f"rf.heatmap_layers.{name}: {error}") from None
        else:
            convolutions = [layer for layer in analysis.layers if layer.kind == "Conv2d"]
            local = [layer for layer in convolutions if not layer.is_global]
            layers = ((local or convolutions or analysis.layers)[-1].name,)
        heatmap_layers[name] = tuple(layers)
    return RfSection(names, input_size, heatmap_layers, erf_samples)


def _field(layer: LayerField, unit: tuple[int, int]) -> np.ndarray:
    """[[first, last] along h, [first, last] along w] of a unit's analytic field (its box if not affine)."""
    return np.array([axis.interval(u) or axis.box(u) for axis, u in zip(layer.axes, unit, strict=True)])


def run_rf_section(section: RfSection, run_dir: Path, progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Measure every model of ``section``; write ``rf.csv`` and ``rf_maps.npz`` into ``run_dir``."""
    frames, arrays = [], {}
    for name in section.models:
        shape = _input_shape(name, section.input_size)
        if progress:
            progress(f"rf: {name}")
        model = build_seeded(name, weights=section.erf_samples > 0)
        report = measure(model, shape, erf_samples=section.erf_samples, progress=progress)
        frame = report.frame()
        frame.insert(0, "input_size", [list(shape[1:])] * len(frame))
        frame.insert(0, "model", name)
        frames.append(frame)
        for layer_name in section.heatmap_layers.get(name, ()):
            mask, layer = report.masks[layer_name], report.analysis.layer(layer_name)
            if mask.skipped:  # not probed: rf.csv's not_probed column says why
                continue
            prefix = f"{name}/{layer_name}"
            arrays[f"{prefix}/mask"] = mask.mask
            at_analysis = mask.input_size == tuple(shape[1:])
            arrays[f"{prefix}/field"] = (
                _field(layer, mask.centre) if at_analysis else np.array(mask.expected_centre_boxes)
            )
            if layer_name in report.effective:
                arrays[f"{prefix}/erf"] = report.effective[layer_name].weights
                arrays[f"{prefix}/erf_field"] = _field(layer, layer.centre())
    table = pd.concat(frames, ignore_index=True)
    run_dir = Path(run_dir)
    write_atomic(run_dir / "rf.csv", table.to_csv(index=False).encode(), inside=run_dir)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_atomic(run_dir / "rf_maps.npz", buffer.getvalue(), inside=run_dir)
    return table

"""A small, hand-made run for the report tests: Records built through the real schema, with
step-time samples whose quartiles are known by hand, and one case of each failure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.record import Record, case_id
from bench.storage.store import RunWriter

PARAMS = {"cnn": 360_778, "resnet20": 272_474}
INPUT = {"cnn": [1, 28, 28], "resnet20": [3, 32, 32]}
#: Step times 10, 11, ..., 18 ms: quartiles 12, 14 (median) and 16 ms.
SAMPLES = [float(ms) for ms in range(10, 19)]


def record(model: str, optimizer: str, batch_size: int = 32, precision: str = "fp32", status: str = "ok") -> dict:
    config = dict(
        model=model,
        optimizer=optimizer,
        batch_size=batch_size,
        precision=precision,
        channels_last=False,
        compile=False,
        dataset="synthetic",
        input_shape=INPUT[model],
    )
    buffers = 2 if "adam" in optimizer else 1
    params = PARAMS[model]
    fields = dict(
        run_id="r1",
        case_id=case_id(config),
        timestamp="2026-11-27T00:00:00+00:00",
        suite="smoke",
        steps=9,
        warmup=2,
        repeats=1,
        device="cpu",
        device_name="test CPU",
        status=status,
        state_buffers_theory=buffers,
        **config,
    )
    if status != "ok":
        return Record.from_flat(dict(**fields, error=f"{status} in {model}")).to_dict()
    # Scale the samples with the batch so bigger batches take longer per step.
    samples = [ms * batch_size / 32 for ms in SAMPLES]
    return Record.from_flat(
        dict(
            **fields,
            params=params,
            step_time_ms=float(np.median(samples)),
            step_time_iqr_ms=float(np.subtract(*np.percentile(samples, [75, 25]))),
            step_time_min_ms=min(samples),
            step_time_samples_ms=samples,
            throughput=1000 * batch_size / float(np.median(samples)),
            param_bytes=4 * params,
            grad_bytes=4 * params,
            optimizer_state_bytes=4 * buffers * params,
            state_buffers_per_param=float(buffers),
            state_bytes_per_param=4.0 * buffers,
            peak_memory_bytes=4 * (2 + buffers) * params + 50_000 * batch_size,
            peak_memory_source="process_rss",
            activation_bytes=50_000 * batch_size,
        )
    ).to_dict()


def records() -> list[dict]:
    """cnn and resnet20 × adam and sgdm at batch 32 and 64 in fp32; resnet20 with adam at
    batch 128 ran out of memory and cnn with sgdm at batch 128 raised an error."""
    found = [record(m, o, b) for b in (32, 64) for m in PARAMS for o in ("adam", "sgdm")]
    found += [record("cnn", "adam", 128), record("resnet20", "adam", 128, status="oom")]
    found += [record("cnn", "sgdm", 128, status="error")]
    return found


def frame() -> pd.DataFrame:
    return pd.DataFrame(records())


def rf_frame() -> pd.DataFrame:
    """rf.csv rows for a three-layer toy net: two 3×3 convs (the second of stride 2), then
    global pooling; per-axis values are [h, w] lists, written as in the CSV."""
    rows = [
        ("conv1", "Conv2d", [3, 3], [1, 1], [1, 1], [1, 1], [3, 3], [1, 1], [-1, -1], [3, 3], 1.0, [3, 3], True),
        ("conv2", "Conv2d", [3, 3], [2, 2], [1, 1], [1, 1], [5, 5], [2, 2], [-2, -2], [5, 5], 1.0, [4, 4], True),
        ("pool", "AdaptiveAvgPool2d", "global", "global", "global", "global", "global", "global", "global",
         "global", 1.0, "global", True),
    ]  # fmt: skip
    columns = ["layer", "kind", "kernel", "stride", "padding", "dilation", "rf", "jump", "start", "rf_empirical"]
    columns += ["fill", "erf95", "match"]
    table = pd.DataFrame([[str(v) if isinstance(v, list) else v for v in row] for row in rows], columns=columns)
    return table.assign(model="toynet")


def write_run(root: Path, rows: list[dict] | None = None, cases_total: int | None = None) -> Path:
    """A run folder as the runner leaves it; ``cases_total`` above the rows makes it incomplete."""
    rows = records() if rows is None else rows
    writer = RunWriter(
        root, "r1", "smoke", "[suite]\nname = 'smoke'\n", {"hostname": "testhost"}, cases_total or len(rows)
    )
    for row in rows:
        writer.append(Record.from_flat(row))
    writer.finish()
    return writer.path

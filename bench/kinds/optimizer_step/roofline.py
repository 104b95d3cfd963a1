"""Optimizer-step records as the report reads them, and what it must say beside their
percentages.

Records written before device time was measured (no ``wall_bandwidth_fraction``) had their
bandwidth figures on wall time against the DRAM-sized limit, then the only one. Read today,
that figure is the wall-time fraction; on the CPU, where device and wall time are one, it is
also the DRAM fraction; on a GPU the device's share of the step is unknown, so the
device-time figures are left empty rather than shown with a meaning they never had.

A percentage above 100 says the step beat a limit; the notes say which limit and why: a
working set the last-level cache holds moves faster than the DRAM-sized probe allows, and a
step that beats the probe at its own working set's size was timed at another moment than the
probe's timings (the notes give their range), with more arrays streaming at once than the
probe's two.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.record import OPTIMIZER_STEP

KIND = OPTIMIZER_STEP
MIB = 2**20
#: The device-time figures of a record from before device time was measured.
DEVICE_TIME_FIGURES = ("achieved_bandwidth_gbs", "traffic_bandwidth_gbs", "bandwidth_fraction")


def optimizer_step_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its older optimizer-step records read as today's (see the module's
    docstring); other records and today's unchanged."""
    if "kind" not in frame or not (frame["kind"] == KIND).any():
        return frame
    frame = frame.copy()
    for column in (
        "step_time_ms",
        "wall_bandwidth_fraction",
        "dram_bandwidth_fraction",
        "device_time_ms",
        *DEVICE_TIME_FIGURES,
    ):
        if column not in frame:
            frame[column] = np.nan
    old = (frame["kind"] == KIND) & frame["wall_bandwidth_fraction"].isna() & frame["bandwidth_fraction"].notna()
    on_cpu = old & frame["device"].astype(str).str.startswith("cpu")
    frame.loc[old, "wall_bandwidth_fraction"] = frame.loc[old, "bandwidth_fraction"]
    frame.loc[on_cpu, "dram_bandwidth_fraction"] = frame.loc[on_cpu, "bandwidth_fraction"]
    frame.loc[on_cpu, "device_time_ms"] = frame.loc[on_cpu, "step_time_ms"]
    frame.loc[old & ~on_cpu, list(DEVICE_TIME_FIGURES)] = np.nan
    frame.loc[old & on_cpu, "bandwidth_fraction"] = np.nan  # no working-set limit was measured
    return frame


def _number(value: object) -> float:
    number = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
    return float(number)


def _mib(nbytes: float) -> str:
    return f"{nbytes / MIB:,.1f} MiB"


def limit_notes(frame: pd.DataFrame) -> list[str]:
    """One line for every percentage above 100 among the ok optimizer-step records of
    ``frame``, naming the case, the limit it exceeds and why."""
    frame = optimizer_step_frame(frame)
    if "kind" not in frame:
        return []
    notes = []
    for _, row in frame[(frame["kind"] == KIND) & (frame["status"] == "ok")].iterrows():
        dram = _number(row.get("dram_bandwidth_fraction"))
        own = _number(row.get("bandwidth_fraction"))
        wall = _number(row.get("wall_bandwidth_fraction"))
        working_set, cache = _number(row.get("working_set_bytes")), _number(row.get("last_level_cache_bytes"))
        limit = _number(row.get("working_set_bandwidth_gbs"))
        if dram > 1:
            where = "is unknown"
            if not np.isnan(working_set):
                held = "fits" if not np.isnan(cache) and working_set <= cache else "does not fit"
                size = _mib(cache) if not np.isnan(cache) else "of unknown size"
                where = f"({_mib(working_set)}) {held} the last-level cache ({size})"
            measured = f", where the same kernel measured {limit:,.1f} GB/s" if not np.isnan(limit) else ""
            notes.append(
                f"{row['case_id']}: {100 * dram:.0f}% of the DRAM-sized bandwidth "
                f"({_number(row.get('measured_bandwidth_gbs')):,.1f} GB/s): its working set {where}{measured}."
            )
        worst = max((value for value in (own, wall) if not np.isnan(value)), default=np.nan)
        if worst > 1:
            samples = row.get("working_set_bandwidth_samples_gbs")
            spread = (
                f", which ranged {min(samples):,.1f}–{max(samples):,.1f} GB/s"
                if isinstance(samples, list | np.ndarray) and len(samples)
                else ""
            )
            notes.append(
                f"{row['case_id']}: {100 * worst:.0f}% of the bandwidth measured at its working set's size "
                f"({limit:,.1f} GB/s, the median of its timings{spread}): that limit was timed at another moment "
                "than the step, with one kernel streaming two arrays where the step streams four or more."
            )
    return notes

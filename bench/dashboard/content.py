"""The data each page of the dashboard loads, built from the series (``series.Series``): plain
dicts of lists, ready for JSON, column-wise and rounded, so a page over years of nights stays
small. No statistics are made here: verdicts come from ``compare.flag_series`` and the GPU
comparison from ``compare.side_by_side``; this module only arranges them for the pages.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from bench.analyse.compare import DifferentRunsError
from bench.dashboard.series import Series
from bench.kinds import side_by_side
from bench.measure.load import BUSY_FRACTION

#: How a verdict is written in the page data (one letter a point: pages stay small).
VERDICT_CODES = {"regression": "r", "improvement": "i", "unchanged": "u", "new": "n", "missing": "m"}
MIB = 2**20


@dataclass(frozen=True)
class Metric:
    """One panel of a case's plot: a figure of its records over the nights. ``spread``:
    the figure is inversely proportional to the step time (throughput, bandwidth) or is the
    step time, so the night's spread of per-repeat medians carries over to it; ``verdict``:
    the verdict its flags show (``time`` or ``memory``; None for training runs)."""

    key: str
    label: str
    unit: str
    value: Callable[[dict], float | None]
    spread: str | None  # "direct", "inverse" or None
    verdict: str | None


def _field(name: str, scale: float = 1.0) -> Callable[[dict], float | None]:
    def value(record: dict) -> float | None:
        number = record.get(name)
        return None if number is None else float(number) * scale

    return value


def _step_peak_mib(record: dict) -> float | None:
    """A training step's peak memory, MiB, as the reports show it
    (``bench.reporting.tables.step_peak_bytes``): on the CPU, where ``peak_memory_bytes`` is
    the whole process's resident set, the memory pass's exact ``tracked_peak_bytes`` where the
    record has it; else ``peak_memory_bytes``."""
    tracked = record.get("tracked_peak_bytes")
    process = str(record.get("peak_memory_source") or "").startswith("process_rss")
    peak = tracked if process and tracked is not None else record.get("peak_memory_bytes")
    return None if peak is None else float(peak) / MIB


#: The panels of each kind of run, as ``convbench report`` names the figures.
METRICS = {
    "training-step": (
        Metric("throughput", "throughput", "samples/s", _field("throughput"), "inverse", "time"),
        Metric("step_time", "step time", "ms", _field("step_time_ms"), "direct", "time"),
        Metric("peak_memory", "peak memory", "MiB", _step_peak_mib, None, "memory"),
    ),
    "optimizer-step": (
        Metric("step_time", "optimizer step", "ms", _field("step_time_ms"), "direct", "time"),
        Metric("bandwidth", "bandwidth used", "% of measured", _field("bandwidth_fraction", 100.0), "inverse", "time"),
        Metric("achieved", "achieved bandwidth", "GB/s", _field("achieved_bandwidth_gbs"), "inverse", "time"),
    ),
    "training": (
        Metric("time_to_target", "time to target", "s", _field("time_to_target_s"), None, None),
        Metric("accuracy", "final test accuracy", "%", _field("final_test_accuracy", 100.0), None, None),
        Metric("train_throughput", "training throughput", "samples/s", _field("train_throughput"), None, None),
    ),
}


def slug(*parts: str | None) -> str:
    """A file name for a page: the parts made safe, and a short hash of them so two names
    that read alike once made safe (``a b`` and ``a-b``) stay apart."""
    text = "--".join(re.sub(r"[^a-z0-9]+", "-", (part or "none").lower()).strip("-")[:40] for part in parts)
    return f"{text}--{hashlib.sha1(repr(parts).encode()).hexdigest()[:8]}"


def _round(value: float | None) -> float | None:
    """Five significant digits: what a reader can see, and a fifth of the bytes."""
    return None if value is None or value != value else float(f"{value:.5g}")


def _loaded(record: dict) -> float | None:
    share = record.get("other_cpu_fraction")
    return _round(share) if share is not None and share > BUSY_FRACTION else None


def gpu_description(series: Series) -> dict:
    """The machine's GPUs as its latest run recorded them: model, memory, driver, and the
    identity (NVML's UUID) where telemetry had one; a CPU machine gets its CPU model."""
    env = series.env
    identities = {gpu.get("cuda_index"): gpu.get("uuid") for gpu in env.get("gpu_telemetry", {}).get("gpus", [])}
    gpus = [
        {
            "name": gpu.get("name"),
            "memory_gib": _round(gpu["memory_bytes"] / 2**30) if gpu.get("memory_bytes") else None,
            "driver": gpu.get("driver"),
            "uuid": identities.get(gpu.get("index")),
        }
        for gpu in env.get("gpus", [])
    ]
    return {"gpus": gpus, "cpu": env.get("cpu", {}).get("model"), "device": series.nights[-1].device}


def night_table(series: Series, report_links: list[str | None]) -> dict:
    """Per night, column-wise: id, start, commit, status, cases done of total, failures,
    cases measured under load, the link to its report, its verdict counts and baseline."""
    index_of = {night.run_id: i for i, night in enumerate(series.nights)}
    columns: dict[str, list] = {name: [] for name in ("id", "date", "commit", "status", "done", "total", "failed")}
    for name in ("loaded", "report", "regressions", "improvements", "memory", "all", "baseline", "stopped"):
        columns[name] = []
    for night, records, verdicts, link in zip(
        series.nights, series.records, series.verdicts, report_links, strict=True
    ):
        columns["id"].append(night.run_id)
        columns["date"].append(_plot_time(night.started))
        columns["commit"].append((night.commit or "")[:10])
        columns["status"].append(night.status)
        columns["done"].append(len(records))
        columns["total"].append(night.cases_total)
        columns["failed"].append(sum(r.get("status") != "ok" for r in records))
        columns["loaded"].append(sum(_loaded(r) is not None for r in records))
        columns["report"].append(link)
        columns["regressions"].append(sum(v == "regression" for v in verdicts.time.values()))
        columns["memory"].append(sum(v == "regression" for v in verdicts.memory.values()))
        improved = {c for c, v in verdicts.time.items() if v == "improvement"}
        columns["improvements"].append(len(improved | {c for c, v in verdicts.memory.items() if v == "improvement"}))
        columns["all"].append(VERDICT_CODES.get(verdicts.all_cases))
        columns["baseline"].append([index_of[run_id] for run_id in verdicts.baseline])
        columns["stopped"].append(night.stopped_by)
    return columns


def _plot_time(started: str | None) -> str | None:
    """A run's start (ISO 8601, UTC, as runs record it) as plotly.js reads dates: it ignores
    a zone suffix, and these are all UTC."""
    return None if started is None else started[:19].replace("T", " ")


def case_series(series: Series) -> tuple[list[dict], list[dict]]:
    """The cases of a series: one summary each for the page (configuration, latest status
    and verdicts, how often flagged), in the order of the latest run that has them, and one
    column-wise table of its points over the nights, loaded when the case comes into view."""
    metrics = METRICS[series.kind]
    points: dict[str, dict] = {}
    summaries: dict[str, dict] = {}
    for night, (records, verdicts) in enumerate(zip(series.records, series.verdicts, strict=True)):
        for record in records:
            case = record["case_id"]
            if case not in summaries:
                summaries[case] = _summary(record)
                points[case] = {"night": [], "status": [], "error": [], "iqr": [], "loaded": [], "time": []}
                points[case]["memory"] = []
                for metric in metrics:
                    points[case][metric.key] = []
                    if metric.spread:
                        points[case][metric.key + "_low"], points[case][metric.key + "_high"] = [], []
            _add_point(points[case], night, record, verdicts.time.get(case), verdicts.memory.get(case), metrics)
            summary = summaries[case]
            summary["flags"] += verdicts.time.get(case) == "regression" or verdicts.memory.get(case) == "regression"
            summary["last_night"] = night
    latest = len(series.nights) - 1
    for case, summary in summaries.items():
        table = points[case]
        summary["latest_status"] = table["status"][-1] or "ok"
        summary["latest_time"], summary["latest_memory"] = table["time"][-1], table["memory"][-1]
        summary["in_latest"] = summary["last_night"] == latest
        summary["ever_ok"] = any(status is None for status in table["status"])
        summary["latest"] = {metric.key: table[metric.key][-1] for metric in metrics}
    order = sorted(summaries, key=lambda case: -summaries[case]["last_night"])  # stable: suite order within a night
    return [summaries[case] for case in order], [points[case] for case in order]


def _summary(record: dict) -> dict:
    return {
        "id": record["case_id"],
        "model": record.get("model"),
        "optimizer": record.get("optimizer"),
        "precision": record.get("precision"),
        "batch": record.get("batch_size"),
        "recipe": record.get("recipe"),
        "seed": record.get("seed"),
        "flags": 0,
    }


def _add_point(table: dict, night: int, record: dict, time: str | None, memory: str | None, metrics) -> None:
    ok = record.get("status") == "ok"
    table["night"].append(night)
    table["status"].append(None if ok else record.get("status"))
    table["error"].append(None if ok else (record.get("error") or "")[:300])
    table["iqr"].append(_round(record.get("step_time_iqr_ms")))
    table["loaded"].append(_loaded(record))
    table["time"].append(VERDICT_CODES.get(time))
    table["memory"].append(VERDICT_CODES.get(memory))
    medians = record.get("step_time_repeat_medians_ms") or []
    median = record.get("step_time_ms")
    for metric in metrics:
        value = metric.value(record) if ok else None
        table[metric.key].append(_round(value))
        if metric.spread:
            low, high = _spread(value, median, medians, metric.spread)
            table[metric.key + "_low"].append(low)
            table[metric.key + "_high"].append(high)


def _spread(value: float | None, median: float | None, medians: list[float], how: str) -> tuple:
    """The range the night's repeats give ``value``: the slowest and the fastest repeat's
    median step time, carried over to a figure proportional (``direct``) or inversely
    proportional (``inverse``) to the step time."""
    if value is None or not median or len(medians) < 2:
        return None, None
    slowest, fastest = max(medians) / median, min(medians) / median
    if how == "direct":
        return _round(value * fastest), _round(value * slowest)
    return _round(value / slowest), _round(value / fastest)


def gpu_comparison(latest: dict[str, tuple[Series, int]], pages: dict[str, str]) -> dict:
    """One suite on several machines side by side, as ``convbench gpus`` puts them: for each
    machine's run (``latest``: machine -> its series and the night shown), per case its
    figures and its speed-up over each device as the reference in turn (``side_by_side``);
    ``pages``: machine -> its page of this suite."""
    frames = []
    for series, night in latest.values():
        records = series.records[night]
        frames.append(pd.DataFrame(records).assign(run_id=series.nights[night].run_id, suite=series.suite))
    try:
        table, notes = side_by_side(frames)  # the first device the reference
        devices = list(dict.fromkeys(table["device"]))
        tables = {devices[0]: table}
        tables.update({reference: side_by_side(frames, reference=reference)[0] for reference in devices[1:]})
    except DifferentRunsError as error:
        return {"error": str(error)}
    cases = list(dict.fromkeys(table["case"]))
    runs = [series.nights[night].run_id for series, night in latest.values()]
    value_column = "time_to_target_s" if "time_to_target_s" in table else "throughput"
    if value_column == "throughput" and table["throughput"].isna().all():
        value_column = "step_time_ms"  # optimizer steps: no throughput, their step times

    def by_device_of(rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
        return {device: rows[rows["device"] == device].set_index("case") for device in devices}

    by_device = by_device_of(table)
    against = {reference: by_device_of(rows) for reference, rows in tables.items()}
    described = {r["case_id"]: r for series, night in latest.values() for r in series.records[night]}
    return {
        "devices": devices,
        "machines": list(latest),
        "runs": runs,
        "pages": [pages.get(machine) for machine in latest],
        "value": value_column,
        "cases": [_gpu_case(case, described.get(case)) for case in cases],
        "values": {device: [_cell(by_device[device], case, value_column) for case in cases] for device in devices},
        "status": {device: [_status(by_device[device], case) for case in cases] for device in devices},
        "peak_mib": {
            device: [_cell(by_device[device], case, "peak_memory_bytes", 1 / MIB) for case in cases]
            for device in devices
        },
        "speedup": {
            reference: {device: [_cell(rows, case, "speedup") for case in cases] for device, rows in by.items()}
            for reference, by in against.items()
        },
        "notes": notes,
    }


def _gpu_case(case: str, record: dict | None) -> dict:
    """A case of the GPU page with what its filters select on; a training case (named by
    model, recipe, batch and precision rather than by a record's case id) from its name."""
    if record is not None:
        return {**_summary(record), "id": case}
    model, recipe, batch, precision = [*case.split("/"), None, None, None, None][:4]
    return {"id": case, "model": model, "optimizer": recipe, "batch": batch, "precision": precision}


def _cell(rows: pd.DataFrame, case: str, column: str, scale: float = 1.0) -> float | None:
    if column not in rows or case not in rows.index:
        return None
    try:
        number = float(rows.at[case, column])
    except (TypeError, ValueError):
        return None
    return _round(number * scale)


def _status(rows: pd.DataFrame, case: str) -> str | None:
    return str(rows.at[case, "status"]) if case in rows.index else "missing"


def latest_comparable_night(series: Series) -> int | None:
    """The night the GPU page shows for a machine: its latest complete run with records, else
    its latest run with records (None: it has none)."""
    with_records = [i for i, records in enumerate(series.records) if records]
    complete = [i for i in with_records if series.nights[i].status == "complete"]
    return (complete or with_records or [None])[-1]

"""Summary tables from a run folder: units converted, failures listed, an empty run handled."""

import dataclasses

import pandas as pd

from bench import report
from bench.record import Record
from bench.store import RunWriter
from tests.bench.test_store import record as stored_record


def record(model: str, status: str = "ok", **fields) -> Record:
    return dataclasses.replace(stored_record("r", model, status), **fields)


def test_summary_converts_units_and_leaves_failed_cases_blank():
    ok = record(
        "a",
        step_time_ms=12.3456,
        step_time_iqr_ms=0.5,
        throughput=2592.1234,
        optimizer_state_bytes=3 * 2**20,
        peak_memory_bytes=2**30,
        activation_bytes=2**29,
        state_bytes_per_param=8.0,
    )
    oom = record("b", status="oom", error="CUDA out of memory")
    table = report.summary(pd.DataFrame([ok.to_dict(), oom.to_dict()]))
    assert list(table.columns) == list(report.COLUMNS)
    first = table.iloc[0]
    assert (first["step_ms"], first["samples_per_s"], first["state_mib"]) == (12.35, 2592.1, 3.0)
    assert (first["peak_mib"], first["activation_mib"], first["state_bytes_per_param"]) == (1024.0, 512.0, 8.0)
    assert table.iloc[1]["status"] == "oom" and pd.isna(table.iloc[1]["step_ms"])
    assert report.failures(pd.DataFrame([ok.to_dict(), oom.to_dict()])) == [
        "b/adam/b32/fp32/cl0/eager/synthetic/1x28x28: oom: CUDA out of memory"
    ]


def test_tables_of_a_run_without_records(tmp_path):
    writer = RunWriter(tmp_path, "empty", "s", "", {"hostname": "h"}, cases_total=3)
    writer.finish()
    csv_path, md_path = report.write_tables(writer.path)
    assert csv_path.read_text().splitlines() == [",".join(report.COLUMNS)]
    text = md_path.read_text()
    assert "status: incomplete (0 of 3 cases" in text and "device: none recorded" in text

"""Run folders: per-case durability, atomic whole-file writes, honest run status."""

import json

import pytest

from bench.record import CASE_FIELDS, RECORD_FIELDS, Record, case_id
from bench.storage.store import RECORDS, RunFolderError, RunWriter, load_run, new_run_id, write_atomic


def record(run_id: str, model: str = "cnn", status: str = "ok") -> Record:
    config = dict(
        model=model,
        optimizer="adam",
        batch_size=32,
        precision="fp32",
        channels_last=False,
        compile=False,
        dataset="synthetic",
        input_shape=[1, 28, 28],
    )
    when = "2026-11-27T00:00:00+00:00"
    identity = {"run_id": run_id, "case_id": case_id(config), "timestamp": when, "suite": "smoke"}
    return Record.from_flat({**identity, "steps": 5, "warmup": 2, "repeats": 3, "status": status, **config})


def writer(tmp_path, cases_total=2) -> RunWriter:
    return RunWriter(tmp_path, "r1", "smoke", "[suite]\nname = 'smoke'\n", {"hostname": "h"}, cases_total)


def test_each_appended_case_is_on_disk_at_once(tmp_path):
    run = writer(tmp_path)
    run.append(record("r1"))
    lines = (tmp_path / "r1" / RECORDS).read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["case"]["model"] == "cnn"
    loaded = load_run(tmp_path / "r1")
    assert loaded.manifest["status"] == "running" and loaded.manifest["cases_done"] == 1
    assert loaded.env == {"hostname": "h"} and "smoke" in loaded.suite_toml


def test_complete_and_incomplete_runs(tmp_path):
    run = writer(tmp_path)
    run.append(record("r1"))
    assert run.finish() == "incomplete"
    run.append(record("r1", "resnet20", status="oom"))
    assert run.finish() == "complete"
    manifest = load_run(tmp_path / "r1").manifest
    assert (manifest["cases_done"], manifest["failures"], manifest["status"]) == (2, 1, "complete")
    assert manifest["finished"] is not None


def test_frame_has_record_columns(tmp_path):
    run = writer(tmp_path)
    run.append(record("r1"))
    frame = load_run(tmp_path / "r1").frame()
    assert tuple(frame.columns) == RECORD_FIELDS
    assert frame.loc[0, "case_id"] == "cnn/adam/b32/fp32/cl0/eager/synthetic/1x28x28"


def test_truncated_last_record_is_skipped_but_damage_elsewhere_is_not(tmp_path):
    run = writer(tmp_path, cases_total=3)
    run.append(record("r1"))
    run.append(record("r1", "resnet20"))
    path = tmp_path / "r1" / RECORDS
    path.write_text(path.read_text() + '{"model": "mlp", "optim')
    assert [r["model"] for r in load_run(tmp_path / "r1").records] == ["cnn", "resnet20"]
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "{oops", lines[1]]) + "\n")
    with pytest.raises(ValueError, match=r"records.jsonl:2"):
        load_run(tmp_path / "r1")


def test_existing_run_folder_is_not_overwritten(tmp_path):
    writer(tmp_path).append(record("r1"))
    with pytest.raises(RunFolderError, match="r1 already exists"):
        writer(tmp_path)
    assert [record["model"] for record in load_run(tmp_path / "r1").records] == ["cnn"]


def test_not_a_run_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="run.json"):
        load_run(tmp_path)


def test_atomic_write_leaves_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "summary.csv"
    write_atomic(target, "old\n")

    with pytest.raises(TypeError):
        write_atomic(target, 42)  # type: ignore[arg-type]
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.csv"]


def test_run_ids_sort_by_time_and_differ():
    first, second = new_run_id(), new_run_id()
    assert first != second and len(first) == len("20261127T043012Z-5f3a")


def test_case_id_names_every_case_field():
    config = dict(
        model="resnet50",
        optimizer="torch-adam-fused",
        batch_size=128,
        precision="bf16",
        channels_last=True,
        compile=True,
        dataset="synthetic",
        input_shape=[3, 224, 224],
    )
    assert case_id(config) == "resnet50/torch-adam-fused/b128/bf16/cl1/compiled/synthetic/3x224x224"
    assert set(CASE_FIELDS) <= set(RECORD_FIELDS)

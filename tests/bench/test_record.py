"""Records as an envelope and typed blocks: what goes on disk, how it reads back flat, and
how a flat (schema 1) line is upgraded with its kind decided once."""

import json
from pathlib import Path

import pytest

from bench.record import (
    BLOCKS,
    KINDS,
    RECORD_FIELDS,
    SCHEMA,
    BandwidthFigures,
    CaseConfig,
    MemoryCategories,
    Record,
    StepTiming,
    blocks,
    flatten,
    read_flat,
    record_kind,
    upgrade,
)
from bench.storage.store import RunFolderError, check_record

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "layout1"


def first_line(run: str) -> dict:
    with open(FIXTURES / f"layout1-{run}" / "records.jsonl", encoding="utf-8") as lines:
        return json.loads(lines.readline())


def minimal(**changes) -> dict:
    """A schema-2 record holding only what every record must."""
    record = {
        "schema": 2,
        "kind": "training-step",
        "run_id": "r",
        "case_id": "c",
        "timestamp": "2026-12-06T00:00:00+00:00",
        "suite": "s",
        "status": "ok",
        "case": {"model": "cnn", "optimizer": "adam", "precision": "fp32", "steps": 2, "warmup": 1, "repeats": 1},
        "provenance": {"device": "cpu", "device_name": "x", "hostname": "h", "torch_version": "2"},
    }
    record.update(changes)
    return record


@pytest.mark.parametrize(
    ("run", "kind"),
    [
        ("step", "training-step"),
        ("optim", "optimizer-step"),
        ("parallel", "data-parallel"),
        # the old kind field said training-step for these: the recipe says what they are
        ("train", "training-to-accuracy"),
    ],
)
def test_a_flat_line_is_upgraded_with_its_kind_and_reads_back_with_every_value(run, kind):
    line = first_line(run)
    upgraded = upgrade(line)
    assert upgraded["schema"] == SCHEMA and upgraded["kind"] == kind == record_kind(line)
    flat = flatten(upgraded)
    assert tuple(flat) == RECORD_FIELDS
    placeholders = {"batch_size", "dataset", "input_shape", "channels_last", "compile"} if run == "optim" else set()
    for name, value in line.items():
        if name != "kind" and name not in placeholders:
            assert flat[name] == value, name


def test_reading_a_flat_line_is_upgrading_and_flattening_it():
    """read_flat takes a short cut for schema 1 (every record of every history passes there):
    it must give what upgrade and flatten give, a null where a field's default is not null and
    a key no block knows included."""
    for run in ("step", "optim", "parallel", "train"):
        line = {**first_line(run), "isolated": None, "gpu_throttle_reasons": [], "from_a_newer_version": 1}
        assert list(read_flat(line).items()) == list(flatten(upgrade(line)).items())
    assert read_flat(line)["isolated"] is False and read_flat(line)["from_a_newer_version"] == 1


def test_the_optimizer_step_placeholders_go_and_its_blocks_are_only_its_own():
    record = Record.from_json(upgrade(first_line("optim")))
    on_disk = record.to_json()
    # an optimizer step has no batch, data or model to compile: absent, not None / "none" / []
    assert set(on_disk["case"]) == {"model", "optimizer", "precision", "steps", "warmup", "repeats"} | {
        "hyperparameters",
        "detailed",
    }
    assert {name for name in on_disk if name in BLOCKS} == {
        *("case", "provenance", "timing", "static_memory", "bandwidth"),
    }
    assert on_disk["bandwidth"]["achieved_bandwidth_gbs"] == 5.7630049046726715
    assert on_disk["timing"]["step_time_ms"] == 1.7528675000448857
    flat = record.to_dict()
    assert flat["batch_size"] is None and flat["dataset"] is None and flat["input_shape"] is None


def test_the_memory_pass_keeps_one_type_for_tracked_and_predicted():
    record = Record.from_json(upgrade(first_line("step")))
    tracked, predicted = record.memory_pass.tracked, record.memory_pass.predicted
    assert type(tracked) is type(predicted) is MemoryCategories
    # the fixture's tracked and predicted breakdowns of cnn/adam at batch 2 (bytes)
    assert tracked.peak_bytes == predicted.peak_bytes == 7150392
    assert tracked.optimizer_state_bytes == 2886224 and tracked.peak_phase == "backward"
    assert record.to_json()["memory_pass"]["tracked"]["inputs_bytes"] == 6288
    assert record.tracked_peak_bytes == 7150392  # read flat as an attribute too


def test_a_schema_2_line_reads_back_as_the_flat_line_it_came_from():
    line = first_line("parallel")
    written = json.loads(json.dumps(Record.from_flat(line).to_json()))
    assert written["schema"] == 2 and written["kind"] == "data-parallel"
    assert written["parallel"]["global_throughput"] == 27.824430265805265
    assert "step_time_ms" not in written  # in its block, not at the top
    read = check_record(written, "here")
    assert {name: read[name] for name in line} == {**line, "kind": "data-parallel"}
    # fields newer than the fixture read as absent
    assert {read[name] for name in set(read) - set(line)} == {None}


def test_every_flat_field_belongs_to_one_block_only():
    assert len(RECORD_FIELDS) == len(set(RECORD_FIELDS))
    assert RECORD_FIELDS.count("static_memory_bytes") == 1


def test_a_kind_assembles_its_blocks_and_a_field_no_block_has_is_refused():
    made = blocks({"step_time_ms": 2.0, "device_time_ms": 1.5, "throughput": None}, StepTiming, BandwidthFigures)
    assert made["timing"].step_time_ms == 2.0 and made["bandwidth"].device_time_ms == 1.5
    assert set(made) == {"timing", "bandwidth"}
    with pytest.raises(TypeError, match="host_time_ms"):
        blocks({"host_time_ms": 1.0}, StepTiming, BandwidthFigures)
    with pytest.raises(TypeError, match="no field 'step_time'"):
        Record.from_flat({"step_time": 1.0})


def test_a_record_refuses_a_kind_outside_the_fixed_set_and_a_measurement_set_flat():
    case = CaseConfig(model="cnn", optimizer="adam", precision="fp32", steps=1, warmup=0, repeats=1)
    with pytest.raises(ValueError, match="not one of"):
        Record(run_id="r", case_id="c", timestamp="t", suite="s", case=case, kind="inference")
    record = Record(run_id="r", case_id="c", timestamp="t", suite="s", case=case)
    with pytest.raises(AttributeError):
        record.step_time_ms = 3.0  # a measurement goes in its block, where to_dict finds it
    assert record.kind in KINDS and record.step_time_samples_ms == []


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ({"schema": 3}, "schema 3: this convbench reads record schemas 1 to 2"),
        ({"timing": [1.0]}, "timing is [1.0], expected an object"),
        ({"step_time_ms": 1.0}, "step_time_ms is outside its block, timing"),
        ({"kind": "inference"}, "kind is 'inference', not one of"),
        ({"timing": {"step_time_ms": "fast"}}, "step_time_ms is 'fast', expected float or int or null"),
        ({"timing": {"step_time_ms": -1.0}}, "step_time_ms is negative"),
        ({"memory_pass": {"tracked": 5}}, "memory_pass.tracked is not an object"),
    ],
)
def test_a_damaged_schema_2_record_is_named(damage, message):
    check_record(minimal(), "here")  # undamaged, it reads
    with pytest.raises(RunFolderError, match="here: damaged record .*" + message.replace("[", r"\[").split("(")[0]):
        check_record(minimal(**damage), "here")


def test_a_schema_2_record_missing_its_configuration_is_named():
    record = minimal()
    del record["case"]["model"]
    with pytest.raises(RunFolderError, match=r"damaged record \(case.model is missing\)"):
        check_record(record, "here")

"""Cases in processes of their own: a fatal fault in one leaves the next one measured."""

import tomllib

import pytest

from bench.checks import SuiteError
from bench.cli import main
from bench.kinds.step.isolation import CaseRunner
from bench.kinds.step.suite import load_suite
from bench.storage.store import load_run
from tests.bench.conftest import register_fault_models
from tests.bench.test_runner import CONTEXT, case


@pytest.mark.slow
def test_isolated_cases_survive_a_dead_process_and_a_poisoned_one(fault_models):
    warnings = []
    run_one = CaseRunner(isolate=True, warn=warnings.append, initializer=register_fault_models)
    records = [run_one(case(model=name), CONTEXT) for name in ("exit-net", "poison-net", "ok-net")]
    assert [r.status for r in records] == ["error", "error", "ok"], [r.error for r in records]
    assert records[0].error == "the case's process ended without a record (exit status 3)"
    assert records[0].case_id == "exit-net/adam/b4/fp32/cl0/eager/synthetic/1x8x8"
    assert "illegal memory access" in records[1].error
    assert records[2].step_time_ms > 0 and records[2].params == 55
    assert all(r.isolated for r in records)
    assert warnings == []


@pytest.mark.slow
def test_a_fatal_cuda_error_moves_the_rest_of_the_sweep_into_processes_of_their_own(fault_models):
    warnings = []
    run_one = CaseRunner(isolate=False, warn=warnings.append, initializer=register_fault_models)
    first = run_one(case(model="ok-net"), CONTEXT)
    poisoned = run_one(case(model="poison-net"), CONTEXT)
    after = run_one(case(model="ok-net"), CONTEXT)
    assert (first.status, first.isolated) == ("ok", False)
    assert poisoned.status == "error" and "illegal memory access" in poisoned.error
    # In this process it would fail like every later case (the fixture's model says so) ...
    assert fault_models.poisoned
    # ... but it ran in a fresh one.
    assert (after.status, after.isolated) == ("ok", True), after.error
    assert len(warnings) == 1 and "poison-net" in warnings[0] and "--isolate" in warnings[0]


@pytest.mark.slow
def test_convbench_run_isolate_writes_each_record_from_its_own_process(tmp_path, capsys):
    suite = tmp_path / "one.toml"
    suite.write_text(
        '[suite]\ndevice = "cpu"\nsteps = 1\nwarmup = 1\nrepeats = 1\n\n'
        '[[grid]]\nmodels = ["mlp"]\noptimizers = ["sgdm"]\nbatch_sizes = [2]\n'
    )
    code = main(["run", "--suite", str(suite), "--isolate", "--results", str(tmp_path), "--run-id", "iso"])
    assert code == 0, capsys.readouterr().err
    (record,) = load_run(tmp_path / "iso").records
    assert (record["status"], record["isolated"], record["params"]) == ("ok", True, 400_906)
    assert tomllib.loads((tmp_path / "iso" / "suite.toml").read_text())["suite"]["isolate"] is True


def test_isolate_is_a_suite_key(tmp_path):
    grid = '[[grid]]\nmodels = ["cnn"]\noptimizers = ["adam"]\nbatch_sizes = [2]\n'
    path = tmp_path / "s.toml"
    path.write_text("[suite]\nisolate = true\n\n" + grid)
    suite = load_suite(path)
    assert suite.isolate is True and load_suite("smoke").isolate is False
    path.write_text('[suite]\nisolate = "yes"\n\n' + grid)
    with pytest.raises(SuiteError, match=r"\[suite\]\.isolate: expected true or false"):
        load_suite(path)

"""The GPU acceptance check's CPU dry run: every check runs, writes its files and gives a
verdict; the host-sync counts are the ones GradScaler's code implies."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_acceptance

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_dry_run_runs_every_check_and_writes_its_results(tmp_path):
    out = tmp_path / "acceptance"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_acceptance", "--out", str(out), "--cpu-dry-run"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    verdicts = {v["check"]: v["status"] for v in json.loads((out / "verdicts.json").read_text())}
    # On the CPU the GPU-only judgements are not made (skip, info); the rest must pass.
    assert verdicts == {
        "environment": "skip",
        "profiler": "info",
        "host_syncs": "pass",
        "memory_steps": "info",
        "timer": "info",
        "compile": "pass",
        "oom": "skip",
        "optim": "info",
        "nightly": "pass",
    }
    assert len((out / "verdicts.md").read_text().splitlines()) == 4 + len(verdicts)
    syncs = json.loads((out / "host_syncs.json").read_text())
    assert [s["host_syncs_per_step"] for s in syncs] == [0, 1, 0]  # fp32 adam, fp16 adam, fp16 fused adam
    rows = list(csv.DictReader((out / "memory_steps.csv").open()))
    assert {r["precision"] for r in rows} == {"fp32", "fp16"} and len(rows) == 20
    assert json.loads((out / "compile.json").read_text())["recompiles_after_first_step"] == 0
    assert len((out / "oom.jsonl").read_text().splitlines()) == 2
    assert (out / "nightly" / "acceptance" / "report.html").is_file()
    assert (out / "nightly" / "history.sqlite").is_file() and (out / "env.json").is_file()
    assert len(json.loads((out / "profiler.json").read_text())["after_ms"]) == 3
    optim = [json.loads(line) for line in (out / "optim.jsonl").read_text().splitlines()]
    assert [r["optimizer"] for r in optim] == ["torch-adam-fused", "torch-adam-foreach", "adam-compiled", "adam"]
    # the CPU: one processor queues and runs the kernels, so device time is the wall time
    assert all(r["device_time_ms"] == r["step_time_ms"] and r["host_time_ms"] > 0 for r in optim)


def test_a_check_that_breaks_is_an_error_verdict_and_the_others_still_run(tmp_path, monkeypatch):
    def broken(sizes, out, env):
        raise RuntimeError("the check broke")

    monkeypatch.setattr(
        gpu_acceptance, "CHECKS", [("first", broken), ("second", lambda sizes, out, env: ("pass", "fine"))]
    )
    sizes = gpu_acceptance.Sizes(device=gpu_acceptance.torch.device("cpu"), **gpu_acceptance.CPU_SIZES)
    verdicts = gpu_acceptance.run_checks(sizes, tmp_path)
    assert [(v.check, v.status, v.line) for v in verdicts] == [
        ("first", "error", "RuntimeError: the check broke"),
        ("second", "pass", "fine"),
    ]
    assert "- **error** `first`" in (tmp_path / "verdicts.md").read_text()

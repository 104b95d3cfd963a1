"""The GPU acceptance check's CPU dry run: every check runs, writes its files and gives a
verdict; the host-sync counts are the ones GradScaler's code implies."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.measure import env
from bench.record import read_flat
from benchmarks import gpu_acceptance
from tests.bench.fake_cuda import SMALL_SIZE, CachingAllocatorFake, round_size

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_dry_run_runs_every_check_and_writes_its_results(tmp_path):
    out = tmp_path / "acceptance"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_acceptance", "--out", str(out), "--cpu-dry-run", "--commit", "0123abc"],
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
        "nightly": "pass",
        "data_parallel": "pass",
        "train": "pass",
        "profiler": "info",
        "host_syncs": "pass",
        "host_bound": "info",
        "memory_steps": "info",
        "timer": "info",
        "overhead": "info",
        "compile": "pass",
        "oom": "skip",
        "optim": "info",
    }
    assert len((out / "verdicts.md").read_text().splitlines()) == 4 + len(verdicts)
    # The commit: the checkout's own, or in a copy without .git the one given, in its verdicts
    # and in the nightly it started.
    commit = env.git_state(env.SOURCE_DIR)[0] or "0123abc"
    assert f"commit {commit} (" in (out / "verdicts.md").read_text()
    assert json.loads((out / "nightly" / "acceptance" / "env.json").read_text())["git_commit"] == commit
    assert "b'" not in (out / "nightly.log").read_text()
    syncs = json.loads((out / "host_syncs.json").read_text())
    assert [s["host_syncs_per_step"] for s in syncs] == [0, 1, 0]  # fp32 adam, fp16 adam, fp16 fused adam
    rows = list(csv.DictReader((out / "memory_steps.csv").open()))
    assert {r["precision"] for r in rows} == {"fp32", "fp16"} and len(rows) == 20
    assert json.loads((out / "compile.json").read_text())["recompiles_after_first_step"] == 0
    assert len((out / "oom.jsonl").read_text().splitlines()) == 2
    assert (out / "nightly" / "acceptance" / "report.html").is_file()
    assert (out / "nightly" / "history.sqlite").is_file() and (out / "env.json").is_file()
    assert len(json.loads((out / "profiler.json").read_text())["after_ms"]) == 3
    # The nightly says how much of its wall time went into steps.
    manifest = json.loads((out / "nightly" / "acceptance" / "run.json").read_text())
    assert 0 < manifest["steps_s"] < manifest["wall_s"]
    assert f"{manifest['steps_s']:.1f} s of {manifest['wall_s']:.1f} s in steps" in (out / "verdicts.md").read_text()
    # Data parallel on one rank, both strategies; training on the digits.
    dp = [read_flat(json.loads(line)) for line in (out / "data_parallel" / "acceptance-dp" / "records.jsonl").open()]
    assert sorted(r["strategy"] for r in dp) == ["ddp", "fsdp"] and {r["backend"] for r in dp} == {"gloo"}
    (trained,) = [read_flat(json.loads(line)) for line in (out / "train" / "acceptance-train" / "records.jsonl").open()]
    assert trained["status"] == "ok" and trained["train_time_s"] > 0
    assert set(json.loads((out / "overhead.json").read_text())["median_ms"]) == {
        "harness_step",
        "plain_in_place",
        "plain_set_to_none",
        "timer_gc_off",
        "timer_gc_on",
    }
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


def test_a_process_that_ran_out_of_time_leaves_its_text_not_a_bytes_repr():
    assert gpu_acceptance._text(b"convbench run: 3 of 16 cases\n") == "convbench run: 3 of 16 cases\n"
    assert gpu_acceptance._text(None) == "" and gpu_acceptance._text("text") == "text"


def test_the_nightly_gets_the_budget_less_what_the_checks_after_it_need(monkeypatch):
    cpu = gpu_acceptance.torch.device("cpu")
    sizes = gpu_acceptance.Sizes(device=cpu, deadline=1_000.0, **gpu_acceptance.CPU_SIZES)
    monkeypatch.setattr(gpu_acceptance.time, "monotonic", lambda: 100.0)
    names = [name for name, _ in gpu_acceptance.CHECKS]
    after = names[names.index("nightly") + 1 :]
    expected = 900.0 - sum(gpu_acceptance.EXPECTED_S[name] for name in after)
    assert gpu_acceptance.time_left(sizes, "nightly") == expected
    assert gpu_acceptance.time_left(sizes, names[-1]) == 900.0  # the last check may use all that is left


def _state_rows(precision: str, kept: int, extra: int = 0) -> list[dict]:
    """memory_steps' rows for the update that creates resnet18's Adam state on the fake caching
    allocator, after a backward pass has left cached blocks 0.5 MiB larger than each large
    parameter (pinned apart, so they cannot merge): the state's first buffers land in them
    whole. ``kept``: bytes of tensors the update leaves held (fp16's found-inf flag);
    ``extra``: bytes something else allocates during the update."""
    import torchvision

    with gpu_acceptance.torch.device("meta"):
        sizes = [p.numel() * 4 for p in torchvision.models.resnet18().parameters()]
    allocator = CachingAllocatorFake()
    freed = []
    for size in sizes:
        freed.append(allocator.malloc(size + 2**19))
        allocator.malloc(512)  # pinned between them
    for block in freed:
        allocator.free(block)
    before, requested = allocator.allocated, allocator.requested
    for size in sizes * 2:  # m, then v
        allocator.malloc(size)
    for size in (kept, extra):
        if size:
            allocator.malloc(size)
    least = sum(sizes) * 2
    most = sum(_block_limit(size) for size in sizes) * 2
    row = {
        "precision": precision,
        "step": 1,
        "allocated_delta": allocator.allocated - before,
        "requested_delta": allocator.requested - requested,
        "state_created_bytes": least,
        "state_created_most_bytes": most,
        "kept_bytes": kept,
        "skipped": False,
    }
    return [row, {**row, "step": 2, "state_created_bytes": 0, "allocated_delta": 0, "requested_delta": kept}]


def _block_limit(size: int) -> int:
    rounded = round_size(size)
    return rounded + SMALL_SIZE if rounded > SMALL_SIZE else rounded


def test_the_memory_check_judges_requested_bytes_exactly_and_allocated_by_the_block_rules():
    """The H100's fp32 row failed the old check (95,143,936 B allocated for 93,521,920 B of state
    blocks): large state tensors took whole cached blocks. Requested bytes are exact."""
    fp32, fp16 = _state_rows("fp32", kept=0), _state_rows("fp16", kept=4)
    assert fp32[0]["allocated_delta"] > fp32[0]["state_created_bytes"] + 8 * 512  # what the old check allowed
    ok, parts = gpu_acceptance.judge_memory_steps(fp32 + fp16)
    assert ok, parts
    assert "exact" in parts[0] and "within" in parts[0] and "+ 4 B kept" in parts[1]
    ok, parts = gpu_acceptance.judge_memory_steps(_state_rows("fp32", kept=0, extra=2**20))
    assert not ok and "MISMATCH" in parts[0]


def test_what_the_allocator_still_holds_is_named_by_the_stack_that_allocated_it():
    """The shape torch.cuda.memory._snapshot() gives (segments, blocks, Python frames innermost
    first), as recorded with _record_memory_history(stacks="python")."""
    frame = {"filename": "torch/backends/cudnn/rnn.py", "line": 7, "name": "workspace"}
    snapshot = {
        "segments": [
            {
                "blocks": [
                    {
                        "size": 180 * 2**20,
                        "requested_size": 180 * 2**20,
                        "state": "active_allocated",
                        "frames": [frame],
                    },  # noqa: E501
                    {"size": 2**20, "requested_size": 2**20, "state": "inactive", "frames": []},
                    {"size": 2**21, "requested_size": 2**21 - 8, "state": "active_allocated"},
                ]
            }
        ]
    }
    blocks = gpu_acceptance.allocated_blocks(snapshot)
    assert [b["size"] for b in blocks] == [180 * 2**20, 2**21]
    assert gpu_acceptance.holders(blocks) == (
        "180.0 MiB at torch/backends/cudnn/rnn.py:7 workspace; 2.0 MiB at an unrecorded stack"
    )
    assert gpu_acceptance.holders([]) == "nothing"

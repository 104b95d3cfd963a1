"""The GPU acceptance check: one call on a machine with one NVIDIA GPU shows whether
convbench's CUDA numbers can be trusted there.

    PYTHONPATH=. python -m benchmarks.gpu_acceptance [--out DIR] [--commit SHA] [--cpu-dry-run]

Run from the repository root; it installs nothing and needs no network, and is sized for
about seven minutes on an H100/H200-class GPU (``--budget``, 470 s, shortens the reduced
nightly so that the whole check ends by then). ``--commit`` (or ``$CONVBENCH_GIT_COMMIT``)
names the commit of a copy of the code without its .git. Everything goes under ``DIR``
(default ``results/reference/<gpu-name>``):

    env.json, telemetry.json   the machine as ``convbench run`` records it; the GPU's state and
                               three telemetry samples
    nightly/, nightly.log      a reduced nightly through the CLI (resnet18/resnet50, batch 128,
                               fp32 and bf16, adam and sgdm, channels-last), with its
                               report and history; the verdict gives the share of its wall time
                               spent inside warm-up and timed steps
    data_parallel/, .log       ``convbench run --nproc-per-node 1`` with ddp and fsdp: NCCL's
                               initialisation, collectives and per-rank records on the GPU
    train/, train.log          ``convbench train`` of the lab CNN on scikit-learn's digits written
                               as MNIST files: time to target and epoch time
    profiler.json              a case's step time before and after one profiled step (the
                               harness profiles one step per case; later steps must not slow)
    host_syncs.json            host syncs per step of three cases whose count is known from the
                               code: fp32 Adam 0, fp16 Adam 1 (GradScaler's found_inf.item()),
                               fp16 fused Adam 0; with host time, kernel launches, busy time
    host_bound.json            a case that must come out host-bound (resnet20 at batch 8 with the
                               textbook Adam: thousands of tiny kernels) and one that must not
    memory_steps.csv           the first steps of fp32 and fp16 Adam one by one: allocator
                               figures before and after each update, optimizer-state bytes,
                               loss-scale skips; the requested bytes of the update that creates
                               the state must be the state tensors' exactly, and the allocated
                               bytes within what the allocator's block rules allow
    timer.json                 the harness's median step time against torch.utils.benchmark's
                               Timer (blocked_autorange) on the same step, alternated (1%)
    overhead.json              where a harness step's time goes beside a plain loop: in-place
                               zeroing of gradients against set_to_none, Timer with and without
                               Python's garbage collector
    compile.json               torch.compile warm-up: each step's time and Dynamo's graph count,
                               so a recompilation after the first step shows
    optim.jsonl                ``convbench optim``'s cases for fused, foreach, compiled and loop
                               Adam: wall, host and device time of the step; the compiled
                               textbook Adam's device time within 1.2 x fused Adam's
    oom.jsonl, oom_left.json   one sweep: a case, a case that really runs out of memory, the
                               first case again; the last must match the first. What the
                               allocator still holds after the failed case, with the Python
                               stack that allocated each block (allocation history recorded
                               around the failed case)
    verdicts.json, verdicts.md one line per check: pass, fail, info (measured, not judged),
                               skip (cannot apply here) or error (the check itself broke)

The checks that start ``convbench`` in a process of its own come first, before this process
has touched the GPU, so none of them finds another process holding the device.

With ``--cpu-dry-run`` (automatic without CUDA) the same checks run on the CPU at small
sizes, so their logic is tested in CI: the CUDA-only judgements (allocator exactness, 1%
timing agreement, a real out-of-memory, host-bound steps) say ``info`` or ``skip``, and
torch.compile uses Dynamo's ``eager`` backend (Dynamo's graphs and recompiles are the same;
Inductor's C++ build would take minutes). Exit status 0 when no check failed or broke, else 1.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import gc
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.utils.benchmark

import models
from bench.kinds.step.runner import RunContext, build, run_case
from bench.kinds.step.suite import Case
from bench.measure import host, memory, timing
from bench.measure.env import COMMIT_VARIABLE, collect_env
from bench.measure.precision import cuda_backend_settings
from bench.record import read_flat
from bench.storage import history
from bench.telemetry import gpu

ROOT = Path(__file__).resolve().parent.parent
#: Harness and Timer step times must agree within this on a GPU (the check's promise).
TIMER_TOLERANCE = 0.01
#: A profiled step must not slow the steps after it by more than this.
PROFILER_TOLERANCE = 0.03
#: The case after an out-of-memory must run as it did before it, within these.
AFTER_OOM_TIME = 0.10
AFTER_OOM_PEAK = 0.02
#: Seconds each check took on an H100 (torch 2.11, 2026-12-06), or is expected to take:
#: what the reduced nightly leaves to the checks after it when the budget is short.
EXPECTED_S = {
    "environment": 1,
    "data_parallel": 40,
    "train": 30,
    "profiler": 20,
    "host_syncs": 20,
    "host_bound": 15,
    "memory_steps": 6,
    "timer": 13,
    "overhead": 25,
    "compile": 35,
    "oom": 20,
    "optim": 90,
}


@dataclass(frozen=True)
class Sizes:
    """What the checks run: GPU sizes, or small ones for the CPU dry run."""

    device: torch.device
    model: str
    batch_size: int
    memory_model: str
    compile_model: str
    compile_backend: str
    timer_steps: int
    timer_rounds: int
    timer_seconds: float
    nightly: tuple[str, ...]
    host_bound: tuple[tuple[str, str, int, str, bool, bool], ...]  # model, optimizer, batch, precision, cl, bound
    parallel_model: str
    parallel_batch: int
    train: tuple[str, ...]
    deadline: float = math.inf  # time.monotonic() by which the whole check must have finished

    @property
    def dry_run(self) -> bool:
        return self.device.type != "cuda"


GPU_SIZES = dict(
    model="resnet50",
    batch_size=64,
    memory_model="resnet18",
    compile_model="resnet18",
    compile_backend="inductor",
    timer_steps=30,
    timer_rounds=3,
    timer_seconds=1.5,
    nightly=(
        "--suite=nightly",
        "--models=resnet18,resnet50",
        "--batch-sizes=128",
        "--precision=fp32,bf16",
        "--optimizers=adam,sgdm",
        "--channels-last",
        "--warmup=5",
        "--steps=10",
        "--repeats=3",
    ),
    host_bound=(
        # thousands of kernels of a few microseconds: the device waits for the host
        ("resnet20", "adam", 8, "fp32", False, True),
        # 1,462 kernels of tens of microseconds and up, fused optimizer: the host stays ahead
        ("resnet50", "torch-sgdm-fused", 128, "bf16", True, False),
    ),
    parallel_model="resnet18",
    parallel_batch=64,
    train=("--batch-size=32", "--epochs=5", "--target=0.9", "--stop-at-target"),
)
CPU_SIZES = dict(
    model="mlp",
    batch_size=4,
    memory_model="mlp",
    compile_model="mlp",
    compile_backend="eager",
    timer_steps=5,
    timer_rounds=2,
    timer_seconds=0.05,
    nightly=(
        "--suite=nightly",
        "--models=mlp",
        "--batch-sizes=4",
        "--precision=fp32,bf16",
        "--optimizers=sgdm",
        "--warmup=1",
        "--steps=2",
        "--repeats=2",
        "--device=cpu",
    ),
    host_bound=(("mlp", "adam", 4, "fp32", False, True), ("mlp", "torch-sgdm-fused", 4, "fp32", False, False)),
    parallel_model="mlp",
    parallel_batch=4,
    train=("--batch-size=64", "--steps=6", "--target=0.5"),
)


@dataclass
class Verdict:
    check: str
    status: str  # pass | fail | info | skip | error
    line: str
    seconds: float = 0.0


def make_case(sizes: Sizes, model: str | None = None, **changes: object) -> Case:
    """A case of the check's model at its natural input, warm-up 3, 2 repeats of 5 steps."""
    model = model or sizes.model
    spec = models.spec(model)
    fields = dict(
        model=model,
        optimizer="adam",
        batch_size=sizes.batch_size,
        precision="fp32",
        channels_last=False,
        compile=False,
        dataset="synthetic",
        input_shape=spec.input_shape,
        num_classes=spec.num_classes,
        steps=5,
        warmup=3,
        repeats=2,
        detailed=False,
    )
    return Case(**{**fields, **changes})


@contextlib.contextmanager
def case_scope(sizes: Sizes, case: Case) -> Iterator[None]:
    """What the runner sets around a case: its CUDA device and backend settings (cuDNN
    autotuning, TF32 as the precision says)."""
    if sizes.device.type != "cuda":
        yield
        return
    with torch.cuda.device(sizes.device), cuda_backend_settings(case.precision, sizes.device):
        yield


def write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def context(sizes: Sizes, env: dict) -> RunContext:
    """The checks' run context: no memory pass, which none of their judgements reads."""
    return RunContext(run_id="acceptance", suite="acceptance", device=sizes.device, env=env, memory_pass=False)


def run_records(sizes: Sizes, env: dict, cases: list[Case]) -> list:
    return [run_case(case, context(sizes, env)) for case in cases]


# ---------------------------------------------------------------------------------------
# Checks that start convbench in a process of their own (first: this process has not yet
# touched the GPU, so they find no other process on it).


@dataclass(frozen=True)
class Launched:
    """A convbench command run in a process of its own: exit status (None: timed out), output."""

    returncode: int | None
    stdout: str
    stderr: str


def _text(output: str | bytes | None) -> str:
    """What a finished or timed-out process wrote (TimeoutExpired keeps bytes even with text=True)."""
    if isinstance(output, bytes):
        return output.decode("utf-8", errors="replace")
    return output or ""


def launch(arguments: list[str], log: Path, timeout: float, dry_run: bool) -> Launched:
    """``python -m bench ARGUMENTS`` from the repository root, its output kept in ``log``."""
    command = [sys.executable, "-m", "bench", *arguments]
    environ = {**os.environ, "PYTHONPATH": str(ROOT)}
    if dry_run:
        environ["OMP_NUM_THREADS"] = "1"
    try:
        done = subprocess.run(
            command, cwd=ROOT, env=environ, capture_output=True, text=True, check=False, timeout=timeout
        )
        outcome = Launched(done.returncode, done.stdout, done.stderr)
    except subprocess.TimeoutExpired as expired:
        outcome = Launched(None, _text(expired.stdout), _text(expired.stderr))
    log.write_text(f"$ {' '.join(command)}\n{outcome.stdout}\n{outcome.stderr}")
    return outcome


def read_run(run_dir: Path) -> tuple[dict, list[dict]]:
    """(run.json, records) of a run folder, empty where it was never made."""
    if not (run_dir / "run.json").is_file():
        return {}, []
    manifest = json.loads((run_dir / "run.json").read_text())
    lines = (run_dir / "records.jsonl").read_text().splitlines()
    return manifest, [read_flat(json.loads(line)) for line in lines if line.strip()]


def time_left(sizes: Sizes, after: str) -> float:
    """Seconds the check that runs now may take: up to the deadline, less what the checks
    after ``after`` are expected to need."""
    names = [name for name, _ in CHECKS]
    later = names[names.index(after) + 1 :] if after in names else []
    return sizes.deadline - time.monotonic() - sum(EXPECTED_S.get(name, 0) for name in later)


def check_nightly(sizes: Sizes, out: Path, env: dict) -> tuple[str, str]:
    results = out / "nightly"
    timeout = max(60.0, time_left(sizes, "nightly"))
    done = launch(
        ["run", *sizes.nightly, f"--results={results}", "--run-id=acceptance"],
        out / "nightly.log",
        timeout,
        sizes.dry_run,
    )
    if done.returncode is None:
        return "fail", f"the reduced nightly did not finish within the budget ({timeout:.0f} s left for it)"
    manifest, records = read_run(results / "acceptance")
    database = results / history.DEFAULT_NAME
    in_history = database.exists() and not history.runs(database).empty
    report = (results / "acceptance" / "report.html").is_file()
    failed = [f"{r['case_id']}: {r['status']}" for r in records if r["status"] != "ok"]
    energy = [r["samples_per_joule"] for r in records if r.get("samples_per_joule")]
    syncing = sum(bool(r.get("host_syncs_per_step")) for r in records)
    bound = sum(bool(r.get("host_bound")) for r in records)
    shared = [line for line in done.stderr.splitlines() if "is shared:" in line]
    steps, wall = manifest.get("steps_s"), manifest.get("wall_s")
    share = f"{steps:.1f} s of {wall:.1f} s in steps ({steps / wall:.0%})" if steps and wall else "no step time"
    autotuning = sum(r.get("autotune_s") or 0.0 for r in records)  # before the warm-ups, outside steps_s
    share += f", cuDNN autotuning {autotuning:.1f} s outside them"
    line = (
        f"exit {done.returncode}, {len(records)} cases, {len(failed)} failed, report {'yes' if report else 'no'}, "
        f"history {'yes' if in_history else 'no'}; {share}; {syncing} host-syncing, {bound} host-bound; "
        + (f"samples/J {min(energy):.1f}–{max(energy):.1f}" if energy else "no energy figures")
        + (f"; GPU shared: {shared[0]}" if shared else "")
    )
    ok = done.returncode == 0 and records and not failed and report and in_history and not shared
    ok = ok and (sizes.dry_run or len(energy) == len(records))
    return ("pass" if ok else "fail"), line + (f" ({'; '.join(failed)})" if failed else "")


def check_data_parallel(sizes: Sizes, out: Path, env: dict) -> tuple[str, str]:
    """One rank through torchrun with ddp and fsdp: NCCL on a GPU (gloo in the dry run)."""
    suite = out / "data_parallel.toml"
    suite.write_text(
        "[suite]\n"
        'name = "acceptance-data-parallel"\n'
        f'device = "{sizes.device.type}"\n'
        "steps = 5\nwarmup = 3\nrepeats = 2\n\n"
        "[[grid]]\n"
        f'models = ["{sizes.parallel_model}"]\n'
        'optimizers = ["sgdm"]\n'
        f"batch_sizes = [{sizes.parallel_batch}]\n"
        'strategy = ["ddp", "fsdp"]\n'
        "world_sizes = [1]\n"
    )
    results = out / "data_parallel"
    arguments = ["run", f"--suite={suite}", "--nproc-per-node=1", f"--results={results}", "--run-id=acceptance-dp"]
    done = launch(arguments, out / "data_parallel.log", max(60.0, time_left(sizes, "data_parallel")), sizes.dry_run)
    if done.returncode is None:
        return "fail", "the one-rank data-parallel run did not finish in its time"
    _, records = read_run(results / "acceptance-dp")
    found = {
        r.get("strategy"): (r["status"], r.get("backend"), r.get("world_size"), r.get("rank_status")) for r in records
    }
    backend = "nccl" if sizes.device.type == "cuda" else "gloo"
    expected = {strategy: ("ok", backend, 1, ["ok"]) for strategy in ("ddp", "fsdp")}
    times = ", ".join(f"{r.get('strategy')} {r.get('step_time_ms') or 0:.2f} ms" for r in records)
    line = f"exit {done.returncode}; " + "; ".join(f"{k}: {v}" for k, v in sorted(found.items())) + f"; {times}"
    return ("pass" if done.returncode == 0 and found == expected else "fail"), line


def check_train(sizes: Sizes, out: Path, env: dict) -> tuple[str, str]:
    """``convbench train`` of the lab CNN with Adam on scikit-learn's digits as MNIST files."""
    try:
        from benchmarks.digits import write_digits

        write_digits(out / "digits")
    except ImportError:
        return "skip", "scikit-learn is not installed, so there are no digits to train on"
    results = out / "train"
    arguments = ["train", "--suite=mnist", f"--data-root={out / 'digits'}", f"--device={sizes.device.type}"]
    arguments += ["--models=cnn", "--recipes=adam", "--seeds=1", *sizes.train, f"--results={results}"]
    arguments += ["--run-id=acceptance-train"]
    done = launch(arguments, out / "train.log", max(60.0, time_left(sizes, "train")), sizes.dry_run)
    if done.returncode is None:
        return "fail", "the training run did not finish in its time"
    _, records = read_run(results / "acceptance-train")
    if len(records) != 1:
        return "fail", f"exit {done.returncode}, {len(records)} records (expected 1)"
    record = records[0]
    epochs, seconds = record.get("epochs_trained") or 0, record.get("train_time_s") or 0
    epoch_s = seconds / epochs if epochs else None
    target = record.get("time_to_target_s")
    line = (
        f"exit {done.returncode}, {record['status']}: test accuracy {record.get('final_test_accuracy')}, "
        f"{epochs:.2f} epochs in {seconds:.2f} s ("
        + (f"{epoch_s:.2f} s an epoch" if epoch_s else "no epoch")
        + "), time to "
        + f"{record.get('target_accuracy')}: "
        + (f"{target:.2f} s" if target is not None else "not reached")
    )
    ok = done.returncode == 0 and record["status"] == "ok" and (sizes.dry_run or target is not None)
    return ("pass" if ok else "fail"), line


# ---------------------------------------------------------------------------------------
# Checks in this process.


def check_environment(sizes: Sizes, out: Path, env: dict) -> tuple[str, str]:
    reader, why_not = gpu.reader()
    samples = []
    live = reader is not None and not sizes.dry_run
    state = gpu.find_gpu(reader.gpus(), gpu.cuda_uuid(sizes.device.index or 0)) if live else None
    for _ in range(3 if state else 0):
        samples.append(reader.sample(state["uuid"]))
        time.sleep(0.2)
    write_json(out / "telemetry.json", {"state": env.get("gpu_telemetry"), "samples": samples})
    if sizes.dry_run:
        return "skip", f"no GPU; telemetry source: {env['gpu_telemetry'].get('source')} ({why_not or 'available'})"
    state = next((g for g in env["gpu_telemetry"]["gpus"] if g.get("cuda_index") == (sizes.device.index or 0)), None)
    if state is None or not samples:
        return "fail", f"no telemetry for the CUDA device: {why_not or 'its UUID is not among the GPUs NVML lists'}"
    missing = [k for k in ("uuid", "power_limit_w", "sm_clock_mhz", "pstate", "temperature_c") if state.get(k) is None]
    energy = all(s.get("energy_j") is not None for s in samples)
    others = [p for p in state.get("compute_processes") or [] if p.get("pid") != os.getpid()]
    line = (
        f"{env['gpu_telemetry']['source']}: {state.get('name')}, power limit {state.get('power_limit_w')} W "
        f"(default {state.get('default_power_limit_w')}), "
        f"SM {state.get('sm_clock_mhz')}/{state.get('max_sm_clock_mhz')} MHz, {state.get('pstate')}, "
        f"{state.get('temperature_c')} C, throttle {state.get('throttle_reasons')}, "
        f"energy counter {'yes' if energy else 'no'}, {len(others)} other compute process(es)"
    )
    return ("pass" if not missing and energy else "fail"), line + (f"; missing {missing}" if missing else "")


def check_profiler(sizes: Sizes, out: Path, env: dict) -> tuple[str, str]:
    """Every case profiles one step after its timed ones; the steps after it, in this case or
    the next, must be as fast as before it (CUPTI must not stay attached)."""
    case = make_case(sizes, optimizer="sgdm")
    clock = timing.clock_for(sizes.device)
    with case_scope(sizes, case):
        _, optimizer, trainer = build(case, context(sizes, env), {})
        for _ in range(5):
            trainer.step()

        def median_ms() -> float:
            return timing.summarize(timing.time_steps([trainer.step], sizes.timer_steps, clock)[0]).median

        before = [median_ms() for _ in range(3)]
        probe = host.probe_step(trainer.step, sizes.device, optimizer, compiled=False)
        after = [median_ms() for _ in range(3)]
        trainer.check_finite()
    change = statistics.median(after) / statistics.median(before) - 1
    write_json(out / "profiler.json", {"case": case.case_id, "before_ms": before, "after_ms": after, **probe})
    line = (
        f"{case.case_id}: {statistics.median(before):.2f} ms a step before the profiled step, "
        f"{statistics.median(after):.2f} ms after ({change:+.1%}); {probe.get('kernel_launches_per_step')} kernel "
        f"launches, GPU busy {_ms(probe.get('device_busy_ms'))} of a {_ms(probe.get('device_span_ms'))} span"
    )
    if sizes.dry_run:
        return "info", line + " (CPU: nothing profiled, not judged)"
    return ("pass" if abs(change) <= PROFILER_TOLERANCE else "fail"), line


def _ms(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f} ms"


#: (optimizer, precision, host syncs a step must have): known from the code of GradScaler.
SYNC_CASES = (("adam", "fp32", 0), ("adam", "fp16", 1), ("torch-adam-fused", "fp16", 0))
#: What host_syncs.json and host_bound.json keep of each record.
HOST_FIELDS = (
    "case_id",
    "status",
    "error",
    "host_syncs_per_step",
    "host_syncs_source",
    "host_time_ms",
    "step_time_ms",
    "kernel_launches_per_step",
    "device_busy_ms",
    "device_span_ms",
    "host_bound",
)


def check_host_syncs(sizes: Sizes, out: Path, env: dict) -> tuple[str, str]:
    records = run_records(sizes, env, [make_case(sizes, optimizer=o, precision=p, repeats=1) for o, p, _ in SYNC_CASES])
    write_json(out / "host_syncs.json", [{k: getattr(r, k) for k in HOST_FIELDS} for r in records])
    found = [r.host_syncs_per_step for r in records]
    expected = [syncs for *_, syncs in SYNC_CASES]
    parts = [
        f"{o}/{p}: {n} (expected {e}; host {r.host_time_ms and round(r.host_time_ms, 2)} ms of "
        f"{r.step_time_ms and round(r.step_time_ms, 2)} ms, launches {r.kernel_launches_per_step}, "
        f"host-bound {r.host_bound})"
        for (o, p, e), n, r in zip(SYNC_CASES, found, records, strict=True)
    ]
    return ("pass" if found == expected else "fail"), f"{records[0].host_syncs_source}: " + "; ".join(parts)


def check_host_bound(sizes: Sizes, out: Path, env: dict) -> tuple[str, str]:
    """A step of thousands of tiny kernels must come out host-bound, a fused large one must not."""
    cases = [
        make_case(sizes, model, optimizer=o, batch_size=b, precision=p, channels_last=cl, repeats=1)
        for model, o, b, p, cl, _ in sizes.host_bound
    ]
    records = run_records(sizes, env, cases)
    write_json(out / "host_bound.json", [{k: getattr(r, k) for k in HOST_FIELDS} for r in records])
    parts = [
        f"{r.case_id}: host-bound {r.host_bound} (expected {expected}; busy {_ms(r.device_busy_ms)} of a "
        f"{_ms(r.device_span_ms)} profiled span, {r.kernel_launches_per_step} launches; step {_ms(r.step_time_ms)})"
        for r, (*_, expected) in zip(records, sizes.host_bound, strict=True)
    ]
    if sizes.dry_run:
        return "info", "; ".join(parts) + " (CPU: host and device are one, not judged)"
    ok = [r.host_bound for r in records] == [expected for *_, expected in sizes.host_bound]
    return ("pass" if ok else "fail"), "; ".join(parts)


def _device_state(optimizer: torch.optim.Optimizer, device: torch.device) -> list[torch.Tensor]:
    return [
        t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor) and t.device == device
    ]


def memory_steps(sizes: Sizes, precision: str, env: dict, meter: memory.Meter | None = None, steps: int = 10):
    """The first ``steps`` training steps one by one, with the meter read around the update:
    allocated and requested bytes, the state tensors on the device (exact, and what the
    allocator's block rules allow them to hold), and what the trainer keeps of the update
    (fp16: GradScaler's found-inf flag, held until the losses are next read)."""
    case = make_case(sizes, sizes.memory_model, precision=precision, batch_size=min(sizes.batch_size, 32))
    meter = meter or memory.meter_for(sizes.device)
    rows = []
    with case_scope(sizes, case):
        _, optimizer, trainer = build(case, context(sizes, env), {})
        for step in range(1, steps + 1):
            trainer.forward()
            trainer.backward()
            scale = trainer.scaler.get_scale() if trainer.scaler.is_enabled() else None
            creating = not optimizer.state
            kept_before = len(trainer.found_inf)
            before, requested_before = meter.in_use(), meter.requested_in_use()
            trainer.update()
            after, requested_after = meter.in_use(), meter.requested_in_use()
            least, most = memory.state_allocation_bounds(optimizer, sizes.device) if creating else (0, 0)
            rows.append(
                {
                    "precision": precision,
                    "step": step,
                    "in_use_before_update": before,
                    "in_use_after_update": after,
                    "allocated_delta": after - before,
                    "requested_delta": None if requested_before is None else requested_after - requested_before,
                    "state_bytes": memory.optimizer_state_bytes(optimizer),
                    "state_created_bytes": least,
                    "state_created_most_bytes": most,
                    "kept_bytes": sum(t.numel() * t.element_size() for t in trainer.found_inf[kept_before:]),
                    "loss_scale": scale,
                    "skipped": scale is not None and trainer.scaler.get_scale() < scale,
                }
            )
            trainer.check_finite()
        del optimizer, trainer
        meter.release()
    return rows


def judge_memory_steps(rows: list[dict]) -> tuple[bool, list[str]]:
    """Per precision, the update that created the state: its requested bytes must be the new
    state tensors' bytes on the device plus what the trainer keeps of the update, exactly, and
    its allocated bytes within what the allocator's block rules allow for the state (each
    tensor in 512-byte blocks, a large one handed up to 1 MiB more) plus the kept tensors'
    blocks. Returns (all held, one phrase per precision)."""
    ok, parts = True, []
    for precision in dict.fromkeys(r["precision"] for r in rows):
        mine = [r for r in rows if r["precision"] == precision]
        created = next((r for r in mine if r["state_created_bytes"]), None)
        skipped = sum(r["skipped"] for r in mine)
        if created is None:
            ok = False
            parts.append(f"{precision}: the optimizer never stepped in {len(mine)} steps ({skipped} skipped)")
            continue
        kept = created["kept_bytes"]
        exact = created["requested_delta"] == created["state_created_bytes"] + kept
        kept_blocks = -(-kept // memory.CUDA_BLOCK_BYTES) * memory.CUDA_BLOCK_BYTES
        allowed = created["state_created_bytes"] <= created["allocated_delta"] - kept_blocks
        allowed = allowed and created["allocated_delta"] - kept_blocks <= created["state_created_most_bytes"]
        ok &= exact and allowed
        parts.append(
            f"{precision}: state created at step {created['step']} ({skipped} skipped): requested "
            f"{created['requested_delta']:,} B for {created['state_created_bytes']:,} B of state + {kept} B kept "
            f"({'exact' if exact else 'MISMATCH'}); allocated {created['allocated_delta']:,} B "
            f"({'within' if allowed else 'OUTSIDE'} the block rules' {created['state_created_bytes']:,}–"
            f"{created['state_created_most_bytes']:,} B)"
        )
    return ok, parts


def check_memory(sizes: Sizes, out: Path, env: dict) -> tuple[str, str]:
    rows = memory_steps(sizes, "fp32", env) + memory_steps(sizes, "fp16", env)
    with (out / "memory_steps.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if sizes.dry_run:
        created = [r for r in rows if r["state_created_bytes"]]
        states = "; ".join(f"{r['precision']}: state created at step {r['step']}" for r in created)
        return "info", f"process RSS, not an allocator (not judged): {states}"
    ok, parts = judge_memory_steps(rows)
    return ("pass" if ok else "fail"), "; ".join(parts)


def check_timer(sizes: Sizes, out: Path, env: dict) -> tuple[str, str]:
    case = make_case(sizes, optimizer="sgdm")
    clock = timing.clock_for(sizes.device)
    rounds = []
    with case_scope(sizes, case):
        _, _, trainer = build(case, context(sizes, env), {})
        for _ in range(5):
            trainer.step()
        for _ in range(sizes.timer_rounds):
            harness = timing.summarize(timing.time_steps([trainer.step], sizes.timer_steps, clock)[0]).median
            reference = timer_ms(trainer.step, sizes.timer_seconds)
            trainer.check_finite()
            rounds.append({"harness_ms": harness, "timer_ms": reference, "ratio": harness / reference})
        del trainer
    ratio = statistics.median(r["ratio"] for r in rounds)
    write_json(out / "timer.json", {"case": case.case_id, "rounds": rounds, "median_ratio": ratio})
    line = (
        f"{case.case_id}: harness / Timer = {ratio:.3f} (median of {len(rounds)} alternated rounds; "
        f"harness {statistics.median(r['harness_ms'] for r in rounds):.2f} ms, "
        f"Timer {statistics.median(r['timer_ms'] for r in rounds):.2f} ms)"
    )
    if sizes.dry_run:
        return "info", line + " (CPU: not judged)"
    return ("pass" if abs(ratio - 1) <= TIMER_TOLERANCE else "fail"), line


def timer_ms(step: Callable[[], None], seconds: float, collect_garbage: bool = False) -> float:
    """``torch.utils.benchmark.Timer``'s median milliseconds of ``step`` (blocked_autorange).
    Timer runs on one CPU thread unless told, the harness on torch's setting; like timeit it
    turns Python's garbage collector off while timing, unless ``collect_garbage``."""
    timer = torch.utils.benchmark.Timer(
        stmt="step()",
        setup="gc.enable()" if collect_garbage else "pass",
        globals={"step": step, "gc": gc},
        num_threads=torch.get_num_threads(),
    )
    return timer.blocked_autorange(min_run_time=seconds).median * 1e3


def check_overhead(sizes: Sizes, out: Path, env: dict) -> tuple[str, str]:
    """Where the harness's step differs from a plain loop's: the same case's step as the
    harness runs it (in-place zeroing, losses kept, GradScaler), a plain step zeroing in place
    and one setting gradients to None (PyTorch's default), each timed by the harness's clock
    in alternated rounds; and Timer with and without the garbage collector on the harness's
    step. Measured, not judged."""
    from benchmarks.overhead import hand_written_step  # registers its probe model: only here

    case = make_case(sizes, optimizer="sgdm")
    clock = timing.clock_for(sizes.device)
    samples: dict[str, list[float]] = {}
    with case_scope(sizes, case):
        _, _, trainer = build(case, context(sizes, env), {})
        steps = {
            "harness_step": trainer.step,
            "plain_in_place": hand_written_step(case, sizes.device, set_to_none=False),
            "plain_set_to_none": hand_written_step(case, sizes.device, set_to_none=True),
        }
        for step in steps.values():
            for _ in range(3):
                step()
        for round_ in range(sizes.timer_rounds):
            order = list(steps.items())
            for name, step in order[round_ % len(order) :] + order[: round_ % len(order)]:
                times = timing.time_steps([step], sizes.timer_steps, clock)[0]
                samples.setdefault(name, []).append(timing.summarize(times).median)
            samples.setdefault("timer_gc_off", []).append(timer_ms(trainer.step, sizes.timer_seconds))
            samples.setdefault("timer_gc_on", []).append(timer_ms(trainer.step, sizes.timer_seconds, True))
            trainer.check_finite()
        del trainer, steps
    medians = {name: statistics.median(values) for name, values in samples.items()}
    write_json(out / "overhead.json", {"case": case.case_id, "samples_ms": samples, "median_ms": medians})
    zeroing = medians["plain_in_place"] - medians["plain_set_to_none"]
    rest = medians["harness_step"] - medians["plain_in_place"]
    collector = medians["timer_gc_on"] - medians["timer_gc_off"]
    line = (
        f"{case.case_id}: harness step {medians['harness_step']:.3f} ms, plain step {medians['plain_in_place']:.3f} ms "
        f"zeroing in place / {medians['plain_set_to_none']:.3f} ms set to None: in-place zeroing "
        f"{zeroing * 1e3:+.0f} us, the rest of the harness's step {rest * 1e3:+.0f} us; Timer "
        f"{medians['timer_gc_off']:.3f} ms without the garbage collector, {medians['timer_gc_on']:.3f} ms with it "
        f"({collector * 1e3:+.0f} us)"
    )
    return "info", line


@contextlib.contextmanager
def compile_backend(backend: str) -> Iterator[None]:
    """torch.compile with ``backend`` for the harness's compiled cases, where it is not
    the default (the CPU dry run's ``eager``)."""
    if backend == "inductor":
        yield
        return
    original = torch.compile
    torch.compile = functools.partial(original, backend=backend)
    try:
        yield
    finally:
        torch.compile = original


def check_compile(sizes: Sizes, out: Path, env: dict) -> tuple[str, str]:
    from torch._dynamo.utils import counters

    case = make_case(sizes, sizes.compile_model, compile=True, optimizer="sgdm", batch_size=min(sizes.batch_size, 32))
    steps = []
    with case_scope(sizes, case), compile_backend(sizes.compile_backend):
        _, _, trainer = build(case, context(sizes, env), {})  # resets Dynamo
        counters.clear()
        for step in range(1, 9):
            start = time.perf_counter()
            trainer.step()
            if sizes.device.type == "cuda":
                torch.cuda.synchronize()
            graphs = counters["stats"]["unique_graphs"]
            steps.append({"step": step, "seconds": time.perf_counter() - start, "graphs": graphs})
        breaks = sum(counters["graph_break"].values())
        del trainer
    recompiles = steps[-1]["graphs"] - steps[0]["graphs"]
    write_json(
        out / "compile.json",
        {
            "case": case.case_id,
            "backend": sizes.compile_backend,
            "steps": steps,
            "graph_breaks": breaks,
            "recompiles_after_first_step": recompiles,
        },
    )
    steady = statistics.median(s["seconds"] for s in steps[2:])
    line = (
        f"{sizes.compile_backend}: first step {steps[0]['seconds']:.1f} s ({steps[0]['graphs']} graph(s), "
        f"{breaks} graph break(s)), then {steady * 1e3:.1f} ms a step; {recompiles} recompile(s) after the first step"
    )
    return ("pass" if recompiles == 0 else "fail"), line


#: A resnet50 batch that cannot fit: training it in fp32 keeps about 90 MB of activations per
#: sample (23 GB at batch 256), so 2,600 samples need some 230 GB, more than any single GPU of
#: today holds, while its largest tensors (2,600 x 256 x 56 x 56) stay under 2^31 elements,
#: where cuDNN would refuse them as unsupported instead of running out of memory.
OOM_BATCH = 2600


def allocated_blocks(snapshot: dict, frames: int = 6) -> list[dict]:
    """The blocks a ``torch.cuda.memory._snapshot()`` shows allocated, largest first: size,
    requested size and the innermost ``frames`` Python frames of the stack that allocated it
    (recorded where allocation history was on when it was allocated)."""
    blocks = [
        {
            "size": block["size"],
            "requested_size": block.get("requested_size"),
            "frames": [
                f"{frame.get('filename')}:{frame.get('line')} {frame.get('name')}"
                for frame in block.get("frames", [])[:frames]
            ],
        }
        for segment in snapshot.get("segments", [])
        for block in segment.get("blocks", [])
        if block.get("state") == "active_allocated"
    ]
    return sorted(blocks, key=lambda block: -block["size"])


def holders(blocks: list[dict], top: int = 3) -> str:
    """The largest allocated blocks and where each was allocated, as one phrase."""
    if not blocks:
        return "nothing"
    named = [
        f"{b['size'] / 2**20:.1f} MiB at {b['frames'][0] if b['frames'] else 'an unrecorded stack'}" for b in blocks
    ]
    return "; ".join(named[:top]) + (f"; and {len(blocks) - top} more" if len(blocks) > top else "")


def check_oom(sizes: Sizes, out: Path, env: dict) -> tuple[str, str]:
    case = make_case(sizes, optimizer="sgdm")
    failing = None if sizes.dry_run else make_case(sizes, "resnet50", optimizer="sgdm", batch_size=OOM_BATCH, repeats=1)
    records, left = [], None
    with (out / "oom.jsonl").open("w") as file:
        for this in [case, failing, case]:
            if this is None:
                continue
            recording = this is failing
            if recording:  # what allocates during the failed case, with its Python stack
                torch.cuda.memory._record_memory_history(enabled="all", stacks="python")
            record = run_case(this, context(sizes, env))
            if recording:
                left = allocated_blocks(torch.cuda.memory._snapshot())
                torch.cuda.memory._record_memory_history(enabled=None)
                write_json(out / "oom_left.json", {"after": this.case_id, "allocated_blocks": left})
            records.append(record)
            file.write(json.dumps(record.to_dict(), default=str) + "\n")
            file.flush()
    statuses = [r.status for r in records]
    first, last = records[0], records[-1]
    if first.status != "ok" or last.status != "ok":
        return "fail", f"statuses {statuses}: {last.error or first.error}"
    time_change = last.step_time_ms / first.step_time_ms - 1
    peak_change = last.peak_memory_bytes / first.peak_memory_bytes - 1
    line = f"statuses {statuses}; after the OOM: step time {time_change:+.1%}, peak memory {peak_change:+.2%}"
    if sizes.dry_run:
        return "skip", f"a real out-of-memory needs a GPU; the case ran twice: {line}"
    line += (
        f"; allocated at the start of the case after it {last.memory_at_case_start_bytes:,} B "
        f"(before it {first.memory_at_case_start_bytes:,} B); left after the failed case: {holders(left)}"
    )
    ok = statuses[1] == "oom" and abs(time_change) <= AFTER_OOM_TIME and abs(peak_change) <= AFTER_OOM_PEAK
    return ("pass" if ok else "fail"), line


def check_optim(sizes: Sizes, out: Path, env: dict) -> tuple[str, str]:
    """``convbench optim``'s cases for fused, foreach, compiled and loop Adam on the check's
    model (resnet50; the dry run's small one) in fp32: wall, host and device time of the step
    and its bandwidth, every record in optim.jsonl. On a GPU the compiled textbook Adam's
    device time must be within 1.2 x fused Adam's."""
    import pandas as pd

    from bench.kinds.optimizer_step import runner as optimizer_step
    from bench.kinds.optimizer_step.roofline import limit_notes
    from bench.kinds.step.runner import device_name
    from bench.measure.bandwidth import measure_bandwidth

    adams, compiled_over_fused = ("torch-adam-fused", "torch-adam-foreach", "adam-compiled", "adam"), 1.2
    steps, repeats = (2, 2) if sizes.dry_run else (20, 5)
    records = {}
    with compile_backend(sizes.compile_backend), (out / "optim.jsonl").open("w") as file:
        for name in adams:
            case = optimizer_step.OptimizerStepCase(sizes.model, name, "fp32", steps=steps, warmup=3, repeats=repeats)
            limit = measure_bandwidth(sizes.device, 2**20 if sizes.dry_run else None)
            record = optimizer_step.run_case(
                case,
                sizes.device,
                limit,
                run_id="acceptance",
                suite="acceptance",
                env=env,
                device_name=device_name(sizes.device, env),
            )
            records[name] = record
            file.write(json.dumps(record.to_dict(), default=str) + "\n")
    failed = [f"{n}: {r.status}: {r.error}" for n, r in records.items() if r.status != "ok"]
    if failed:
        return "fail", "; ".join(failed)
    parts = [
        f"{n} wall {r.step_time_ms:.3f} ms, host {r.host_time_ms:.3f} ms, device "
        + (
            f"{r.device_time_ms:.3f} ms ({r.device_time_source}), {r.bandwidth_fraction:.0%} of bandwidth"
            if r.device_time_ms is not None
            else "unknown"
        )
        + f" (wall {r.wall_bandwidth_fraction:.0%}), host-bound {r.host_bound}"
        for n, r in records.items()
    ]
    fused, compiled = records["torch-adam-fused"].device_time_ms, records["adam-compiled"].device_time_ms
    ratio = compiled / fused if fused and compiled else None
    line = "; ".join(parts) + (f"; compiled / fused device time {ratio:.2f}" if ratio else "")
    line += "".join(f"; {note}" for note in limit_notes(pd.DataFrame([r.to_dict() for r in records.values()])))
    if sizes.dry_run:
        return "info", line + " (CPU: device time is the wall time, not judged)"
    return ("pass" if ratio is not None and ratio <= compiled_over_fused else "fail"), line


CHECKS: list[tuple[str, Callable[[Sizes, Path, dict], tuple[str, str]]]] = [
    ("environment", check_environment),  # NVML only
    ("nightly", check_nightly),  # the convbench processes, before this one uses the GPU
    ("data_parallel", check_data_parallel),
    ("train", check_train),
    ("profiler", check_profiler),  # first to profile in this process
    ("host_syncs", check_host_syncs),
    ("host_bound", check_host_bound),
    ("memory_steps", check_memory),
    ("timer", check_timer),
    ("overhead", check_overhead),
    ("compile", check_compile),
    ("oom", check_oom),
    ("optim", check_optim),
]


def run_checks(sizes: Sizes, out: Path, only: list[str] | None = None) -> list[Verdict]:
    """Run every check (or those named in ``only``), each on its own: one that breaks is an
    ``error`` verdict and the rest still run. Writes env.json and the verdicts."""
    out.mkdir(parents=True, exist_ok=True)
    env = collect_env()
    write_json(out / "env.json", env)
    verdicts = []
    for name, check in CHECKS:
        if only and name not in only:
            continue
        start = time.perf_counter()
        try:
            status, line = check(sizes, out, env)
        except Exception as error:  # noqa: BLE001  (a broken check is a verdict too)
            status, line = "error", f"{type(error).__name__}: {error}"
        verdicts.append(Verdict(name, status, line, round(time.perf_counter() - start, 1)))
        print(f"{name}: {status}: {line}", file=sys.stderr, flush=True)
    write_json(out / "verdicts.json", [asdict(v) for v in verdicts])
    where = env["gpus"][0]["name"] if not sizes.dry_run else f"CPU dry run on {env['cpu']['model']}"
    lines = [
        f"# GPU acceptance: {where}",
        "",
        f"torch {env['torch']}, CUDA {env['cuda']}, commit {env['git_commit']} ({env['code_source']})",
        "",
    ]
    lines += [f"- **{v.status}** `{v.check}` ({v.seconds} s): {v.line}" for v in verdicts]
    (out / "verdicts.md").write_text("\n".join(lines) + "\n")
    return verdicts


def default_out(device: torch.device) -> Path:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu-dry-run"
    return ROOT / "results" / "reference" / re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for every result (default results/reference/<gpu-name>)")
    parser.add_argument("--cpu-dry-run", action="store_true", help="small sizes on the CPU (automatic without CUDA)")
    parser.add_argument("--checks", help=f"comma-separated subset of: {', '.join(n for n, _ in CHECKS)}")
    parser.add_argument(
        "--budget", type=float, default=470, help="seconds the whole check may take; the nightly is cut short to fit"
    )
    parser.add_argument(
        "--commit", help=f"the commit of a copy of the code without .git (default ${COMMIT_VARIABLE}, else git's)"
    )
    args = parser.parse_args(argv)
    only = args.checks.split(",") if args.checks else None
    unknown = sorted(set(only or []) - {n for n, _ in CHECKS})
    if unknown:
        parser.error(f"unknown check(s) {', '.join(unknown)}; valid: {', '.join(n for n, _ in CHECKS)}")
    if args.commit:
        os.environ[COMMIT_VARIABLE] = args.commit  # this process and every convbench it starts
    dry = args.cpu_dry_run or not torch.cuda.is_available()
    device = torch.device("cpu") if dry else torch.device("cuda", torch.cuda.current_device())
    sizes = Sizes(device=device, deadline=time.monotonic() + args.budget, **(CPU_SIZES if dry else GPU_SIZES))
    if dry:
        # The dry run's operations are tiny; on a shared CI machine two OpenMP threads
        # spin-waiting for each other make them many times slower.
        torch.set_num_threads(1)
    verdicts = run_checks(sizes, (args.out or default_out(device)).resolve(), only)
    return 0 if all(v.status in ("pass", "info", "skip") for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())

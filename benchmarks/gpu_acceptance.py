"""The GPU acceptance check: one call on a machine with one NVIDIA GPU shows whether
convbench's CUDA numbers can be trusted there.

    PYTHONPATH=. python -m benchmarks.gpu_acceptance [--out DIR] [--cpu-dry-run]

Run from the repository root; it installs nothing and needs no network, and is sized for
about five minutes on an H100/H200-class GPU (``--budget``, 480 s, stops it at eight). Everything goes under
``DIR`` (default ``results/reference/<gpu-name>``):

    env.json, telemetry.json   the machine as ``convbench run`` records it; the GPU's state and
                               three telemetry samples
    profiler.json              a case's step time before and after one profiled step (the
                               harness profiles one step per case; later steps must not slow)
    host_syncs.json            host syncs per step of three cases whose count is known from the
                               code: fp32 Adam 0, fp16 Adam 1 (GradScaler's found_inf.item()),
                               fp16 fused Adam 0; with host time, kernel launches, busy time
    memory_steps.csv           the first steps of fp32 and fp16 Adam one by one: allocator
                               figures before and after each update, optimizer-state bytes,
                               loss-scale skips; the state's allocation is checked against its
                               tensors rounded to the allocator's 512-byte blocks
    timer.json                 the harness's median step time against torch.utils.benchmark's
                               Timer (blocked_autorange) on the same step, alternated
    compile.json               torch.compile warm-up: each step's time and Dynamo's graph count,
                               so a recompilation after the first step shows
    oom.jsonl                  one sweep: a case, a case that really runs out of memory, the
                               first case again; the last must match the first
    nightly/                   a reduced nightly through the CLI (resnet18/resnet50, batch 128,
                               fp32 and bf16, adam and sgdm), with its report and history
    verdicts.json, verdicts.md one line per check: pass, fail, info (measured, not judged),
                               skip (cannot apply here) or error (the check itself broke)

With ``--cpu-dry-run`` (automatic without CUDA) the same checks run on the CPU at small
sizes, so their logic is tested in CI: the CUDA-only judgements (allocator exactness, 3%
timing agreement, a real out-of-memory) say ``info`` or ``skip``, and torch.compile uses
Dynamo's ``eager`` backend (Dynamo's graphs and recompiles are the same; Inductor's C++
build would take minutes). Exit status 0 when no check failed or broke, else 1.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
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
from bench.measure import host, memory, timing
from bench.measure.env import collect_env
from bench.measure.precision import cuda_backend_settings
from bench.measure.runner import RunContext, build, run_cases
from bench.storage import history
from bench.suite import Case
from bench.telemetry import gpu

ROOT = Path(__file__).resolve().parent.parent
#: Harness and Timer step times must agree within this on a GPU (the check's promise).
TIMER_TOLERANCE = 0.03
#: Slack for the optimizer state's allocation beyond its blocks: the loss kept per step and
#: GradScaler's found_inf, a few 512-byte blocks.
STATE_SLACK_BYTES = 8 * 512
ALLOCATOR_BLOCK = 512
#: The case after an out-of-memory must run as it did before it, within these.
AFTER_OOM_TIME = 0.10
AFTER_OOM_PEAK = 0.02


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
    deadline: float = math.inf  # time.monotonic() by which the nightly must have finished

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
        "--warmup=5",
        "--steps=10",
        "--repeats=3",
    ),
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
    return RunContext(run_id="acceptance", suite="acceptance", device=sizes.device, env=env)


# ---------------------------------------------------------------------------------------
# The checks. Each writes its files and returns (status, one line).


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
        f"launches, GPU busy {probe.get('device_busy_ms')} ms of the profiled step"
    )
    if sizes.dry_run:
        return "info", line + " (CPU: nothing profiled, not judged)"
    return ("pass" if abs(change) <= TIMER_TOLERANCE else "fail"), line


#: (optimizer, precision, host syncs a step must have): known from the code of GradScaler.
SYNC_CASES = (("adam", "fp32", 0), ("adam", "fp16", 1), ("torch-adam-fused", "fp16", 0))


def check_host_syncs(sizes: Sizes, out: Path, env: dict) -> tuple[str, str]:
    cases = [make_case(sizes, optimizer=o, precision=p, repeats=1) for o, p, _ in SYNC_CASES]
    records = []
    run_cases(cases, context(sizes, env), lambda case, record: records.append(record))
    keep = ("case_id", "status", "error", "host_syncs_per_step", "host_syncs_source", "host_time_ms", "step_time_ms")
    keep += ("kernel_launches_per_step", "device_busy_ms", "host_bound")
    write_json(out / "host_syncs.json", [{k: getattr(r, k) for k in keep} for r in records])
    found = [r.host_syncs_per_step for r in records]
    expected = [syncs for *_, syncs in SYNC_CASES]
    parts = [
        f"{o}/{p}: {n} (expected {e}; host {r.host_time_ms and round(r.host_time_ms, 2)} ms of "
        f"{r.step_time_ms and round(r.step_time_ms, 2)} ms, launches {r.kernel_launches_per_step}, "
        f"host-bound {r.host_bound})"
        for (o, p, e), n, r in zip(SYNC_CASES, found, records, strict=True)
    ]
    return ("pass" if found == expected else "fail"), f"{records[0].host_syncs_source}: " + "; ".join(parts)


def _rounded(nbytes: int) -> int:
    return max(1, math.ceil(nbytes / ALLOCATOR_BLOCK)) * ALLOCATOR_BLOCK


def memory_steps(sizes: Sizes, precision: str, env: dict, steps: int = 10) -> list[dict]:
    """The first ``steps`` training steps one by one, with the meter read around the update."""
    case = make_case(sizes, sizes.memory_model, precision=precision, batch_size=min(sizes.batch_size, 32))
    meter = memory.meter_for(sizes.device)
    rows = []
    with case_scope(sizes, case):
        _, optimizer, trainer = build(case, context(sizes, env), {})
        for step in range(1, steps + 1):
            trainer.forward()
            trainer.backward()
            scale = trainer.scaler.get_scale() if trainer.scaler.is_enabled() else None
            state_before = memory.optimizer_state_bytes(optimizer)
            before = meter.in_use()
            trainer.update()
            after = meter.in_use()
            new_state = (
                [t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
                if state_before == 0
                else []
            )
            rows.append(
                {
                    "precision": precision,
                    "step": step,
                    "in_use_before_update": before,
                    "in_use_after_update": after,
                    "allocated_delta": after - before,
                    "state_bytes": memory.optimizer_state_bytes(optimizer),
                    "state_blocks_created": sum(_rounded(t.numel() * t.element_size()) for t in new_state),
                    "loss_scale": scale,
                    "skipped": scale is not None and trainer.scaler.get_scale() < scale,
                }
            )
        del optimizer, trainer
        meter.release()
    return rows


def check_memory(sizes: Sizes, out: Path, env: dict) -> tuple[str, str]:
    rows = memory_steps(sizes, "fp32", env) + memory_steps(sizes, "fp16", env)
    with (out / "memory_steps.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    parts, ok = [], True
    for precision in ("fp32", "fp16"):
        mine = [r for r in rows if r["precision"] == precision]
        created = next((r for r in mine if r["state_blocks_created"]), None)
        skipped = sum(r["skipped"] for r in mine)
        if created is None:
            ok = False
            parts.append(f"{precision}: the optimizer never stepped in {len(mine)} steps ({skipped} skipped)")
            continue
        gap = created["allocated_delta"] - created["state_blocks_created"]
        ok &= 0 <= gap <= STATE_SLACK_BYTES
        parts.append(
            f"{precision}: state created at step {created['step']} ({skipped} skipped): allocated "
            f"{created['allocated_delta']:,} B for {created['state_blocks_created']:,} B of state blocks"
        )
    if sizes.dry_run:
        return "info", "process RSS, not an allocator (not judged): " + "; ".join(parts)
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
            # Timer runs on one CPU thread unless told; the harness runs on torch's setting.
            timer = torch.utils.benchmark.Timer(
                stmt="step()", globals={"step": trainer.step}, num_threads=torch.get_num_threads()
            )
            reference = timer.blocked_autorange(min_run_time=sizes.timer_seconds).median * 1e3
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


def check_oom(sizes: Sizes, out: Path, env: dict) -> tuple[str, str]:
    case = make_case(sizes, optimizer="sgdm")
    sweep = [case]
    if not sizes.dry_run:
        sweep.append(make_case(sizes, "resnet50", optimizer="sgdm", batch_size=OOM_BATCH, repeats=1))
    sweep.append(case)
    records = []
    with (out / "oom.jsonl").open("w") as file:

        def keep(case: Case, record: object) -> None:
            records.append(record)
            file.write(json.dumps(record.to_dict(), default=str) + "\n")
            file.flush()

        run_cases(sweep, context(sizes, env), keep)
    statuses = [r.status for r in records]
    first, last = records[0], records[-1]
    if first.status != "ok" or last.status != "ok":
        return "fail", f"statuses {statuses}: {last.error or first.error}"
    time_change = last.step_time_ms / first.step_time_ms - 1
    peak_change = last.peak_memory_bytes / first.peak_memory_bytes - 1
    line = f"statuses {statuses}; after the OOM: step time {time_change:+.1%}, peak memory {peak_change:+.2%}"
    if sizes.dry_run:
        return "skip", f"a real out-of-memory needs a GPU; the case ran twice: {line}"
    ok = statuses[1] == "oom" and abs(time_change) <= AFTER_OOM_TIME and abs(peak_change) <= AFTER_OOM_PEAK
    return ("pass" if ok else "fail"), line


def check_nightly(sizes: Sizes, out: Path, env: dict) -> tuple[str, str]:
    results = out / "nightly"
    command = [sys.executable, "-m", "bench", "run", *sizes.nightly, f"--results={results}", "--run-id=acceptance"]
    environ = {**os.environ, "PYTHONPATH": str(ROOT)}
    if sizes.dry_run:
        environ["OMP_NUM_THREADS"] = "1"
    timeout = max(60.0, sizes.deadline - time.monotonic())
    try:
        done = subprocess.run(
            command, cwd=ROOT, env=environ, capture_output=True, text=True, check=False, timeout=timeout
        )
    except subprocess.TimeoutExpired as expired:
        (out / "nightly.log").write_text(f"$ {' '.join(command)}\n{expired.stdout}\n{expired.stderr}")
        return "fail", f"the reduced nightly did not finish within the budget ({timeout:.0f} s left for it)"
    (out / "nightly.log").write_text(f"$ {' '.join(command)}\n{done.stdout}\n{done.stderr}")
    run_dir = results / "acceptance"
    records = (
        [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()] if run_dir.is_dir() else []
    )
    in_history = (
        not history.runs(results / history.DEFAULT_NAME).empty if (results / history.DEFAULT_NAME).exists() else False
    )
    report = (run_dir / "report.html").is_file()
    failed = [f"{r['case_id']}: {r['status']}" for r in records if r["status"] != "ok"]
    energy = [r["samples_per_joule"] for r in records if r.get("samples_per_joule")]
    syncing = sum(bool(r.get("host_syncs_per_step")) for r in records)
    bound = sum(bool(r.get("host_bound")) for r in records)
    line = (
        f"exit {done.returncode}, {len(records)} cases, {len(failed)} failed, report {'yes' if report else 'no'}, "
        f"history {'yes' if in_history else 'no'}; {syncing} host-syncing, {bound} host-bound; "
        f"samples/J {min(energy):.1f}–{max(energy):.1f}"
        if energy
        else f"exit {done.returncode}, {len(records)} cases, {len(failed)} failed, report {'yes' if report else 'no'}, "
        f"history {'yes' if in_history else 'no'}; {syncing} host-syncing, {bound} host-bound; no energy figures"
    )
    ok = done.returncode == 0 and records and not failed and report and in_history
    ok = ok and (sizes.dry_run or len(energy) == len(records))
    return ("pass" if ok else "fail"), line + (f" ({'; '.join(failed)})" if failed else "")


def check_optim(sizes: Sizes, out: Path, env: dict) -> tuple[str, str]:
    """``convbench optim``'s cases for fused, foreach, compiled and loop Adam on the check's
    model (resnet50; the dry run's small one) in fp32: wall, host and device time of the step
    and its bandwidth, every record in optim.jsonl. On a GPU the compiled textbook Adam's
    device time must be within 1.2 x fused Adam's."""
    import pandas as pd

    from bench.measure import optimizer_step
    from bench.measure.bandwidth import measure_bandwidth
    from bench.measure.runner import device_name
    from bench.reporting.roofline import limit_notes

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
    ("environment", check_environment),
    ("profiler", check_profiler),  # first to profile in this process
    ("host_syncs", check_host_syncs),
    ("memory_steps", check_memory),
    ("timer", check_timer),
    ("compile", check_compile),
    ("oom", check_oom),
    ("optim", check_optim),
    ("nightly", check_nightly),
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
        f"torch {env['torch']}, CUDA {env['cuda']}, commit {env['git_commit']}",
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
        "--budget", type=float, default=480, help="seconds the whole check may take; the nightly is cut short at it"
    )
    args = parser.parse_args(argv)
    only = args.checks.split(",") if args.checks else None
    unknown = sorted(set(only or []) - {n for n, _ in CHECKS})
    if unknown:
        parser.error(f"unknown check(s) {', '.join(unknown)}; valid: {', '.join(n for n, _ in CHECKS)}")
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

"""How long ``convbench dashboard`` takes on years of nights: a synthetic history, timed.

    python -m benchmarks.dashboard_scale [--machines 2] [--nights 500] [--repeats 3]
                                         [--baseline-runs 5] [--work results/dashboard-scale]

Builds (once; it is kept in ``--work`` and reused while its size matches) a history of
``--machines`` × ``--nights`` runs of the shipped ``nightly`` suite (224 cases of 5 × 20 timed
steps): every Record complete with its 100 step-time samples, as ``convbench run`` writes
them, so the database has the size and shape of the real thing (about 1.2 GB for 1,000
runs). Each machine has its own GPU and speed; every night's samples are log-normal
around the case's median with 3% spread; some nights slow a model down by 20% for a week;
the large fp32 cases run out of memory on the smaller GPU; a run now and then stops early.

Then it generates the whole site into ``--work``/site ``--repeats`` times, each in a fresh
process (no warm caches of ours; the operating system's file cache is warm, as it is for a
nightly job that has just written the history), and prints the median and range of the wall
times, the median CPU time the command and its processes used (the work, which other
processes on a shared machine change less than the wall time), the part of the wall time that
is convbench's start-up (``convbench dashboard --help``: the command line loads torch to build
its parser, as every command does), the site's size, the largest file a page loads, and the
machine with its load average. Only the generation is timed, not the history's build.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from bench.kinds.step.suite import Case, load_suite
from bench.record import Record
from bench.storage import history
from bench.storage.store import Run

#: (machine name, GPU, memory GiB, speed relative to the first) of the synthetic fleet.
FLEET = [
    ("rack1-h100", "NVIDIA H100 80GB HBM3", 80, 1.0),
    ("rack2-a100", "NVIDIA A100-SXM4-40GB", 40, 0.55),
    ("rack3-l40s", "NVIDIA L40S", 48, 0.45),
    ("rack4-h200", "NVIDIA H200", 141, 1.15),
]
BYTES = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2}
PARAMS = {"resnet20": 272_474, "resnet56": 855_770, "resnet110": 1_730_714, "resnet18": 11_689_512}
PARAMS["resnet50"] = 25_557_032


def _base_ms(case: Case) -> float:
    """A plausible median step time: work in proportion to batch × pixels × depth."""
    depth = {"resnet20": 1.0, "resnet56": 2.8, "resnet110": 5.5, "resnet18": 1.8, "resnet50": 4.0}[case.model]
    pixels = case.input_shape[1] * case.input_shape[2] / 1024
    speed = {"fp32": 1.0, "tf32": 2.0, "bf16": 3.0, "fp16": 3.2}[case.precision]
    return 0.004 * case.batch_size * pixels * depth / speed + 2.0


def _peak_bytes(case: Case) -> int:
    params = PARAMS[case.model]
    state = 2 if "adam" in case.optimizer else 1
    deep = 3.0 if case.model == "resnet50" else 1.0  # bottleneck blocks keep more activations
    activations = 40_000 * case.batch_size * case.input_shape[1] * case.input_shape[2] / 1024 * deep
    return int(4 * params * (2 + state) + activations * BYTES[case.precision] * 8)


def _records(run_id: str, cases: list[Case], gpu: tuple, night: int, rng: np.random.Generator) -> list[dict]:
    _, name, memory_gib, speed = gpu
    slow_model = ["resnet50", "resnet20", "resnet18"][night // 60 % 3] if night % 60 in range(30, 37) else None
    found = []
    for case in cases:
        peak = _peak_bytes(case)
        fields = dict(
            run_id=run_id, case_id=case.case_id, timestamp="", suite="nightly", **case.config(),
            steps=case.steps, warmup=case.warmup, repeats=case.repeats, detailed=False,
            hyperparameters={"lr": 0.001}, device="cuda:0", device_name=name, hostname=gpu[0],
            torch_version="2.11.0", git_commit=f"{night:040x}", params=PARAMS[case.model],
        )  # fmt: skip
        if peak > memory_gib * 2**30:
            found.append(Record.from_flat({**fields, "status": "oom", "error": "CUDA out of memory"}).to_dict())
            continue
        median = _base_ms(case) / speed * (1.2 if case.model == slow_model else 1.0)
        samples = median * np.exp(rng.normal(0.0, 0.03, case.steps * case.repeats))
        found.append(Record.from_flat({**fields, **_timed(case, samples), "peak_memory_bytes": peak}).to_dict())
    return found


def _timed(case: Case, samples: np.ndarray) -> dict:
    """The step-time and memory fields of an ok record with these samples (ms)."""
    samples = np.round(samples, 4)  # as stored: figures and samples must agree
    q25, q50, q75 = np.percentile(samples, [25, 50, 75])
    params = PARAMS[case.model]
    return {
        "step_time_ms": float(q50),
        "step_time_iqr_ms": float(q75 - q25),
        "step_time_min_ms": float(samples.min()),
        "step_time_samples_ms": samples.tolist(),
        "throughput": 1000 * case.batch_size / float(q50),
        "param_bytes": 4 * params,
        "grad_bytes": 4 * params,
        "optimizer_state_bytes": 4 * params * (2 if "adam" in case.optimizer else 1),
        "peak_memory_source": "cuda_max_allocated",
    }


def build_history(path: Path, machines: int, nights: int, seed: int = 0) -> None:
    """A history of ``machines`` × ``nights`` runs of the nightly suite at ``path``."""
    cases = load_suite("nightly").cases()
    rng = np.random.default_rng(seed)
    start = datetime(2024, 1, 1, 2, 0, tzinfo=UTC)
    for night in range(nights):
        runs = []
        for gpu in FLEET[:machines]:
            run_id = f"{(start + timedelta(days=night)):%Y%m%dT%H%M%SZ}-{gpu[0]}"
            records = _records(run_id, cases, gpu, night, rng)
            stopped = night % 97 == 50  # now and then a run stops early
            records = records[: len(records) // 3] if stopped else records
            manifest = {
                "run_id": run_id, "suite": "nightly", "machine": gpu[0],
                "status": "incomplete" if stopped else "complete",
                "started": (start + timedelta(days=night)).isoformat(),
                "finished": (start + timedelta(days=night, hours=2)).isoformat(),
                "cases_total": len(cases), "sections": {}, "stopped_by": "SIGTERM" if stopped else None,
                "hostname": gpu[0], "pid": None, "process_started": None,
            }  # fmt: skip
            env = {"hostname": gpu[0], "git_commit": f"{night:040x}", "gpus": [{"name": gpu[1], "index": 0}]}
            runs.append(Run(Path(run_id), manifest, env, "", records))
        history.add_runs(runs, path)
        if night % 50 == 0:
            print(f"  night {night + 1} of {nights}", file=sys.stderr, flush=True)


def _seconds(*arguments: str) -> tuple[float, float]:
    """Wall seconds of ``convbench ARGUMENTS`` in a fresh process, and the CPU seconds (user
    and system) it and the processes it started used: the work, which a busy machine's other
    processes do not change as much as they change the wall time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bench", *arguments], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def _cpu() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.machine())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machines", type=int, default=2, choices=range(1, len(FLEET) + 1))
    parser.add_argument("--nights", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-runs", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("results") / "dashboard-scale")
    args = parser.parse_args(argv)
    path = args.work / f"history-{args.machines}x{args.nights}.sqlite"
    if not path.exists():
        print(f"building {path} ({args.machines} machines x {args.nights} nights)", file=sys.stderr)
        started = time.perf_counter()
        build_history(path.with_suffix(".partial"), args.machines, args.nights)
        os.replace(path.with_suffix(".partial"), path)
        print(f"  built in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    site = args.work / "site"
    arguments = ["dashboard", "--history", str(path), "--output", str(site), "--baseline-runs", str(args.baseline_runs)]
    times, cpu = zip(*(_seconds(*arguments) for _ in range(args.repeats)), strict=True)
    start_up = [_seconds("dashboard", "--help")[0] for _ in range(args.repeats)]
    data = [p for p in site.rglob("*") if p.is_file()]
    largest = max((p for p in data if "data" in p.parts), key=lambda p: p.stat().st_size)
    cases = [p for p in data if len(p.relative_to(site).parts) == 3]  # data/<page>/<case>.js
    summary = {
        "runs": args.machines * args.nights,
        "cases per run": 224,
        "history MiB": round(path.stat().st_size / 2**20),
        "baseline runs": args.baseline_runs,
        "seconds (median)": round(statistics.median(times), 1),
        "seconds (all)": [round(t, 1) for t in times],
        "of which start-up (median)": round(statistics.median(start_up), 1),
        "CPU seconds (median)": round(statistics.median(cpu), 1),
        "site files": len(data),
        "site MiB": round(sum(p.stat().st_size for p in data) / 2**20, 1),
        "largest data file": f"{largest.relative_to(site)} ({largest.stat().st_size / 2**10:.0f} KiB)",
        "a case's points (median KiB)": round(statistics.median(p.stat().st_size for p in cases) / 2**10),
        "machine": f"{_cpu()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "load average (1, 5, 15 min) after": os.getloadavg(),
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

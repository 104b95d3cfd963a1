"""``convbench ingest`` of one very large run folder: wall time and peak memory.

    python -m benchmarks.ingest_scale [--records 1000000] [--repeats 3] [--checkout DIR] [--keep DIR]

Writes one run folder whose ``records.jsonl`` holds ``--records`` records (distinct cases,
each with the fields every record carries and three step times, about 500 bytes a line),
then runs ``python -m bench ingest`` on it ``--repeats`` times, each in a fresh process
into a fresh history, and prints each run's wall time and the child's peak resident memory
(``getrusage(RUSAGE_CHILDREN).ru_maxrss``), and their medians. ``--checkout DIR`` runs the
``bench`` of another checkout (e.g. an older commit, for a before-and-after figure) on the
same folder; the folder is written with the standard library alone, so any version reads
it. ``--keep DIR`` writes the folder there and leaves it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_folder(run_dir: Path, count: int) -> None:
    """A complete run folder of ``count`` records of the suite ``scale``, one case per batch size."""
    run_dir.mkdir(parents=True)
    manifest = {
        "run_id": run_dir.name,
        "suite": "scale",
        "machine": "scale-box",
        "status": "complete",
        "started": "2026-12-01T00:00:00+00:00",
        "finished": "2026-12-01T01:00:00+00:00",
        "cases_total": count,
        "cases_done": count,
        "failures": 0,
        "sections": {},
        "stopped_by": None,
    }
    (run_dir / "run.json").write_text(json.dumps(manifest))
    (run_dir / "env.json").write_text(json.dumps({"hostname": "scale-box", "cpu": {"model": "CPU"}, "gpus": []}))
    (run_dir / "suite.toml").write_text("[suite]\nname = 'scale'\n")
    with open(run_dir / "records.jsonl", "w", encoding="utf-8") as records:
        for batch in range(1, count + 1):
            case = f"cnn/adam/b{batch}/fp32/cl0/eager/synthetic/1x28x28"
            record = {
                "run_id": run_dir.name,
                "case_id": case,
                "timestamp": "2026-12-01T00:00:00+00:00",
                "suite": "scale",
                "model": "cnn",
                "optimizer": "adam",
                "batch_size": batch,
                "precision": "fp32",
                "channels_last": False,
                "compile": False,
                "dataset": "synthetic",
                "input_shape": [1, 28, 28],
                "steps": 3,
                "warmup": 1,
                "repeats": 1,
                "device": "cpu",
                "device_name": "CPU",
                "hostname": "scale-box",
                "torch_version": "2.14.1",
                "git_commit": None,
                "status": "ok",
                "step_time_ms": 40.0,
                "step_time_samples_ms": [39.5, 40.0, 40.5],
                "throughput": batch / 0.04,
            }
            records.write(json.dumps(record) + "\n")


def ingest_once(run_dir: Path, history: Path, checkout: Path | None) -> tuple[float, float, int]:
    """(wall seconds, peak resident MiB of the child, exit status) of one ``ingest``."""
    environment = dict(os.environ)
    cwd = None
    if checkout is not None:
        environment["PYTHONPATH"] = str(checkout)
        cwd = checkout
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bench", "ingest", str(run_dir), "--history", str(history)],
        env=environment,
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB; the largest child so far
    if done.returncode != 0:
        print(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "", file=sys.stderr)
    return seconds, max(peak, before) / 1024, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkout", type=Path, help="run the bench package of this checkout")
    parser.add_argument("--keep", type=Path, help="write the run folder here and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = args.keep or Path(scratch)
        run_dir = root / "scale-run"
        if not (run_dir / "records.jsonl").exists():
            started = time.perf_counter()
            write_folder(run_dir, args.records)
            size = (run_dir / "records.jsonl").stat().st_size / 2**20
            print(f"wrote {args.records:,} records ({size:,.0f} MiB) in {time.perf_counter() - started:.1f} s")
        times, peaks = [], []
        for repeat in range(args.repeats):
            history = Path(scratch) / f"history-{repeat}.sqlite"
            seconds, peak, code = ingest_once(run_dir, history, args.checkout)
            print(f"ingest {repeat + 1}: {seconds:.1f} s, peak resident {peak:,.0f} MiB, exit status {code}")
            times.append(seconds)
            peaks.append(peak)
        print(f"median: {statistics.median(times):.1f} s, peak resident {max(peaks):,.0f} MiB")


if __name__ == "__main__":
    main()

"""Other processes' load: measured apart from the benchmark's own CPU time, noted by compare."""

import subprocess
import sys
import time

import pandas as pd
import psutil

from bench.analyse.compare import compare_runs
from bench.measure.load import OtherLoad, busy_warning, case_busy_warning
from tests.bench.runs import record, samples


def test_a_neighbour_burning_cpu_is_counted_and_the_benchmark_itself_is_not():
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # past its start-up
        neighbour = psutil.Process(burner.pid)
        before = sum(neighbour.cpu_times()[:2])
        other = OtherLoad().start()
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # this process burns too: that must not count
            pass
        other.stop()
        burnt = sum(neighbour.cpu_times()[:2]) - before
    finally:
        burner.kill()
        burner.wait()
    wall_cpus = 1.0 * psutil.cpu_count(logical=True)
    # At least the neighbour's own CPU seconds (other jobs on the machine can only add).
    assert other.other_cpu_fraction >= 0.8 * burnt / wall_cpus > 0
    assert other.load_average_start is not None


def test_compare_notes_a_side_measured_under_load():
    base = [record("b", step_samples=samples(40.0, seed=1), other_cpu_fraction=0.02)]
    cand = [record("c", step_samples=samples(40.0, seed=2), other_cpu_fraction=0.45)]
    verdicts = compare_runs(pd.DataFrame([r.to_dict() for r in base]), pd.DataFrame([r.to_dict() for r in cand]))
    assert verdicts.loc[0, "note"].endswith("candidate measured under load (other processes used 45% of the CPUs)")
    assert "baseline measured" not in verdicts.loc[0, "note"]


def test_a_busy_machine_is_warned_about_before_the_run_with_what_to_do():
    assert busy_warning(0.6, cpus=2) is None
    assert busy_warning(14.1, cpus=2) == (
        "the machine is busy (load average 14.1 on 2 CPUs): step times will be slower and noisier; "
        "run on a quieter machine, or give --threads 1 (threads in [suite]) to leave the others' CPUs free"
    )
    # 8 CPUs, a load average of 5 from other processes: 3 are left for the benchmark.
    assert busy_warning(5.0, cpus=8).endswith("give --threads 3 (threads in [suite]) to leave the others' CPUs free")


def test_a_case_measured_under_load_says_how_many_threads_would_leave_the_others_room():
    assert case_busy_warning(0.05, cpus=16) is None
    # other processes kept 25% of 16 CPUs (4 CPUs) busy: 12 threads leave them theirs
    assert case_busy_warning(0.25, cpus=16) == (
        "other processes used 25% of the CPUs; its step times are not the machine's: "
        "run on a quieter machine, or give --threads 12 (threads in [suite]) to leave the others' CPUs free"
    )


def test_a_run_that_already_leaves_the_others_their_cpus_is_told_only_to_find_a_quieter_machine():
    # 2 CPUs, other processes on 1.7 of them, the case on 1 thread: no --threads would help
    assert case_busy_warning(0.85, cpus=2, threads=1) == (
        "other processes used 85% of the CPUs; its step times are not the machine's: "
        "run on a quieter machine (this run's threads, 1, already leave the others' CPUs free)"
    )
    assert busy_warning(5.0, cpus=8, threads=8).endswith(
        "give --threads 3 (threads in [suite]) to leave the others' CPUs free"
    )

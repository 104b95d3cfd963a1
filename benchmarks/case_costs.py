"""Where a case's wall time goes: building, warm-up, timed steps, probes, the memory pass.

    PYTHONPATH=. python -m benchmarks.case_costs [--suite smoke] [--models M,...] [--optimizers O,...]
                                                 [--batch-sizes B,...] [--precision P,...]
                                                 [--steps S] [--warmup W] [--repeats R]
                                                 [--rounds 3] [--device cpu] [--no-reuse]
                                                 [--ahead | --no-ahead]

Runs every case of the suite ``--rounds`` times through ``bench.kinds.step.runner.run_case``,
the code ``convbench run`` runs, with a stopwatch around each piece of it (the functions the
runner calls, patched for the run and restored after). A piece's time is its own: a piece
called inside another (the memory pass's model build) is its own row, named by its path
("memory pass / build"), and does not count in its caller's row. ``timed steps`` is what the
step clock measured (the record's samples); ``warm-up`` the untimed steps; ``other`` the rest
of the case's ``case_wall_s`` (the timing loop's own bookkeeping, reading the allocator,
writing fields). Prints, per piece, the median over cases of its seconds per case, its sum
over the suite (mean of rounds) and its share of the cases' wall time; then the time in
steps against wall time, as ``convbench run`` prints it. ``--no-reuse`` runs the cases
without sharing set-up between them (``RunContext.reuse``): every case builds its own
model and predicts its own memory, as before the sharing existed. ``--ahead`` predicts each
case's memory in a worker process while the case before it runs
(``bench.kinds.step.prediction_worker``; ``convbench run`` does so on CUDA only): the case then
waits only for what the worker has not finished, the row "prediction (waiting for the worker)".
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator

import torch

from bench.kinds.step import autotune, memory_pass, prediction_worker, runner, setup_cache
from bench.kinds.step.suite import load_suite
from bench.measure import flops, host
from bench.measure.env import collect_env
from bench.measure.setup import resolve_device

#: (module, attribute, piece name): the functions whose time is a piece of a case.
PIECES = (
    (flops, "flops_per_sample", "FLOP count"),
    (runner, "build", "build"),
    (autotune, "autotune_pass", "cuDNN autotuning pass"),
    (runner, "warm_up", "warm-up"),
    (host, "probe_step", "probes (host syncs, profiled step)"),
    (memory_pass, "tracked_step", "tracked step"),
    (memory_pass, "predict", "prediction"),
    (memory_pass, "record_fields", "memory pass"),
    (prediction_worker, "collect", "prediction (waiting for the worker)"),
    (runner, "_release", "release memory"),
)


class Stopwatch:
    """Exclusive seconds per piece path: a piece's time less that of the pieces it calls."""

    def __init__(self) -> None:
        self.stack: list[str] = []
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, name: str, function: Callable) -> Callable:
        def timed(*args: object, **kwargs: object) -> object:
            path = " / ".join([*self.stack, name])
            self.stack.append(name)
            start, inner_before = time.perf_counter(), self._inner_total(path)
            try:
                return function(*args, **kwargs)
            finally:
                self.stack.pop()
                elapsed = time.perf_counter() - start
                self.seconds[path] += elapsed - (self._inner_total(path) - inner_before)

        return timed

    def _inner_total(self, path: str) -> float:
        return sum(seconds for name, seconds in self.seconds.items() if name.startswith(path + " / "))

    def take(self) -> dict[str, float]:
        taken, self.seconds = dict(self.seconds), defaultdict(float)
        return taken


@contextlib.contextmanager
def stopwatch_on_pieces() -> Iterator[Stopwatch]:
    """Patch the functions of ``PIECES`` with a stopwatch for as long as the block runs."""
    watch = Stopwatch()
    originals = [(module, name, getattr(module, name)) for module, name, _ in PIECES]
    for (module, name, piece), (_, _, original) in zip(PIECES, originals, strict=True):
        setattr(module, name, watch.wrap(piece, original))
    try:
        yield watch
    finally:
        for module, name, original in originals:
            setattr(module, name, original)


def case_pieces(watch: Stopwatch, record: object) -> dict[str, float]:
    """One case's seconds per piece, timed steps and ``other`` split out of the totals."""
    pieces = watch.take()
    timed = sum(record.step_time_samples_ms or []) / 1e3
    pieces["timed steps"] = timed
    pieces["other"] = (record.case_wall_s or 0.0) - sum(pieces.values())
    return pieces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", default="smoke")
    parser.add_argument("--models", type=lambda t: t.split(","))
    parser.add_argument("--optimizers", type=lambda t: t.split(","))
    parser.add_argument("--batch-sizes", type=lambda t: [int(b) for b in t.split(",")])
    parser.add_argument("--precision", type=lambda t: t.split(","))
    parser.add_argument("--steps", type=int)
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-reuse", action="store_true", help="every case builds and predicts on its own")
    parser.add_argument(
        "--ahead",
        action=argparse.BooleanOptionalAction,
        help="predict memory ahead in a worker process (default: on CUDA only, as convbench run does)",
    )
    args = parser.parse_args()

    suite = load_suite(args.suite)
    keys = ("models", "optimizers", "batch_sizes", "precision", "steps", "warmup", "repeats")
    suite = suite.override(device=args.device, **{k: getattr(args, k) for k in keys if getattr(args, k) is not None})
    device = resolve_device(suite.device)
    cases = suite.cases()
    env = collect_env()
    started_load = os.getloadavg()[0]
    ahead = prediction_worker.wanted(device) if args.ahead is None else args.ahead
    per_case: list[dict[str, float]] = []
    walls, steps, loops = [], [], []
    with stopwatch_on_pieces() as watch:
        for _ in range(args.rounds):
            setup_cache.clear()
            autotune.clear()
            flops._case_flops.cache_clear()  # each round pays for what a fresh run would
            context = runner.RunContext("case-costs", suite.name, device, env, reuse=not args.no_reuse)
            started = time.perf_counter()
            with prediction_worker.predicting_ahead(cases, device, share=not args.no_reuse, ahead=ahead):
                for case in cases:
                    record = runner.run_case(case, context)
                    per_case.append(case_pieces(watch, record))
                    walls.append(record.case_wall_s)
                    steps.append(record.steps_s or 0.0)
            loops.append(time.perf_counter() - started)
    print_table(per_case, sum(walls) / args.rounds, args.rounds)
    print(
        f"\ntime in steps: {sum(steps) / args.rounds:.1f} s of {statistics.median(loops):.1f} s "
        f"({sum(steps) / sum(loops):.0%}); {len(cases)} cases x {args.rounds} rounds, "
        f"reuse {'off' if args.no_reuse else 'on'}, "
        f"predictions ahead {'on' if ahead else 'off'}"
    )
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, Python {platform.python_version()}, device {device}; "
        f"load average {started_load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    )


def print_table(per_case: list[dict[str, float]], wall_per_round: float, rounds: int) -> None:
    names = sorted({name for pieces in per_case for name in pieces}, key=lambda n: -sum(p.get(n, 0) for p in per_case))
    print("| piece | median per case (s) | per suite (s) | share of case wall |\n| --- | ---: | ---: | ---: |")
    for name in names:
        values = [pieces.get(name, 0.0) for pieces in per_case]
        total = sum(values) / rounds
        print(f"| {name} | {statistics.median(values):.3f} | {total:.2f} | {total / wall_per_round:.1%} |")
    print(f"| all (case_wall_s) | | {wall_per_round:.2f} | 100% |")


if __name__ == "__main__":
    main()

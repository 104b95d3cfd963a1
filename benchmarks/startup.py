"""How long the command line takes to answer: ``convbench --help``, ``history`` on an empty
history and ``optimizers``, each started as a fresh process ``--rounds`` times; prints the
median and the range of each, with the machine.

    PYTHONPATH=. python -m benchmarks.startup [--rounds 7]

Reading commands do not import torch (bench.commands), so they answer in well under a second;
a command that measures pays torch's import (a few seconds) when it starts its work.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = {
    "--help": ["--help"],
    "history (empty)": ["history", "--history", "{history}"],
    "optimizers": ["optimizers"],
}


def seconds(argv: list[str]) -> float:
    """Wall seconds of ``python -m bench ARGV`` in a fresh process, which must succeed."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bench", *argv], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="fresh processes per command (default 7)")
    args = parser.parse_args()
    from bench.storage import history

    with tempfile.TemporaryDirectory() as folder:
        empty = Path(folder) / "history.sqlite"
        history.check_destinations(folder, empty)  # an empty history
        print(f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}")
        for name, argv in COMMANDS.items():
            argv = [part.format(history=empty) for part in argv]
            times = [seconds(argv) for _ in range(args.rounds)]
            print(f"{name:>16}: median {statistics.median(times):.2f} s ({min(times):.2f}-{max(times):.2f})")


if __name__ == "__main__":
    main()

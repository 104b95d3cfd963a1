"""convbench's harness: suites, runner, timing, memory, environment, receptive fields,
storage and history, comparison and reports, behind the ``convbench`` command.

From Python: ``bench.run_suite(...)`` runs a suite and returns its records as a pandas
DataFrame; ``bench.compare_results(baseline, candidate)`` gives the verdicts (bench.api).
"""

from bench.api import compare_results, run_suite

__all__ = ["compare_results", "run_suite"]

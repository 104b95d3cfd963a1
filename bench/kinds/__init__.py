"""The kinds of run, and what each gives the rest of convbench.

- ``step`` (bench.kinds.step): one training step, timed, with its memory; ``convbench run``.
- ``optimizer_step`` (bench.kinds.optimizer_step): ``optimizer.step()`` alone against the
  device's memory bandwidth; ``convbench optim``.
- ``training`` (bench.kinds.training): training to a target accuracy; ``convbench train``.
- ``parallel`` (bench.kinds.parallel): the step kind on several processes (a wrapper of
  ``step``); ``convbench run --nproc-per-node N``.

The core (records, storage, statistics, the report shell, measuring primitives) never
imports a kind; the application layer (bench.api) reaches the kinds through the functions
here, which pick the kind of a run folder or of its records. A new kind adds its package
and its branch in ``_kind_of_run``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from bench.storage.store import Run

from bench.record import OPTIMIZER_STEP, TRAINING_STEP, TRAINING_TO_ACCURACY  # noqa: F401  (the kinds of record)


def _kind_of_run(run: Run) -> str:
    """The kind of a run folder's report: training to accuracy where its suite has a
    ``[train]`` table or a record is of that kind (``bench.record``'s ``kind``); otherwise
    steps (training steps, optimizer steps, data parallel, or several, which the step report
    shows side by side)."""
    if "[train]" in run.suite_toml.splitlines() or any(r.get("kind") == TRAINING_TO_ACCURACY for r in run.records):
        return TRAINING_TO_ACCURACY
    return TRAINING_STEP


def write_report(run_dir: Path | str) -> list[Path]:
    """Write a run folder's figures, tables, report.html and report.md, as its kind draws
    them; returns the files written. Raises RunFolderError for a folder that is not a run's."""
    from bench.storage.store import load_run

    run = load_run(run_dir)
    if _kind_of_run(run) == TRAINING_TO_ACCURACY:
        from bench.kinds.training.report import write_training_report

        return write_training_report(run)
    from bench.reporting.report import write_report as write_step_report

    return write_step_report(run_dir, report_parts())


#: The order of the figures in the report of a run of steps, by name: the report's own
#: (bench.reporting.report.FIGURES) and those the kinds add.
FIGURE_ORDER = (
    "throughput",
    "memory",
    "predicted_peak",
    "max_batch",
    "state_bytes",
    "roofline",
    "batch_scaling",
    "constant_gradient",
    "receptive_field",
    "receptive_field_maps",
    "scaling_efficiency",
    "state_per_rank",
    "adam_vs_sgdm_per_rank",
)


def report_parts() -> object:
    """What the step, optimizer-step and data-parallel kinds add to the report of a run of
    steps (bench.reporting.report.KindParts): their figures in FIGURE_ORDER, the optimizer
    step's roofline columns and notes, and the case ids a step suite expands to."""
    from bench.kinds.optimizer_step import report as optimizer_step_report
    from bench.kinds.optimizer_step import roofline
    from bench.kinds.parallel import figures as parallel_figures
    from bench.kinds.step import memory_figures
    from bench.kinds.step.suite import expected_case_ids
    from bench.reporting import report

    specs = [*report.FIGURES, *memory_figures.FIGURES, *optimizer_step_report.FIGURES, *parallel_figures.FIGURES]
    by_name = {spec.name: spec for spec in specs}
    return report.KindParts(
        figures=[by_name[name] for name in FIGURE_ORDER],
        prepare=roofline.optimizer_step_frame,
        notes=roofline.limit_notes,
        expected_cases=expected_case_ids,
    )


def write_tables(run_dir: Path | str) -> list[Path]:
    """Write a run of steps' summary.csv, summary.md and summary.tex; returns their paths."""
    from bench.reporting import report

    return report.write_tables(run_dir, report_parts())


def summary(records: pd.DataFrame) -> pd.DataFrame:
    """The summary table printed at the end of a step or optimizer-step run (the report's)."""
    from bench.kinds.optimizer_step import roofline
    from bench.reporting import report

    return report.readable(report.summary_frame(records, roofline.optimizer_step_frame))


def notes(records: pd.DataFrame) -> list[str]:
    """Lines printed under the summary: which limit each optimizer-step percentage is of."""
    from bench.kinds.optimizer_step import roofline

    return roofline.limit_notes(records)


def failures(records: pd.DataFrame) -> list[str]:
    """``case_id: status: message`` for every case that did not end ``ok``."""
    from bench.reporting import report

    return report.failures(records)


# --- comparison: each kind judges its own runs (training to accuracy on its seeds) ---------


def compare_runs(baseline: pd.DataFrame, candidate: pd.DataFrame, **options: object) -> pd.DataFrame:
    """``bench.analyse.compare.compare_runs`` with the runs' kind's own judge: training runs
    are judged on final accuracy and time to target over their seeds
    (``bench.kinds.training.compare``); step runs on step time and memory. ``options``:
    threshold, memory_threshold, alpha, earlier. Raises IncomparableError, DifferentRunsError."""
    from bench.analyse import compare
    from bench.kinds.training import compare as training

    judge = training.compare_training if training.is_training(baseline) else None
    return compare.compare_runs(baseline, candidate, judge=judge, **options)


def readable_verdicts(verdicts: pd.DataFrame) -> pd.DataFrame:
    """The verdicts rounded and labelled for a table, as their kind shows them."""
    from bench.analyse import compare
    from bench.kinds.training import compare as training

    return training.readable(verdicts) if "accuracy" in verdicts else compare.readable(verdicts)


def verdict_summary(verdicts: pd.DataFrame) -> str:
    """One line: how many cases got each verdict, as their kind counts them."""
    from bench.analyse import compare
    from bench.kinds.training import compare as training

    return training.summary(verdicts) if "accuracy" in verdicts else compare.summary(verdicts)


def side_by_side(frames: list[pd.DataFrame], reference: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """``bench.analyse.compare.side_by_side`` with the runs' kind's own table (training runs:
    time to target and accuracy per device)."""
    from bench.analyse import compare
    from bench.kinds.training import compare as training

    own = training.side_by_side if frames and training.is_training(frames[0]) else None
    return compare.side_by_side(frames, reference=reference, side_by_side_kind=own)


def side_by_side_wide(table: pd.DataFrame) -> pd.DataFrame:
    """``side_by_side``'s table with one row per case and the devices next to each other."""
    from bench.analyse import compare
    from bench.kinds.training import compare as training

    return training.side_by_side_wide(table) if "time_to_target_s" in table else compare.side_by_side_wide(table)

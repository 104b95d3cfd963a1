"""``convbench compare``: regression verdicts of one run against another."""

from __future__ import annotations

import argparse

from bench.commands import arguments

NAME = "compare"
HELP = "regression verdicts of CANDIDATE against BASELINE (exit status 1 on a regression)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("baseline", metavar="BASELINE", help=arguments.RUN_HELP)
    parser.add_argument("candidate", metavar="CANDIDATE", help=arguments.RUN_HELP)
    arguments.add_history(parser)
    arguments.add_threshold(parser)
    arguments.add_baseline_runs(parser)
    arguments.add_memory_threshold(parser)
    arguments.add_output(parser)


def run(args: argparse.Namespace) -> int:
    """Verdicts per case, candidate against baseline; exit status 1 on any regression."""
    from bench import kinds
    from bench.api.reading import compare

    result = compare(
        args.baseline,
        args.candidate,
        history=args.history,
        threshold=args.threshold / 100,
        memory_threshold=args.memory_threshold / 100,
        baseline_runs=args.baseline_runs,
        include_incomplete=args.include_incomplete,
        baseline_tag=args.baseline_tag,
    )
    earlier = result.earlier
    plural = "s" if len(earlier) > 1 else ""
    runs = f" and {len(earlier)} run{plural} before it ({', '.join(run.run_id for run in earlier)})" if earlier else ""
    summary = kinds.verdict_summary(result.verdicts)
    arguments.print_output(
        result.verdicts if args.format == "json" else kinds.readable_verdicts(result.verdicts),
        args,
        before=[f"baseline {result.baseline.describe()}{runs}, candidate {result.candidate.describe()}"]
        + [f"note: {note}" for note in result.notes],
        after=[summary],
        fields={
            "baseline": result.baseline.run_id,
            "earlier": [run.run_id for run in earlier],
            "skipped": [{"run_id": run_id, "reason": reason} for run_id, reason in result.baseline.skipped],
            "candidate": result.candidate.run_id,
            "notes": result.notes,
            "summary": summary,
            "regression": result.regression,
        },
    )
    return 1 if result.regression else 0

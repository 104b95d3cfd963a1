"""``convbench optim``: the optimizer step alone, against the device's memory bandwidth."""

from __future__ import annotations

import argparse

from bench.commands import arguments

NAME = "optim"
HELP = "the optimizer step alone against the device's measured memory bandwidth"
DESCRIPTION = (
    "Time optimizer.step() for each optimizer on each model's real parameter shapes (fixed gradients, state already "
    "created), measure the device's copy, triad and in-place update bandwidth in the same run, and report step time, "
    "bytes moved per parameter, achieved GB/s and the percentage of the measured in-place bandwidth. Writes "
    "results/<run-id>/ like `convbench run`, with the same exit statuses."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models",
        type=arguments.items,
        default=["resnet18"],
        metavar="A,B",
        help="models whose parameters (default resnet18)",
    )
    parser.add_argument(
        "--optimizers", type=arguments.names, default="all", metavar="A,B", help="optimizers (default all)"
    )
    parser.add_argument(
        "--precision",
        type=arguments.items,
        default=["fp32"],
        metavar="P,Q",
        help="dtype of parameters, gradients and state: fp32, bf16, fp16 (default fp32)",
    )
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--steps", type=arguments.positive, default=20, metavar="N", help="timed steps per repeat (20)")
    parser.add_argument("--warmup", type=arguments.positive, default=3, metavar="N", help="untimed steps first (3)")
    parser.add_argument("--repeats", type=arguments.positive, default=5, metavar="N", help="timed repeats (5)")
    parser.add_argument(
        "--bandwidth-mib",
        type=arguments.positive,
        metavar="N",
        help="STREAM array size in MiB (default: 4 x the last-level cache, at least 64)",
    )
    arguments.add_destinations(parser)
    arguments.add_no_model_code(parser)


def run(args: argparse.Namespace) -> int:
    """Time the optimizer steps; write the run folder, report and history entry (bench.api.optim)."""
    from bench import api
    from bench.api.options import from_namespace

    options = from_namespace(api.OptimOptions, args)
    return api.optim(options, from_namespace(api.Destinations, args), api.Console(NAME)).exit_status

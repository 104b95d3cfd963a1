"""``convbench train``: a grid of model x recipe x seed trained to a target accuracy."""

from __future__ import annotations

import argparse

from bench.commands import arguments

NAME = "train"
HELP = "train a grid of model x recipe x seed to a target accuracy"
DESCRIPTION = (
    "Train every (model, recipe, seed) of a training suite on a real dataset and write results/<run-id>/ with "
    "records, learning curves (curves.jsonl), figures and a report. Exit status as convbench run: 0 done, 1 a case "
    "raised an error, 2 bad input, 130/143 interrupted."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--suite",
        default="mnist",
        metavar="NAME|PATH",
        help="a shipped training suite (mnist, cifar10, cifar10-degradation) or a TOML file (default mnist)",
    )
    parser.add_argument(
        "--data-root", metavar="DIR", help="where the dataset is, in torchvision's layout (default: data)"
    )
    parser.add_argument("--download", action="store_true", help="download a missing dataset through torchvision")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--models", type=arguments.names, metavar="A,B", help="models to train")
    parser.add_argument(
        "--recipes", type=arguments.names, metavar="A,B", help="the suite's recipes to train with, or 'all'"
    )
    parser.add_argument(
        "--seeds", type=arguments.positive, metavar="N", help="seeds 0..N-1 per case (default 3 on CUDA, 1 on CPU)"
    )
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=arguments.positive, metavar="N", help="budget: N epochs per training run")
    budget.add_argument("--steps", type=arguments.positive, metavar="N", help="budget: N steps per training run")
    parser.add_argument("--batch-size", type=arguments.positive, metavar="N", help="training batch size")
    parser.add_argument("--target", type=float, metavar="ACC", help="target test accuracy, a fraction in (0, 1]")
    parser.add_argument(
        "--stop-at-target", action="store_true", help="end each training run once it reaches the target"
    )
    arguments.add_destinations(parser)
    arguments.add_no_model_code(parser)
    arguments.add_no_limits(parser)


def run(args: argparse.Namespace) -> int:
    """Train the suite's grid; write the run folder, curves, report and history entry (bench.api.train)."""
    from bench import api
    from bench.api.options import from_namespace

    options = from_namespace(api.TrainOptions, args)
    return api.train(options, from_namespace(api.Destinations, args), api.Console(NAME)).exit_status

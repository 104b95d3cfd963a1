"""``convbench rf``: every layer's receptive field."""

from __future__ import annotations

import argparse

from bench.commands import arguments

NAME = "rf"
HELP = "receptive field of every layer: analytic, gradient-mask probe, effective"
DESCRIPTION = (
    "One row per convolution, pooling and linear layer of MODEL: its own geometry, the analytic receptive field "
    "(size, jump, start per axis [h, w]), what the gradient-mask probe measured, and the effective receptive field "
    "(Luo et al. 2016) with random weights (seed 0)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="a model from `convbench models`, or a reference (pkg.mod:fn, torchvision:NAME, timm:NAME)",
    )
    parser.add_argument(
        "--input-size",
        type=arguments.square_or_shape,
        metavar="N|C,H,W",
        help="the input: N for a square N x N input with the model's channels, or C,H,W "
        "(default: the model's natural input)",
    )
    parser.add_argument(
        "--layers",
        type=arguments.items,
        metavar="A,B",
        help="only these layers (qualified module names, comma-separated)",
    )
    arguments.add_output(parser)
    parser.add_argument(
        "--erf-samples",
        type=arguments.count,
        default=8,
        metavar="N",
        help="random inputs averaged for the effective field (default 8; 0 skips it, the slow part)",
    )
    arguments.add_no_model_code(parser)


def run(args: argparse.Namespace) -> int:
    """Print every layer's receptive field: analytic, gradient-mask probe and effective field."""
    from bench import api
    from bench.api.session import Console

    console = Console(NAME)
    report = api.receptive_fields(args.model, args.input_size, args.layers, args.erf_samples, progress=console.say)
    arguments.print_output(report.frame(), args)
    for note in report.analysis.notes:
        console.say(f"note: {note}")
    return 0

"""The ``convbench`` command line (also ``python -m bench``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from bench.tables import text_table

Handler = Callable[[argparse.Namespace], int]


def cmd_models(args: argparse.Namespace) -> int:
    """Print the model registry: name, family, parameter count, input shape, classes."""
    import pandas as pd
    import torch

    import models

    rows = []
    for name in args.names or models.available():
        entry = models.spec(name)
        with torch.device("meta"):
            model = models.build(name)
        rows.append(
            {
                "model": name,
                "family": entry.family,
                "params": sum(p.numel() for p in model.parameters()),
                "input (C, H, W)": "x".join(map(str, entry.input_shape)),
                "classes": entry.num_classes,
            }
        )
    table = pd.DataFrame(rows)
    print(table.to_json(orient="records", indent=2) if args.json else text_table(table))
    return 0


def cmd_optimizers(args: argparse.Namespace) -> int:
    """Print the optimizer registry with the state each algorithm keeps per parameter."""
    import pandas as pd

    import optimizers

    rows = []
    for name in args.names or optimizers.available():
        entry = optimizers.spec(name)
        rows.append(
            {
                "optimizer": name,
                "algorithm": entry.algorithm,
                "implementation": entry.implementation,
                "source": entry.source,
                "state buffers / param": optimizers.state_buffers(name),
            }
        )
    table = pd.DataFrame(rows)
    print(table.to_json(orient="records", indent=2) if args.json else text_table(table))
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    """Print the machine and software description as JSON."""
    from bench.env import collect_env

    print(json.dumps(collect_env(), indent=2))
    return 0


def cmd_rf(args: argparse.Namespace) -> int:
    """Print every layer's receptive field: analytic, gradient-mask probe and effective field."""
    import models
    from bench.receptive import ReceptiveFieldError, build_seeded, measure

    entry = models.spec(args.model)
    channels, height, width = entry.input_shape
    shape = (channels, height, width) if args.input_size is None else (channels, args.input_size, args.input_size)

    def progress(message: str) -> None:
        print(f"convbench rf: {message}", file=sys.stderr, flush=True)

    try:
        model = build_seeded(args.model, weights=args.erf_samples > 0)
        report = measure(model, shape, args.layers, args.erf_samples, progress=progress)
    except ReceptiveFieldError as error:
        print(f"convbench rf: error: model {args.model!r}: {error}", file=sys.stderr)
        return 2
    table = report.frame()
    if args.format == "json":
        print(table.to_json(orient="records", indent=2))
    elif args.format == "csv":
        print(table.to_csv(index=False), end="")
    else:
        print(text_table(table))
    for note in report.analysis.notes:
        print(f"convbench rf: note: {note}", file=sys.stderr)
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convbench",
        description="Benchmark and profile convolutional-network training with Adam and SGD with momentum.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    models_parser = commands.add_parser("models", help="list the model registry")
    models_parser.add_argument("names", nargs="*", metavar="MODEL", help="only these models (default: all)")
    models_parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    models_parser.set_defaults(handler=cmd_models)

    optimizers_parser = commands.add_parser("optimizers", help="list the optimizer registry")
    optimizers_parser.add_argument("names", nargs="*", metavar="OPTIMIZER", help="only these (default: all)")
    optimizers_parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    optimizers_parser.set_defaults(handler=cmd_optimizers)

    env_parser = commands.add_parser("env", help="describe this machine and its software as JSON")
    env_parser.set_defaults(handler=cmd_env)

    rf_parser = commands.add_parser(
        "rf",
        help="receptive field of every layer: analytic, gradient-mask probe, effective",
        description="One row per convolution, pooling and linear layer of MODEL: its own geometry, the "
        "analytic receptive field (size, jump, start per axis [h, w]), what the gradient-mask probe "
        "measured, and the effective receptive field (Luo et al. 2016) with random weights (seed 0).",
    )
    rf_parser.add_argument("model", metavar="MODEL", help="a model from `convbench models`")
    rf_parser.add_argument(
        "--input-size", type=_positive, metavar="N", help="square N x N input (default: the model's natural input)"
    )
    rf_parser.add_argument("--layers", nargs="+", metavar="LAYER", help="only these layers (qualified module names)")
    rf_parser.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
    rf_parser.add_argument(
        "--erf-samples",
        type=_count,
        default=8,
        metavar="N",
        help="random inputs averaged for the effective field (default 8; 0 skips it, the slow part)",
    )
    rf_parser.set_defaults(handler=cmd_rf)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Imported after parsing so that --help answers without loading torch.
    from models.registry import UnknownNameError

    handler: Handler = args.handler
    try:
        return handler(args)
    except UnknownNameError as error:
        print(f"convbench {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

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


def cmd_report(args: argparse.Namespace) -> int:
    """Write a run folder's figures, tables, report.html and report.md."""
    from bench.report import write_report

    for path in write_report(args.run_dir):
        print(path)
    return 0


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

    report_parser = commands.add_parser("report", help="write a run's figures, tables and reports into its folder")
    report_parser.add_argument("run_dir", metavar="RUN_DIR", help="the run's folder, e.g. results/<run-id>")
    report_parser.set_defaults(handler=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Imported after parsing so that --help answers without loading torch.
    from models.registry import UnknownNameError

    handler: Handler = args.handler
    try:
        return handler(args)
    except (UnknownNameError, FileNotFoundError) as error:
        print(f"convbench {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

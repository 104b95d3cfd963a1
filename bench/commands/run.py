"""``convbench run``: run a benchmark suite of training steps."""

from __future__ import annotations

import argparse
import dataclasses

from bench import defaults
from bench.commands import arguments

NAME = "run"
HELP = "run a benchmark suite"
DESCRIPTION = (
    "Run a suite (flags override it) and write results/<run-id>/. Exit status: 0 done, 1 done but a case raised "
    "an error, 2 bad input (nothing ran), 130/143 interrupted (kept, incomplete)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--suite",
        metavar="NAME|PATH",
        help="a shipped suite (smoke, nightly, full) or a TOML file "
        "(default: nightly where CUDA is available, else smoke)",
    )
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--models", type=arguments.names, metavar="A,B", help="models to run, or 'all'")
    parser.add_argument("--optimizers", type=arguments.names, metavar="A,B", help="optimizers to run, or 'all'")
    parser.add_argument("--batch-sizes", type=arguments.integers, metavar="N,M", help="batch sizes")
    parser.add_argument("--precision", type=arguments.items, metavar="P,Q", help="fp32, tf32 (CUDA), bf16, fp16")
    parser.add_argument("--dataset", help="synthetic (default), mnist, fashionmnist or cifar10")
    parser.add_argument("--steps", type=int, metavar="N", help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, metavar="N", help="untimed steps first (>= 1)")
    parser.add_argument("--repeats", type=int, metavar="N", help="timed repeats")
    parser.add_argument("--detailed", action="store_true", help="also time forward, backward, optimizer step")
    parser.add_argument("--isolate", action="store_true", help="run each case in a process of its own")
    parser.add_argument(
        "--threads", type=arguments.positive, metavar="N", help="torch intra-op threads (default: torch's)"
    )
    parser.add_argument(
        "--tag", action="append", metavar="TAG", help="label the run (repeatable), e.g. nightly; see --baseline-tag"
    )
    arguments.add_destinations(parser)
    parser.add_argument(
        "--memory-limit",
        type=lambda text: arguments.finite(text, "number of GiB"),
        metavar="GIB",
        help="CPU runs: memory a case may take beyond what the run maps at its start, in GiB; a case "
        "needing more is recorded oom (default: 90%% of the memory available then; 0: no limit)",
    )
    parser.add_argument("--data-root", metavar="DIR", help="where datasets are (default: data)")
    parser.add_argument("--download", action="store_true", help="download a missing dataset")
    add_launch(parser)
    add_switches(parser)
    parser.add_argument(
        "--find-max-batch",
        action="store_true",
        help="also search each case's largest batch that trains without running out of memory",
    )
    parser.add_argument(
        "--no-memory-pass",
        action="store_true",
        help="skip each case's untimed memory pass (tracked breakdown and prediction): faster, "
        "but no tracked_* or predicted_* figures",
    )
    parser.add_argument(
        "--predict-ahead",
        action="store_true",
        help="CUDA: predict the next cases' memory in a worker process while each case runs (its CUDA context "
        "takes some 0.3-0.5 GiB of the measured GPU and shows as a second process; not with --find-max-batch, "
        "--isolate or data parallel)",
    )
    parser.add_argument(
        "--no-rf",
        action="store_true",
        help="skip the suite's [rf] section (receptive fields); with --models it analyses those models",
    )
    parser.add_argument(
        "--memory-cap",
        type=arguments.size,
        metavar="SIZE",
        help="the memory that search fits in, e.g. 2GiB (default: the CUDA device's; 1GiB on the CPU)",
    )
    arguments.add_no_model_code(parser)
    arguments.add_no_limits(parser)


def add_launch(parser: argparse.ArgumentParser) -> None:
    """The data-parallel flags, as one argument group (bench.kinds.parallel.launch.LaunchOptions)."""
    group = parser.add_argument_group(
        "data parallel", "run every case on several processes through torch.distributed.run (torchrun)"
    )
    group.add_argument(
        "--nproc-per-node", type=arguments.positive, metavar="N", help="processes on this node (GPUs per node)"
    )
    group.add_argument(
        "--nnodes", type=arguments.positive, default=1, metavar="M", help="nodes taking part (default 1)"
    )
    group.add_argument("--node-rank", type=int, default=0, metavar="R", help="this node's rank, 0 … M-1 (default 0)")
    group.add_argument(
        "--rdzv-endpoint", metavar="HOST:PORT", help="where node 0 listens for the others (needed with --nnodes > 1)"
    )
    group.add_argument(
        "--strategies",
        type=arguments.items,
        metavar="A,B",
        help=f"{', '.join(arguments.STRATEGIES)} (default: the suite's, else ddp)",
    )
    group.add_argument(
        "--world-sizes",
        type=arguments.integers,
        metavar="N,M",
        help="ranks per case (default: the suite's, else 1 and all)",
    )
    group.add_argument(
        "--sync-batchnorm",
        action="store_true",
        help="run every case also with BatchNorm as torch.nn.SyncBatchNorm (CUDA only)",
    )
    group.add_argument(
        "--collective-timeout",
        type=float,
        default=defaults.COLLECTIVE_TIMEOUT_S,
        metavar="S",
        help=f"seconds a collective may hang before the case is a timeout (default {defaults.COLLECTIVE_TIMEOUT_S:g})",
    )


def add_switches(parser: argparse.ArgumentParser) -> None:
    """The flags for models by reference, memory layout, compilation, precision, the
    optimizers' hyperparameters and the peak that MFU is judged against."""
    parser.add_argument(
        "--model-kwargs",
        type=arguments.keyword_arguments,
        metavar="K=V,...",
        help="keyword arguments for every model's builder, e.g. depth=18,drop_rate=0.1",
    )
    parser.add_argument(
        "--input-size",
        type=arguments.shape,
        metavar="C,H,W",
        help="synthetic input shape for every model (default: its own)",
    )
    parser.add_argument("--num-classes", type=int, metavar="N", help="classes for every model (default: its own)")
    parser.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument(
        "--compile-mode", choices=arguments.COMPILE_MODES, help="torch.compile mode (implies --compile)"
    )
    parser.add_argument(
        "--amp",
        action="store_true",
        help="mixed precision: bf16 where the device has it, else fp16 (not with --precision)",
    )
    parser.add_argument("--lr", type=arguments.reals, metavar="X,Y", help="learning rates (each a case)")
    parser.add_argument("--momentum", type=arguments.reals, metavar="X,Y", help="SGDM momenta")
    parser.add_argument("--betas", type=arguments.betas, metavar="B1,B2", help="Adam's decay rates")
    parser.add_argument("--eps", type=arguments.reals, metavar="X,Y", help="Adam's epsilon")
    parser.add_argument(
        "--weight-decay", type=arguments.reals, metavar="X,Y", help="L2 weight decay (torch-* optimizers)"
    )
    parser.add_argument(
        "--peak-tflops",
        type=arguments.positive_real,
        metavar="X",
        help="the device's dense peak TFLOP/s for MFU (default: bench.measure.peaks' table of known GPUs)",
    )


def run(args: argparse.Namespace) -> int:
    """Run a suite; write its run folder, report and history entry (bench.api.run)."""
    from bench import api
    from bench.api.options import from_namespace

    # A data-parallel run starts its workers with this same command line.
    launch = dataclasses.replace(from_namespace(api.LaunchOptions, args), argv=tuple(args.argv))
    result = api.run(
        from_namespace(api.RunOptions, args), from_namespace(api.Destinations, args), launch, api.Console(NAME)
    )
    return result.exit_status

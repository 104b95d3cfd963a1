"""``convbench run`` data-parallel: its flags, the relaunch through torchrun, and the set-up
of each rank.

``convbench run --nproc-per-node N [--nnodes M --node-rank R --rdzv-endpoint HOST:PORT]``
checks the suite like any run, then starts ``torch.distributed.run`` in this process, which
starts N workers on this node running ``python -m bench run`` with the same arguments. A
worker (or a process that torchrun started directly, ``torchrun ... -m bench run``) joins the
world (``world.join``), takes the run id rank 0 chose, and runs every case through
``cases.DistributedRunner``; rank 0 alone writes the run folder, report and history.

Nothing here imports torch until a function needs it, so ``convbench --help`` stays quick.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from bench.kinds.parallel import world

if TYPE_CHECKING:
    from bench.kinds.step.suite import Suite

#: torchrun's exit status when a worker died without one of its own (a signal).
EXIT_WORKER_LOST = 1
#: The longest --collective-timeout: a collective hung for more than a day is no benchmark,
#: and much longer ones overflow the timeouts PyTorch keeps in milliseconds.
MAX_COLLECTIVE_TIMEOUT_S = 86_400.0


def check_endpoint(endpoint: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6-address]:PORT`` too) split, with the host resolved and the port in
    1 … 65535, before any process starts. Raises SuiteError naming the flag and the problem."""
    import socket

    from bench.checks import SuiteError

    host, colon, port = endpoint.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SuiteError(f"--rdzv-endpoint {endpoint!r}: expected HOST:PORT, a port from 1 to 65535")
    try:
        socket.getaddrinfo(host, int(port))
    except (socket.gaierror, UnicodeError) as error:
        raise SuiteError(f"--rdzv-endpoint {endpoint!r}: cannot resolve {host!r} ({error})") from None
    return host, int(port)


@dataclasses.dataclass(frozen=True)
class LaunchOptions:
    """How a run is launched: one process (``nproc_per_node`` None), or data parallel through
    torchrun with ``nproc_per_node`` × ``nnodes`` ranks. ``argv`` is the command line the
    workers are started with (``python -m bench ARGV``); only the command line has one."""

    nproc_per_node: int | None = None
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None
    strategies: list[str] | None = None
    world_sizes: list[int] | None = None
    sync_batchnorm: bool = False
    collective_timeout: float = world.DEFAULT_TIMEOUT_S
    argv: tuple[str, ...] = ()


def ranks_requested(args: LaunchOptions) -> int | None:
    """The number of ranks of the run: WORLD_SIZE under torchrun, else nproc-per-node × nnodes
    with ``--nproc-per-node``; None for a single-process run."""
    if world.launched():
        return int(os.environ["WORLD_SIZE"])
    if args.nproc_per_node is None:
        return None
    return args.nproc_per_node * args.nnodes


def plan(args: LaunchOptions, suite: Suite) -> tuple[Suite, int | None]:
    """The suite as this run will run it, and its number of ranks (None: one process).

    In a data-parallel run, every ``[[grid]]`` block without strategies gets ``--strategies``
    (else ``ddp``), without world sizes ``--world-sizes`` (else 1 and all the ranks), and
    ``--sync-batchnorm`` adds SyncBatchNorm cases.

    Raises:
        SuiteError: a bad flag, a world size larger than the run, strategies in a
            single-process run, multi-node flags without an endpoint, isolated cases in a
            data-parallel run.
    """
    from bench.checks import SuiteError
    from bench.measure.setup import SetupError

    ranks = ranks_requested(args)
    if ranks is None:
        if any(grid.strategy for grid in suite.grids) or args.strategies or args.world_sizes or args.sync_batchnorm:
            raise SetupError(
                "data-parallel cases (strategy, world sizes, SyncBatchNorm) need several processes: "
                "add --nproc-per-node N, or start convbench under torchrun"
            )
        return suite, None
    if suite.isolate:
        raise SuiteError(
            "isolate: a data-parallel run's cases share their rank processes, so cases cannot run in "
            "processes of their own; drop --isolate (or the suite's isolate = true), or --nproc-per-node"
        )
    if args.nnodes > 1 and not args.rdzv_endpoint and not world.launched():
        raise SuiteError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT (node 0's address, reachable from every node)")
    if not 0 <= args.node_rank < args.nnodes:
        raise SuiteError(f"--node-rank {args.node_rank}: expected 0 … {args.nnodes - 1}")
    if not 0 < args.collective_timeout <= MAX_COLLECTIVE_TIMEOUT_S:  # NaN fails too
        raise SuiteError(
            f"--collective-timeout {args.collective_timeout:g}: expected a number of seconds above 0 and at most "
            f"{MAX_COLLECTIVE_TIMEOUT_S:,.0f} (a day)"
        )
    if args.rdzv_endpoint and not world.launched():
        check_endpoint(args.rdzv_endpoint)
    if args.strategies:
        suite = suite.override(strategy=args.strategies)
    if args.world_sizes:
        suite = suite.override(world_sizes=args.world_sizes)
    if args.sync_batchnorm:
        suite = suite.override(sync_batchnorm=[False, True])
    grids = tuple(
        dataclasses.replace(
            grid,
            strategy=grid.strategy or ("ddp",),
            world_sizes=grid.world_sizes or tuple(sorted({1, ranks})),
        )
        for grid in suite.grids
    )
    for grid in grids:
        too_many = [size for size in grid.world_sizes if size > ranks]
        if too_many:
            raise SuiteError(f"world_sizes {too_many}: the run has {ranks} ranks; add processes or lower them")
    return dataclasses.replace(suite, grids=grids), ranks


def check_device(suite: Suite, device: object) -> None:
    """SyncBatchNorm has no CPU implementation in PyTorch (its forward raises for CPU
    tensors): refuse such cases before anything starts.

    Raises:
        SetupError: a SyncBatchNorm case on a non-CUDA device.
    """
    from bench.measure.setup import SetupError

    if getattr(device, "type", "cpu") != "cuda" and any(True in grid.sync_batchnorm for grid in suite.grids):
        raise SetupError(
            f"sync_batchnorm needs CUDA: torch.nn.SyncBatchNorm has no CPU implementation (device {device})"
        )


def rank_device(device: object) -> object:
    """This rank's device: ``cuda:LOCAL_RANK`` under torchrun when the run is on CUDA."""
    import torch

    if world.launched() and device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    return device


def torchrun_arguments(args: LaunchOptions, argv: list[str]) -> list[str]:
    """torchrun's command line for this run: one node standalone, several by static
    rendezvous at ``--rdzv-endpoint``; the workers run ``python -m bench`` with ``argv``."""
    launcher = ["--nproc-per-node", str(args.nproc_per_node), "--nnodes", str(args.nnodes)]
    if args.nnodes == 1 and not args.rdzv_endpoint:
        launcher.append("--standalone")  # a free port on this host; concurrent runs do not collide
    else:
        launcher += ["--node-rank", str(args.node_rank), "--rdzv-endpoint", args.rdzv_endpoint]
    return [*launcher, "-m", "bench", *argv]


def relaunch(args: LaunchOptions) -> int:
    """Start the workers through torchrun in this process and wait for them. The exit status
    is rank 0's (0, 1, 2 as for any run); a lost worker's signal gives 1; Ctrl-C or SIGTERM to
    this process (which torchrun passes on to the workers) gives one line and 130 or 143."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    if not args.argv:
        from bench.measure.setup import SetupError

        raise SetupError("a data-parallel run is started from the command line (convbench run --nproc-per-node N)")
    try:
        torchrun.run(torchrun.parse_args(torchrun_arguments(args, list(args.argv))))
    except ChildFailedError as failed:
        failures = failed.failures
        failure = failures.get(0) or next(iter(failures.values()))
        return failure.exitcode if failure.exitcode > 0 else EXIT_WORKER_LOST
    except SignalException as stop:  # Ctrl-C or SIGTERM: torchrun has passed it on to the workers
        name = signal.Signals(stop.sigval).name
        print(
            f"convbench run: stopped by {name}; rank 0 keeps the finished cases, the run marked incomplete",
            file=sys.stderr,
        )
        return 128 + int(stop.sigval)
    return 0


def follow(cases: list, context: object, run_case: Callable[[object, object], object]) -> int:
    """A rank other than 0: take part in every case, write nothing; exit status 0 (rank 0's
    is the run's). Ctrl-C or SIGTERM (which torchrun passes on) ends it at once: it has nothing
    to close, and Python's handler would wait for a collective or store wait to return first."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        for case in cases:
            run_case(case, context)
    finally:
        world.leave()
    return 0

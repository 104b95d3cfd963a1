"""Data-parallel runs on 2 CPU processes with gloo: real torchrun, real collectives.

One torchrun launch (module fixture) runs cnn and resnet20 with Adam and SGDM under ddp,
zero1 and (cnn) fsdp, plus two cases that fail on rank 1; the tests compare its trained
parameters with one process training on the global batch, its optimizer state with the
closed form, and its run folder with any other run's. A second test starts two torchrun
"nodes" on 127.0.0.1 through ``convbench run --nnodes 2``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import models
import optimizers
from bench.api.options import LaunchOptions, from_namespace
from bench.cli import build_parser, main
from bench.kinds.parallel.cases import RANK_FIELDS, DistributedRunner
from bench.kinds.parallel.launch import plan, relaunch, torchrun_arguments
from bench.kinds.parallel.world import LAUNCH_VARIABLES, World
from bench.kinds.step.suite import Case, load_suite
from bench.measure import data
from bench.record import Record
from bench.storage import history
from bench.storage.store import load_run

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("distributed_worker.py")
# warmup 1 + 1 repeat x 2 steps + the untimed step after them that counts host syncs (bench.measure.host)
PER_RANK_BATCH, WORLD, STEPS = 2, 2, 4
TIMEOUT_S = 3  # the collective timeout of the test run; rank1-stall sleeps longer

SUITE = """
[suite]
name = "dist-test"
device = "cpu"
steps = 2
warmup = 1
repeats = 1

[[grid]]
models = ["rank1-error", "rank1-stall"]
optimizers = ["sgdm"]
batch_sizes = [2]
strategy = ["ddp"]
world_sizes = [2]

[[grid]]
models = ["rank0-slow"]
optimizers = ["sgdm"]
batch_sizes = [2]
strategy = ["ddp"]
world_sizes = [1]

[[grid]]
models = ["cnn"]
optimizers = ["adam", "sgdm"]
batch_sizes = [2]
strategy = ["ddp", "zero1", "fsdp"]
world_sizes = [2]

[[grid]]
models = ["resnet20"]
optimizers = ["adam", "sgdm"]
batch_sizes = [2]
strategy = ["ddp", "zero1"]
world_sizes = [2]
"""


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """(parameters folder, results root, torchrun's outcome) of one 2-process run."""
    tmp = tmp_path_factory.mktemp("dist")
    suite = tmp / "dist-test.toml"
    suite.write_text(SUITE)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(WORLD)]
    command += [str(WORKER), str(tmp / "params"), "run", "--suite", str(suite), "--results", str(tmp / "results")]
    command += ["--collective-timeout", str(TIMEOUT_S)]
    done = subprocess.run(command, cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=300)
    return tmp / "params", tmp / "results", done


def the_run(results: Path):
    (folder,) = [path for path in results.iterdir() if path.is_dir()]
    return load_run(folder)


def reference(model_name: str, optimizer_name: str, ghost_batchnorm: bool) -> dict[str, torch.Tensor]:
    """One process, the global batch (the ranks' batches side by side), STEPS steps of the
    registry optimizer. With ``ghost_batchnorm`` the loss is the mean of each rank's share's
    loss, each forward normalising over its share only, as per-rank BatchNorm does."""
    spec = models.spec(model_name)
    torch.manual_seed(0)  # the runner's order: data first, then the model
    [(images, labels)] = data.make_batches(
        "synthetic", spec.input_shape, spec.num_classes, PER_RANK_BATCH * WORLD, STEPS, torch.device("cpu")
    )
    model = models.build(model_name, in_channels=spec.input_shape[0], num_classes=spec.num_classes)
    optimizer = optimizers.build(optimizer_name, model.parameters())
    with one_thread():  # the ranks' OMP_NUM_THREADS=1 (environment())
        for _ in range(STEPS):
            if ghost_batchnorm:
                shares = zip(images.chunk(WORLD), labels.chunk(WORLD), strict=True)
                loss = sum(F.cross_entropy(model(x), y) for x, y in shares) / WORLD
            else:
                loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return {name: p.detach() for name, p in model.named_parameters()}


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch on one intra-op thread, as the ranks run. oneDNN splits a convolution's
    reductions by thread, so another thread count sums in another order: on AVX-512 CPUs
    enough to move an Adam weight by 2e-5, or a weight behind a BatchNorm over two samples by
    3.5e-4, which would hide the rank-versus-one-process agreement this file checks."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def trained(params: Path, case_id: str, strategy: str) -> dict[str, torch.Tensor]:
    """Rank 0's parameters; under fsdp the ranks' dim-0 shards put back together. Ranks
    holding whole parameters must agree exactly."""
    name = case_id.replace("/", "_") + ".pt"
    rank0, rank1 = (torch.load(params / f"rank{r}" / name) for r in range(WORLD))
    if strategy == "fsdp":
        return {key: torch.cat([rank0[key], rank1[key]]) for key in rank0}
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), f"{case_id}: ranks disagree on {key}"
    return rank0


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def case(model: str, optimizer: str, strategy: str) -> str:
    shape = "x".join(map(str, models.spec(model).input_shape))
    return f"{model}/{optimizer}/b{PER_RANK_BATCH}/fp32/cl0/eager/synthetic/{shape}/{strategy}/w{WORLD}"


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adam", "sgdm"])
@pytest.mark.parametrize("strategy", ["ddp", "zero1", "fsdp"])
def test_cnn_parameters_equal_one_process_on_the_global_batch(launched, optimizer, strategy):
    params, _, _ = launched
    expected = reference("cnn", optimizer, ghost_batchnorm=False)
    # float tolerance: the all-reduce sums the ranks' half-batch means in another order than
    # one mean over the batch; Adam's m / sqrt(v) lets such rounding move a weight by ~1e-6
    assert max_difference(trained(params, case("cnn", optimizer, strategy), strategy), expected) < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adam", "sgdm"])
@pytest.mark.parametrize("strategy", ["ddp", "zero1"])
def test_batchnorm_net_equals_one_process_normalising_per_rank(launched, optimizer, strategy):
    """Without SyncBatchNorm (no CPU implementation in PyTorch) each rank normalises over its
    own share: what holds is equality with one process doing the same ("ghost" batch norm),
    not with one process normalising over the global batch, which ends measurably elsewhere."""
    params, _, _ = launched
    got = trained(params, case("resnet20", optimizer, strategy), strategy)
    assert max_difference(got, reference("resnet20", optimizer, ghost_batchnorm=True)) < 1e-5
    assert max_difference(got, reference("resnet20", optimizer, ghost_batchnorm=False)) > 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adam", "sgdm"])
def test_sharded_optimizer_state_per_rank(launched, optimizer):
    """zero1: every rank's state is that of whole parameters, together the unsharded state
    (4 bytes x state buffers x parameters, the textbook optimizers keeping a Python step
    count), each within one parameter's state of half. fsdp: each state tensor is split by
    rows as torch.chunk splits it, so each rank's bytes follow exactly."""
    _, results, _ = launched
    frame = the_run(results).frame().set_index("case_id")
    model = models.build("cnn")
    per_element = 4 * optimizers.state_buffers(optimizer)
    total = per_element * sum(p.numel() for p in model.parameters())
    largest = per_element * max(p.numel() for p in model.parameters())

    unsharded = frame.loc[case("cnn", optimizer, "ddp"), "rank_optimizer_state_bytes"]
    assert unsharded == [total, total]
    zero1 = frame.loc[case("cnn", optimizer, "zero1"), "rank_optimizer_state_bytes"]
    assert sum(zero1) == total
    assert all(abs(share - total / WORLD) <= largest for share in zero1)
    fsdp = frame.loc[case("cnn", optimizer, "fsdp"), "rank_optimizer_state_bytes"]
    rows = [[chunk.numel() for chunk in p.detach().chunk(WORLD)] for p in model.parameters()]
    assert fsdp == [per_element * sum(split[r] if r < len(split) else 0 for split in rows) for r in range(WORLD)]


@pytest.mark.slow
def test_failing_and_hung_ranks_fail_their_case_and_the_sweep_goes_on(launched):
    _, results, done = launched
    frame = the_run(results).frame().set_index("case_id")
    error = frame.loc["rank1-error/sgdm/b2/fp32/cl0/eager/synthetic/1x8x8/ddp/w2"]
    assert error["status"] == "error"
    assert error["error"] == "rank 1 of 2: ValueError: injected fault on rank 1"
    stall = frame.loc["rank1-stall/sgdm/b2/fp32/cl0/eager/synthetic/1x8x8/ddp/w2"]
    assert stall["status"] == "timeout"
    assert f"{TIMEOUT_S * 1000}ms" in stall["error"]  # gloo's own message, naming the bound
    # rank 0 alone, slower than the timeout: rank 1 waits for it, it is no timeout
    assert frame.loc["rank0-slow/sgdm/b2/fp32/cl0/eager/synthetic/1x8x8/ddp/w1", "status"] == "ok"
    assert (frame.drop(index=[error.name, stall.name])["status"] == "ok").all()
    assert done.returncode != 0  # a case ended with an error: rank 0 exits 1, as any run would


@pytest.mark.slow
def test_the_run_folder_and_history_are_those_of_any_run(launched):
    _, results, _ = launched
    run = the_run(results)
    manifest = json.loads((run.path / "run.json").read_text())
    assert (manifest["status"], manifest["cases_total"], manifest["cases_done"]) == ("complete", 13, 13)
    assert len((run.path / "records.jsonl").read_text().splitlines()) == 13  # rank 0 alone wrote
    for name in ("env.json", "suite.toml"):
        assert (run.path / name).is_file(), name
    recorded = history.records(results / history.DEFAULT_NAME)
    assert set(recorded["case_id"]) == set(run.frame()["case_id"])
    ok = run.frame().query("status == 'ok' and world_size == @WORLD")
    assert (ok["global_batch_size"] == PER_RANK_BATCH * WORLD).all()
    for row in ok.itertuples():  # per step the slowest rank: no rank's median is above it
        assert max(row.rank_step_time_ms) <= row.step_time_ms


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_rendezvous_on_loopback_and_finish(tmp_path):
    endpoint = f"127.0.0.1:{free_port()}"
    results = tmp_path / "results"
    flags = ["--device", "cpu", "--models", "cnn", "--optimizers", "sgdm", "--batch-sizes", "2", "--steps", "2"]
    flags += ["--warmup", "1", "--repeats", "1", "--results", str(results), "--suite", str(tmp_path / "s.toml")]
    flags += ["--nproc-per-node", "1", "--nnodes", "2", "--rdzv-endpoint", endpoint, "--node-rank"]
    (tmp_path / "s.toml").write_text('[[grid]]\nmodels = ["cnn"]\noptimizers = ["sgdm"]\nbatch_sizes = [2]\n')
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "bench", "run", *flags, str(rank)],
            cwd=ROOT,
            env=environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    frame = the_run(results).frame()  # one run folder: node 1 wrote nothing
    assert list(frame["case_id"]) == [
        "cnn/sgdm/b2/fp32/cl0/eager/synthetic/1x28x28/ddp/w1",
        "cnn/sgdm/b2/fp32/cl0/eager/synthetic/1x28x28/ddp/w2",
    ]
    assert list(frame["status"]) == ["ok", "ok"]
    assert frame["scaling_efficiency"].iloc[0] == 1.0
    assert 0 < frame["scaling_efficiency"].iloc[1]
    folder = the_run(results).path  # the report of any run, with the data-parallel figures
    for name in ("summary.csv", "report.html", "report.md", "figures/throughput.png"):
        assert (folder / name).is_file(), name
    for name in ("scaling_efficiency", "state_per_rank", "adam_vs_sgdm_per_rank"):
        assert (folder / "figures" / f"{name}.png").is_file(), name
    assert "scaling efficiency" in (folder / "summary.md").read_text()


@pytest.mark.slow
def test_ctrl_c_to_a_data_parallel_run_ends_in_one_line_and_130(tmp_path):
    """Ctrl-C to ``convbench run --nproc-per-node 2``, once the first record is on disk: the
    run folder is kept incomplete with its records, and the command ends with one line of its
    own and 130, not torchrun's SignalException traceback (SIGTERM: the test below)."""
    signum = signal.SIGINT
    results = tmp_path / "results"
    batches = ", ".join(str(n) for n in range(1, 61))  # many short cases: the run is still going
    (tmp_path / "s.toml").write_text(
        f'[suite]\nsteps = 2\nwarmup = 1\nrepeats = 2\n[[grid]]\nmodels = ["mlp"]\noptimizers = ["sgdm"]\n'
        f"batch_sizes = [{batches}]\n"
    )
    command = [sys.executable, "-m", "bench", "run", "--suite", str(tmp_path / "s.toml"), "--device", "cpu"]
    command += ["--results", str(results), "--nproc-per-node", "2", "--no-memory-pass", "--run-id", "dp"]
    process = subprocess.Popen(command, cwd=ROOT, env=environment(), stderr=subprocess.PIPE, text=True)
    records = results / "dp" / "records.jsonl"
    deadline = time.monotonic() + 240
    while not (records.exists() and records.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, err
    assert "Traceback" not in err and "SignalException" not in err, err
    assert f"convbench run: stopped by {signal.Signals(signum).name}" in err.splitlines()[-1]
    run = load_run(results / "dp")
    assert run.manifest["status"] == "incomplete" and run.manifest["stopped_by"] == signal.Signals(signum).name
    assert len(run.records) >= 1


def test_sigterm_passed_on_by_torchrun_is_one_line_and_143(monkeypatch, capsys):
    """torchrun raises SignalException in the launching process when a stop signal reaches it
    (after passing it to the workers); the launcher turns it into one line and 128 + signal."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException

    def stopped(config):
        raise SignalException("Process 1 got signal: SIGTERM", sigval=signal.SIGTERM)

    monkeypatch.setattr(torchrun, "run", stopped)
    args = dataclasses.replace(parse("--nproc-per-node", "2"), argv=("run", "--nproc-per-node", "2"))
    assert relaunch(args) == 143
    assert capsys.readouterr().err.splitlines() == [
        "convbench run: stopped by SIGTERM; rank 0 keeps the finished cases, the run marked incomplete"
    ]


# The merge of the ranks' reports, and the plan of a run, without processes.


def parallel_case(world_size: int, strategy: str = "ddp") -> Case:
    return Case(
        "cnn", "adam", 4, "fp32", False, False, "synthetic", (1, 28, 28), 10, 2, 1, 2, False, strategy, world_size
    )


def rank0_record(case: Case) -> Record:
    return Record.from_flat(dict(
        run_id="r", case_id=case.case_id, timestamp="t", suite="s", **case.config(),
        steps=2, warmup=1, repeats=2, params=1000,
    ))  # fmt: skip


def report(samples: list[float], state: int, status: str = "ok", **extra: object) -> dict:
    fields = {name: 0 for name in RANK_FIELDS} | {"final_loss": 1.0}
    return (
        fields
        | {"status": status, "error": None, "step_time_samples_ms": samples, "optimizer_state_bytes": state}
        | extra
    )


def test_merge_takes_the_slowest_rank_per_step_and_scales_against_one_rank():
    runner = DistributedRunner(World(0, 2, 0, "gloo", 5.0, store=None))
    one, two = parallel_case(1), parallel_case(2)
    alone = runner.merge(rank0_record(one), [report([10.0, 10.0, 10.0, 10.0], 800)], one)
    assert alone.global_throughput == pytest.approx(4 / 0.010) and alone.scaling_efficiency == 1.0
    merged = runner.merge(
        rank0_record(two), [report([10.0, 30.0, 10.0, 12.0], 500), report([20.0, 10.0, 11.0, 10.0], 300)], two
    )
    # per step: 20, 30, 11, 12 -> median 16 ms; global batch 8
    assert merged.step_time_samples_ms == [20.0, 30.0, 11.0, 12.0]
    assert merged.step_time_ms == pytest.approx(16.0)
    assert merged.global_batch_size == 8
    assert merged.global_throughput == pytest.approx(8 / 0.016)
    assert merged.scaling_efficiency == pytest.approx((8 / 0.016) / (2 * 4 / 0.010))
    assert merged.rank_optimizer_state_bytes == [500, 300] and merged.optimizer_state_bytes == 500


def test_merge_takes_the_first_failure_and_a_silent_rank_is_a_timeout():
    runner = DistributedRunner(World(0, 2, 0, "gloo", 5.0, store=None))
    case = parallel_case(2)
    # rank 1 failed first (ticket 1); rank 0's error came from the broken collective after it
    merged = runner.merge(
        rank0_record(case),
        [report([], 0, "error", error="RuntimeError: Connection closed by peer", order=2),
         report([], 0, "oom", error="CUDA out of memory", order=1)],
        case,
    )  # fmt: skip
    assert (merged.status, merged.error) == ("oom", "rank 1 of 2: CUDA out of memory")
    assert merged.rank_status == ["error", "oom"] and merged.step_time_ms is None
    silent = runner.merge(rank0_record(case), [report([10.0], 0), None], case)
    assert silent.status == "timeout" and silent.error.startswith("rank 1 of 2: sent no result within")


def parse(*flags: str) -> LaunchOptions:
    """The launch options of ``convbench run FLAGS``, as the command reads them."""
    return from_namespace(LaunchOptions, build_parser().parse_args(["run", *flags]))


def test_plan_fills_in_strategies_and_world_sizes(monkeypatch):
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    suite = load_suite("smoke")
    planned, ranks = plan(parse("--nproc-per-node", "2", "--nnodes", "2", "--rdzv-endpoint", "127.0.0.1:1"), suite)
    assert ranks == 4
    assert {(c.strategy, c.world_size) for c in planned.cases()} == {("ddp", 1), ("ddp", 4)}
    planned, _ = plan(parse("--nproc-per-node", "4", "--strategies", "zero1,fsdp", "--world-sizes", "2,1"), suite)
    assert [(c.strategy, c.world_size) for c in planned.cases()][:4] == [
        ("zero1", 1), ("zero1", 2), ("fsdp", 1), ("fsdp", 2)
    ]  # fmt: skip
    assert plan(parse(), suite) == (suite, None)


def test_torchrun_runs_one_node_standalone_and_several_by_static_rendezvous():
    argv = ["run", "--nproc-per-node", "8"]
    assert torchrun_arguments(parse(*argv[1:]), argv) == [
        "--nproc-per-node", "8", "--nnodes", "1", "--standalone", "-m", "bench", *argv
    ]  # fmt: skip
    argv = ["run", "--nproc-per-node", "8", "--nnodes", "2", "--node-rank", "1", "--rdzv-endpoint", "n0:29500"]
    assert torchrun_arguments(parse(*argv[1:]), argv) == [
        "--nproc-per-node", "8", "--nnodes", "2", "--node-rank", "1", "--rdzv-endpoint", "n0:29500",
        "-m", "bench", *argv,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--strategies", "ddp"], "need several processes"),
        (["--nproc-per-node", "2", "--world-sizes", "4"], "world_sizes [4]: the run has 2 ranks"),
        (["--nproc-per-node", "2", "--strategies", "zero2"], "'zero2' is not one of ddp, zero1, fsdp"),
        (["--nproc-per-node", "1", "--nnodes", "2"], "--nnodes > 1 needs --rdzv-endpoint"),
        (["--nproc-per-node", "2", "--sync-batchnorm"], "sync_batchnorm needs CUDA"),
        (["--nproc-per-node", "2", "--isolate"], "cases share their rank processes"),
    ],
)
def test_bad_data_parallel_input_exits_2_before_anything_runs(tmp_path, monkeypatch, capsys, flags, message):
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert main(["run", "--device", "cpu", "--results", str(tmp_path), *flags]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []

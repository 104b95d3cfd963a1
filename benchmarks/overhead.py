"""The harness's own overhead: the throughput it reports against a minimal hand-written loop.

    python -m benchmarks.overhead [--models probe,cnn,resnet20] [--optimizer adam] [--batch-size 32]
                                  [--rounds 20] [--steps 20] [--warmup 5] [--pairs 100] [--device auto]

In one process, for each model, each round runs the same case twice, in alternating order:

- the harness: ``bench.kinds.step.runner.run_case`` with ``warmup`` untimed steps and ``steps`` timed
  ones, reporting ``throughput`` = batch / median step time;
- a hand-written loop: the same model (same seed), optimizer and batch, ``warmup`` steps,
  then ``steps`` steps between two synchronisations of the device, read by the host clock:
  throughput = batch x steps / elapsed. On CUDA it runs under the harness's own cuDNN and
  TF32 settings (``bench.measure.precision.cuda_backend_settings``), so the two differ only in the
  loop around the step.

Interleaving spreads slow phases of a shared machine over both. Per model the script prints
each round, then the median over rounds of harness / hand-written throughput, once as the
harness reports it (median step time; with the IQR over rounds) and once from the harness's
mean step time (the same statistic as the hand-written loop's), and the median over rounds
of (harness mean step time - hand-written step time): the time the harness adds to a step.
``probe`` is a 1x1x1 -> 2 linear model registered by this script: its step is almost all
framework overhead, so it shows what the harness adds in absolute terms.

Rounds of whole cases are at the mercy of a busy machine's slow phases, so the script then
compares the training steps themselves: ``--pairs`` times, one harness step
(``Trainer.step``), one hand-written step and one hand-written step that zeroes its
gradients in place as the harness does (``zero_grad(set_to_none=False)``), on triplet models,
the order rotating, each timed by the harness's clock; it prints the medians, the throughput
ratio of the first two, and what zeroing in place costs the hand-written step.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

import models
import optimizers
from bench.kinds.step.runner import RunContext, build, run_case
from bench.kinds.step.suite import Case
from bench.measure import timing
from bench.measure.env import collect_env
from bench.measure.precision import cuda_backend_settings
from bench.measure.setup import resolve_device


@models.register("probe", input_shape=(1, 1, 1), num_classes=2, family="benchmark")
def probe(in_channels: int = 1, num_classes: int = 2) -> nn.Module:
    """Flatten and one linear layer: a training step with next to no arithmetic."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels, num_classes))


def hand_written_step(case: Case, device: torch.device, set_to_none: bool = True) -> Callable[[], None]:
    """The simplest honest training step, on its own model, batch and optimizer; gradients set
    to None after the update (PyTorch's default), or with ``set_to_none=False`` zeroed in
    place as the harness does."""
    torch.manual_seed(0)
    images = torch.randn(case.batch_size, *case.input_shape, device=device)
    labels = torch.randint(0, case.num_classes, (case.batch_size,), device=device)
    model = models.build(case.model).to(device)
    optimizer = optimizers.build(case.optimizer, model.parameters())

    def step() -> None:
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=set_to_none)

    return step


def hand_written_loop(case: Case, device: torch.device) -> float:
    """Milliseconds per step of the simplest honest training loop, under the harness's
    cuDNN/TF32 settings for the case's precision."""
    step = hand_written_step(case, device)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    with cuda_backend_settings(case.precision, device):
        for _ in range(case.warmup):
            step()
        synchronize()
        start = time.perf_counter()
        for _ in range(case.steps):
            step()
        synchronize()
    return (time.perf_counter() - start) * 1e3 / case.steps


def paired_steps(case: Case, context: RunContext, pairs: int) -> dict[str, float]:
    """Median milliseconds of the harness's training step (``Trainer.step``), of the
    hand-written step and of the hand-written step zeroing its gradients in place, run in
    turn step by step (the order rotating) on triplet models and timed by the same harness
    clock, so all see the same moments of a noisy machine; all under the harness's
    cuDNN/TF32 settings for the case's precision."""
    trainer = build(case, context, {})[2]
    steps = {
        "harness": trainer.step,
        "hand": hand_written_step(case, context.device),
        "hand_in_place": hand_written_step(case, context.device, set_to_none=False),
    }
    clock = timing.clock_for(context.device)
    times: dict[str, list[float]] = {name: [] for name in steps}
    with cuda_backend_settings(case.precision, context.device):
        for _ in range(case.warmup):
            for step in steps.values():
                step()
        order = list(steps.items())
        for pair in range(pairs):
            for name, step in order[pair % 3 :] + order[: pair % 3]:
                (samples,) = timing.time_steps([step], 1, clock)
                times[name] += samples
    trainer.check_finite()
    return {name: statistics.median(samples) for name, samples in times.items()}


def compare_runs(case: Case, context: RunContext, rounds: int) -> None:
    """Print each round of run_case against the hand-written loop, then the medians."""
    ratios, mean_ratios, added_ms = [], [], []
    for round_ in range(1, rounds + 1):
        if round_ % 2:
            record, hand_ms = run_case(case, context), hand_written_loop(case, context.device)
        else:
            hand_ms, record = hand_written_loop(case, context.device), run_case(case, context)
        if record.status != "ok":
            raise SystemExit(f"{case.case_id}: {record.status}: {record.error}")
        mean_ms = statistics.fmean(record.step_time_samples_ms)
        ratios.append(hand_ms / record.step_time_ms)  # = harness throughput / hand-written throughput
        mean_ratios.append(hand_ms / mean_ms)
        added_ms.append(mean_ms - hand_ms)
        print(
            f"{case.case_id} round {round_:2d}: harness {record.step_time_ms:9.3f} ms/step median, "
            f"{mean_ms:9.3f} mean; hand-written {hand_ms:9.3f}; throughput ratio {ratios[-1]:.3f} "
            f"as reported, {mean_ratios[-1]:.3f} by mean"
        )
    q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    print(
        f"{case.model}: over {rounds} rounds, harness / hand-written throughput = {median:.3f} (IQR {q3 - q1:.3f}) "
        f"as reported, {statistics.median(mean_ratios):.3f} by mean step time; "
        f"time added per step (means): {statistics.median(added_ms) * 1e3:.0f} us (median over rounds)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="probe,cnn,resnet20")
    parser.add_argument("--optimizer", default="adam")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=20, help="whole-case rounds (0: none)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=100, help="steps of each kind in the paired comparison (0: none)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    device = resolve_device(args.device)
    env = collect_env()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else env["cpu"]["model"]
    print(f"device {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads")
    context = RunContext(run_id="overhead", suite="overhead", device=device, env=env)
    for model in args.models.split(","):
        spec = models.spec(model)
        case = Case(
            model,
            args.optimizer,
            args.batch_size,
            "fp32",
            False,
            False,
            "synthetic",
            spec.input_shape,
            spec.num_classes,
            steps=args.steps,
            warmup=args.warmup,
            repeats=1,
            detailed=False,
        )
        if args.rounds:
            compare_runs(case, context, args.rounds)
        if args.pairs:
            medians = paired_steps(case, context, args.pairs)
            harness_ms, hand_ms, in_place_ms = medians["harness"], medians["hand"], medians["hand_in_place"]
            print(
                f"{model}: {args.pairs} paired steps, median {harness_ms:.3f} ms (harness step) vs {hand_ms:.3f} ms "
                f"(hand-written step): throughput ratio {hand_ms / harness_ms:.3f}; the hand-written step zeroing "
                f"its gradients in place {in_place_ms:.3f} ms ({(in_place_ms - hand_ms) * 1e3:+.0f} us)\n"
            )


if __name__ == "__main__":
    main()

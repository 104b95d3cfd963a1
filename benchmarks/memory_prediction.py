"""How close the fake-tensor prediction comes to the tracked peak, and how long it takes.

    python -m benchmarks.memory_prediction [--models all] [--optimizers adam,sgdm]
                                           [--batch-sizes 1,2] [--out results/memory-prediction]

For every model, optimizer and batch size, on the CPU: the exact breakdown of one tracked
steady-state step on real tensors (``bench.kinds.step.memory_pass.tracked_step``) and the same step
predicted on fake tensors (``bench.kinds.step.memory_pass.predict``), at each model's natural input.
Per case it prints and writes to ``OUT/cases.csv``: both peaks, the prediction's error
relative to the tracked peak, the optimizer state of both and how long the prediction
took; ``OUT/summary.md`` has the worst error per model and the Adam / SGDM state ratio.
Real steps of the torchvision models need a few GiB of RAM (VGG-16 with Adam: 2.5 GiB).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

import models
from bench.kinds.step import memory_pass
from bench.kinds.step.runner import RunContext, build
from bench.kinds.step.suite import Case
from bench.reporting.tables import markdown_table, text_table


def case_for(model: str, optimizer: str, batch_size: int) -> Case:
    spec = models.spec(model)
    return Case(
        model, optimizer, batch_size, "fp32", False, False, "synthetic", spec.input_shape, spec.num_classes,
        steps=1, warmup=1, repeats=1, detailed=False,
    )  # fmt: skip


def measure(model: str, optimizer: str, batch_size: int) -> dict:
    """One row: tracked and predicted breakdowns of the case on the CPU."""
    device = torch.device("cpu")
    context = RunContext(run_id="memory-prediction", suite="memory-prediction", device=device)
    case = case_for(model, optimizer, batch_size)
    start = time.perf_counter()
    tracked = memory_pass.tracked_step(case, device, lambda c, out: build(c, context, out))
    tracked_s = time.perf_counter() - start
    prediction = memory_pass.predict(case, device)
    return {
        "model": model,
        "optimizer": optimizer,
        "batch": batch_size,
        "tracked peak (MiB)": tracked.peak / 2**20,
        "predicted peak (MiB)": prediction.breakdown.peak / 2**20,
        "error (%)": 100 * (prediction.breakdown.peak - tracked.peak) / tracked.peak,
        "tracked state (B)": tracked.optimizer_state,
        "predicted state (B)": prediction.breakdown.optimizer_state,
        "peak phase": tracked.phase,
        "tracked step (s)": tracked_s,
        "prediction (s)": prediction.seconds,
    }


def summarise(cases: pd.DataFrame) -> pd.DataFrame:
    """Per model: the largest |error| over its cases and Adam's state over SGDM's."""
    state = cases.groupby(["model", "optimizer"])["tracked state (B)"].first().unstack()
    worst = cases.assign(abs_error=cases["error (%)"].abs()).groupby("model", sort=False)["abs_error"].max()
    seconds = cases.groupby("model", sort=False)["prediction (s)"].median()
    summary = pd.DataFrame({"largest |error| (%)": worst, "median prediction (s)": seconds})
    if {"adam", "sgdm"} <= set(state.columns):
        summary["adam / sgdm state"] = state["adam"] / state["sgdm"]
    return summary.reset_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="all", help="comma-separated registry names, or all")
    parser.add_argument("--optimizers", default="adam,sgdm")
    parser.add_argument("--batch-sizes", default="1,2")
    parser.add_argument("--out", type=Path, default=Path("results/memory-prediction"))
    args = parser.parse_args()
    names = models.available() if args.models == "all" else args.models.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for model in names:
        for optimizer in args.optimizers.split(","):
            for batch_size in (int(b) for b in args.batch_sizes.split(",")):
                rows.append(measure(model, optimizer, batch_size))
                print(text_table(pd.DataFrame(rows[-1:]).round(3)), flush=True)
                pd.DataFrame(rows).to_csv(args.out / "cases.csv", index=False)
    cases = pd.DataFrame(rows)
    summary = summarise(cases)
    (args.out / "summary.md").write_text(markdown_table(summary.round(4)) + "\n")
    print(text_table(summary.round(4)))


if __name__ == "__main__":
    main()

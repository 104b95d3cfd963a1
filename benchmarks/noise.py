"""Does ``convbench compare`` stay quiet on noise and speak up on a real slow-down? Measured.

    python -m benchmarks.noise [--runs 10] [--slowdown 15] [--repeats R --steps S] [--out results/noise]

1. A/A: run the smoke suite ``--runs`` times, unchanged, each in a fresh process, and
   compare every unchanged run with the one before it (and, for more pairs, every one with
   every other). The issue's bar: at most 1 comparison in 20 may report a regression.
2. Slow-down: after each unchanged run, run the suite again with every case made
   ``--slowdown`` percent slower than it just measured, and compare the two; ``compare``
   should flag every case, every time.

The slow-down is a busy wait at the start of the model's forward, calibrated per case to
the given fraction of that case's median step time in the unchanged run before, so the harness
times it exactly as it would time slower code. It is installed only by this script, in the
``convbench`` processes it starts (``--as-convbench``), from the environment variable
``CONVBENCH_NOISE_DELAY_MS`` (JSON: ``{"model/optimizer/batch": milliseconds}``); unchanged runs go
through the same launcher without it.

Each comparison is judged twice: by ``compare`` as shipped (Welch's t-test on the logs of
the per-repeat medians, Holm over the cases, 5% threshold) and, for contrast, by the
design it replaced (a Mann–Whitney U test on every step sample as if the steps were
independent, with the same Holm correction and threshold). ``--repeats``/``--steps``
override the smoke suite's sampling design (repeats × steps timed steps per case).

Writes ``summary.md`` (the figures the README quotes), ``comparisons.csv`` (every
comparison, every case) and ``noise.png``/``.pdf`` (step-time change per case and
comparison) into ``--out``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

DELAY_ENV = "CONVBENCH_NOISE_DELAY_MS"
LOADS = "load_averages.json"  # run id -> 1-minute load average just after the run
ROOT = Path(__file__).resolve().parent.parent


def install_slowdown(delays_ms: dict[str, float]) -> None:
    """Make the forward of each (model, optimizer, batch size) case wait its delay. The
    optimizer is built right after its model, so each optimizer build names the case of the
    model built last; the batch size is read from the forward's input."""
    import models
    import optimizers

    build_model, build_optimizer = models.build, optimizers.build
    built: list = []

    def wait_first(module, inputs) -> None:
        # A busy wait, not time.sleep: a sleeping process lets its intra-op threads park and
        # the core idle, and waking them costs more than the sleep (a 15% sleep measured as
        # 25-35% slower here). Spinning adds the delay and nothing else.
        end = time.perf_counter() + module.noise_delays_s.get(inputs[0].shape[0], 0.0)
        while time.perf_counter() < end:
            pass

    def slow_model(name: str, **kwargs: object):
        model = build_model(name, **kwargs)
        model.noise_model_name, model.noise_delays_s = name, {}
        model.register_forward_pre_hook(wait_first)
        built[:] = [model]
        return model

    def slow_optimizer(name: str, params, **hyperparameters: object):
        model = built[0]
        prefix = f"{model.noise_model_name}/{name}/"
        model.noise_delays_s = {
            int(key.removeprefix(prefix)): ms / 1000 for key, ms in delays_ms.items() if key.startswith(prefix)
        }
        return build_optimizer(name, params, **hyperparameters)

    models.build = models.catalog.build = slow_model
    optimizers.build = optimizers.registry.build = slow_optimizer


def as_convbench(argv: list[str]) -> int:
    """Be ``convbench``, slowed down if the environment says so."""
    if DELAY_ENV in os.environ:
        install_slowdown(json.loads(os.environ[DELAY_ENV]))
    from bench.cli import main

    return main(argv)


def run_smoke(out: Path, run_id: str, design: list[str], delays_ms: dict[str, float] | None = None) -> pd.DataFrame:
    """One smoke run in a fresh process; its records."""
    from bench.storage.store import load_run

    env = {k: v for k, v in os.environ.items() if k != DELAY_ENV}
    if delays_ms:
        env[DELAY_ENV] = json.dumps(delays_ms)
    command = [sys.executable, "-m", "benchmarks.noise", "--as-convbench"]
    command += ["run", "--suite", "smoke", "--results", str(out), "--run-id", run_id, *design]
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    load = os.getloadavg()[0]
    print(f"{run_id}: {time.perf_counter() - started:.0f} s, load average {load:.2f}", flush=True)
    loads_file = out / LOADS
    loads = json.loads(loads_file.read_text()) if loads_file.exists() else {}
    loads_file.write_text(json.dumps({**loads, run_id: load}, indent=1))
    return load_run(out / run_id).frame().assign(load_average=load)


def load_runs(out: Path, prefix: str) -> list[pd.DataFrame]:
    """The runs ``prefix``-00, -01, ... that a measurement left in ``out``, in order."""
    from bench.storage.store import load_run

    loads_file = out / LOADS
    loads = json.loads(loads_file.read_text()) if loads_file.exists() else {}
    folders = sorted(path for path in out.glob(f"{prefix}-*") if (path / "run.json").is_file())
    return [load_run(path).frame().assign(load_average=loads.get(path.name, float("nan"))) for path in folders]


def step_level_time_verdicts(baseline: pd.DataFrame, candidate: pd.DataFrame, threshold: float = 0.05) -> list[str]:
    """The replaced design: Mann–Whitney U on every step sample, Holm over the cases, the
    same threshold. The smoke runs list their cases in the same order."""
    from bench.analyse.stats import holm, mann_whitney

    pairs = list(zip(baseline["step_time_samples_ms"], candidate["step_time_samples_ms"], strict=True))
    p_values = holm([mann_whitney(c, b).p_value for b, c in pairs])
    verdicts = []
    for (b, c), p in zip(pairs, p_values, strict=True):
        change = np.median(c) / np.median(b) - 1
        significant = p < 0.05
        verdicts.append(
            "regression"
            if significant and change > threshold
            else "improvement"
            if significant and change < -threshold
            else "unchanged"
        )
    return verdicts


def compare_pairs(
    pairs: list[tuple[str, pd.DataFrame, pd.DataFrame]], kind: str, earlier: list[list[pd.DataFrame]] | None = None
) -> pd.DataFrame:
    """Every case of every comparison, with the comparison's name and kind, the verdicts of
    ``compare`` and (single-run baselines only) the step-level time verdict. ``earlier``:
    for each pair, the runs that join its baseline (``compare --baseline-runs``)."""
    from bench.analyse.compare import compare_runs

    rows = []
    for index, (name, baseline, candidate) in enumerate(pairs):
        before = earlier[index] if earlier else []
        verdicts = compare_runs(baseline, candidate, earlier=before)
        verdicts["step_level_time"] = None if before else step_level_time_verdicts(baseline, candidate)
        rows.append(verdicts.assign(comparison=name, kind=kind))
    return pd.concat(rows, ignore_index=True)


def flagged(verdicts: pd.DataFrame, time_column: str = "time") -> pd.Series:
    """Per comparison: did it report any regression (and so fail a nightly job)?"""
    regression = (verdicts[time_column] == "regression") | (verdicts["memory"] == "regression")
    return regression.groupby(verdicts["comparison"]).any()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="unchanged runs, and slowed runs (default 10)")
    parser.add_argument("--slowdown", type=float, default=15.0, metavar="PERCENT", help="slow-down (default 15)")
    parser.add_argument("--repeats", type=int, help="override the smoke suite's repeats")
    parser.add_argument("--steps", type=int, help="override the smoke suite's timed steps per repeat")
    parser.add_argument(
        "--baseline-runs", type=int, default=5, metavar="N", help="runs in the several-run baseline (default 5)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "noise", help="output folder")
    parser.add_argument(
        "--analyse",
        action="store_true",
        help="measure nothing: judge the runs already in --out again (e.g. after a change to compare)",
    )
    args = parser.parse_args()
    design = [f"--{flag}={value}" for flag, value in (("repeats", args.repeats), ("steps", args.steps)) if value]
    out = args.out.resolve()
    if args.analyse:
        unchanged, slowed = load_runs(out, "aa"), load_runs(out, "slow")
        if not unchanged or len(unchanged) != len(slowed):
            parser.error(f"{out} holds {len(unchanged)} unchanged and {len(slowed)} slowed runs; nothing to analyse")
        args.runs = len(unchanged)
        first = unchanged[0].iloc[0]
        design = [f"--repeats={first['repeats']}", f"--steps={first['steps']}"]
        return analyse(out, args, design, unchanged, slowed)
    if out.exists() and any(out.iterdir()):
        parser.error(f"{out} is not empty; choose another --out")
    # Interleaved, so that a slowed run and the unchanged run it is compared with are measured
    # minutes apart at most, and each delay is calibrated on the unchanged run just before it:
    # the machine's own drift then neither adds to the slow-down nor hides it.
    unchanged, slowed, delays = [], [], []
    for i in range(args.runs):
        unchanged.append(run_smoke(out, f"aa-{i:02d}", design))
        delays.append(
            {
                f"{r.model}/{r.optimizer}/{r.batch_size}": r.step_time_ms * args.slowdown / 100
                for r in unchanged[-1].itertuples()
            }
        )
        slowed.append(run_smoke(out, f"slow-{i:02d}", design, delays[-1]))
    return analyse(out, args, design, unchanged, slowed)


def analyse(out: Path, args: argparse.Namespace, design: list[str], unchanged: list, slowed: list) -> int:
    """Judge every comparison; write comparisons.csv, summary.md and the figure."""
    env = json.loads((out / "aa-00" / "env.json").read_text())  # where and with what the runs were measured

    consecutive = compare_pairs(
        [(f"aa-{i:02d} vs aa-{i + 1:02d}", unchanged[i], unchanged[i + 1]) for i in range(args.runs - 1)],
        "A/A consecutive",
    )
    pairs = itertools.combinations(range(args.runs), 2)
    every_pair = compare_pairs(
        [(f"aa-{i:02d} vs aa-{j:02d}", unchanged[i], unchanged[j]) for i, j in pairs], "A/A every pair"
    )
    slow = compare_pairs(
        [(f"aa-{i:02d} vs slow-{i:02d}", unchanged[i], slowed[i]) for i in range(args.runs)],
        f"+{args.slowdown:g}% slow-down",
    )
    # compare --baseline-runs N: each unchanged run (and its slowed twin) against the N
    # unchanged runs before it, wrapping around to the last runs for the first ones (the
    # unchanged runs are exchangeable), so every run is a candidate once.
    n = args.baseline_runs
    before = [[(i - k) % args.runs for k in range(n, 0, -1)] for i in range(args.runs)]
    several = [[unchanged[j] for j in runs[:-1]] for runs in before]
    aa_several = compare_pairs(
        [
            (f"aa-{runs[-1]:02d}+{n - 1} vs aa-{i:02d}", unchanged[runs[-1]], unchanged[i])
            for i, runs in enumerate(before)
        ],
        f"A/A, baseline of {n} runs",
        several,
    )
    slow_several = compare_pairs(
        [
            (f"aa-{runs[-1]:02d}+{n - 1} vs slow-{i:02d}", unchanged[runs[-1]], slowed[i])
            for i, runs in enumerate(before)
        ],
        f"+{args.slowdown:g}% slow-down, baseline of {n} runs",
        several,
    )
    verdicts = pd.concat([consecutive, every_pair, slow, aa_several, slow_several], ignore_index=True)
    verdicts.to_csv(out / "comparisons.csv", index=False)
    summary = summarise(verdicts, env, unchanged, slowed, args, design)
    (out / "summary.md").write_text(summary)
    print(summary)
    from bench.reporting import figures

    figures.use_theme()
    figures.save(noise_figure(verdicts, args.slowdown), out / "noise")
    return 0


def current_commit() -> str | None:
    from bench.measure.env import collect_env

    return collect_env().get("git_commit")


def summarise(verdicts, env, unchanged, slowed, args, design) -> str:
    from bench.reporting.tables import markdown_table

    rows = []
    for kind, group in verdicts.groupby("kind", sort=False):
        changes = group["time_change"].abs() * 100
        several = group["step_level_time"].isna().all()
        tests = [("compare --baseline-runs", "time")] if several else []
        tests = tests or [("compare (Welch, repeats)", "time"), ("per-step Mann-Whitney", "step_level_time")]
        for test, column in tests:
            per_comparison = flagged(group, column)
            rows.append(
                {
                    "comparisons": kind,
                    "time test": test,
                    "reporting a regression": f"{int(per_comparison.sum())} / {len(per_comparison)}",
                    "case time regressions": f"{int((group[column] == 'regression').sum())} / {len(group)}",
                    "case memory regressions": f"{int((group['memory'] == 'regression').sum())} / {len(group)}",
                    "median abs change": f"{changes.median():.1f}%",
                    "max abs change": f"{changes.max():.1f}%",
                }
            )
    per_case = []
    for (model, optimizer, batch), group in pd.concat(unchanged).groupby(
        ["model", "optimizer", "batch_size"], sort=False
    ):
        steps = group["step_time_ms"]
        slowed_steps = pd.concat(slowed).query("model == @model and optimizer == @optimizer and batch_size == @batch")[
            "step_time_ms"
        ]
        realised = slowed_steps.to_numpy() / steps.to_numpy() - 1
        per_case.append(
            {
                "case": f"{model}/{optimizer}/b{batch}",
                "median step ms, unchanged (min-max)": f"{steps.median():.1f} ({steps.min():.1f}-{steps.max():.1f})",
                "run-to-run IQR / median": f"{(steps.quantile(0.75) - steps.quantile(0.25)) / steps.median():.1%}",
                "realised slow-down, median (min-max)": (
                    f"{np.median(realised):+.1%} ({realised.min():+.1%} to {realised.max():+.1%})"
                ),
            }
        )
    cases = pd.DataFrame(per_case)
    machine = (
        f"{env['cpu']['model']}, {env['cpu']['logical_cores']} logical cores, torch {env['torch']} "
        f"({env['cpu']['torch_threads']} threads), Python {platform.python_version()}, CPU only; "
        f"host {env['hostname']}, measured at commit {str(env['git_commit'])[:10]}, judged by compare at "
        f"commit {str(current_commit())[:10]}"
    )
    loads = pd.concat([*unchanged, *slowed])["load_average"]
    return (
        f"Machine: {machine}.\n\n"
        f"{args.runs} unchanged and {args.runs} slowed smoke runs, interleaved "
        f"({' '.join(design) or 'suite defaults'}); 1-minute load average after each run "
        f"{loads.min():.2f} to {loads.max():.2f}; 5% threshold, tests at 0.05 with Holm over the cases.\n\n"
        f"{markdown_table(pd.DataFrame(rows))}\n\n{markdown_table(cases)}\n"
    )


def noise_figure(verdicts: pd.DataFrame, slowdown: float):
    """Candidate / baseline median step time of every case in every comparison (log scale),
    by kind of comparison, with the 5% threshold (dashed) and the slow-down (dotted); cases
    ``compare`` flags as regressions in the second colour, and the all-cases rows of the
    several-run comparisons as diamonds (filled when flagged)."""
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import seaborn as sns

    from bench.analyse.compare import ALL_CASES
    from bench.reporting.figures import COLUMN

    shown = verdicts[verdicts["time_change"].notna()].assign(
        ratio=lambda f: 1 + f["time_change"].astype(float),
        flagged=lambda f: f["time"].map({"regression": "regression"}).fillna("no"),
    )
    cases, together = shown[shown["case"] != ALL_CASES], shown[shown["case"] == ALL_CASES]
    kinds = list(dict.fromkeys(shown["kind"]))
    figure, axes = plt.subplots(figsize=(COLUMN * 1.8, 2.8))
    sns.stripplot(
        data=cases,
        x="ratio",
        y="kind",
        order=kinds,
        hue="flagged",
        hue_order=["no", "regression"],
        jitter=0.25,
        size=3,
        log_scale=True,
        ax=axes,
    )
    for flag, face in (("no", "white"), ("regression", "black")):
        hit = together[together["flagged"] == flag]
        axes.scatter(
            hit["ratio"],
            hit["kind"].map(kinds.index),
            marker="D",
            s=28,
            facecolors=face,
            edgecolors="black",
            zorder=3,
            label=f"all cases: {flag}",
        )
    for x, style in ((1 / 1.05, "--"), (1.05, "--"), (1 + slowdown / 100, ":")):
        axes.axvline(x, color="black", linewidth=0.6, linestyle=style)
    ticks = [0.5, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0]
    low, high = shown["ratio"].min(), shown["ratio"].max()
    axes.xaxis.set_major_locator(matplotlib.ticker.FixedLocator([t for t in ticks if low / 1.1 <= t <= high * 1.1]))
    axes.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    axes.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    axes.set_xlabel("median step time, candidate / baseline")
    axes.set_ylabel("")
    axes.legend(title="time verdict", frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figure


if __name__ == "__main__":
    if sys.argv[1:2] == ["--as-convbench"]:
        sys.exit(as_convbench(sys.argv[2:]))
    sys.exit(main())

"""Verdicts on two training runs and training runs side by side on several devices.

Training records of one case (model, recipe, batch, precision, dataset, target) differ only
by seed, and the seeds are the replicates: a verdict asks whether the candidate's seeds
differ from the baseline's by more than seeds differ from one another.

- accuracy (final test accuracy): Welch's t-test over the seeds of each side; a change
  counts when it is larger than ``accuracy_threshold`` (absolute, default 0.5 percentage
  points) and significant after Holm's correction over every test of the comparison. With
  fewer than two seeds on a side the seed spread is unknown and the verdict is
  ``unchanged``, with a note.
- time (training time to the target accuracy): when every seed on both sides reached the
  target, Welch's t-test on the logarithms of the times (effects on time are ratios), with
  the step-time threshold (default 5%); when seeds missed the target, the fraction that
  reached it decides (fewer reaching is a regression, more an improvement), since a miss
  has no time to test.
- a case that failed (any seed not ``ok``) in the candidate but not the baseline is a
  regression of both; ``new`` and ``missing`` as for benchmark runs.

Matched cases must have been trained the same way (hyperparameters, target) on the same
kind of device and device name, else ``bench.analyse.compare.IncomparableError``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from bench.analyse.stats import holm, welch
from bench.record import TRAINING_TO_ACCURACY

GROUP_FIELDS = ("model", "recipe", "batch_size", "precision", "dataset", "target_accuracy")
COMPARABLE_FIELDS = ("hyperparameters", "device_name", "device_kind")
DEFAULT_ACCURACY_THRESHOLD = 0.005


def time_spread(times: pd.Series) -> tuple[float | None, float | None, float | None]:
    """Median, min, max of time to target with a miss (None) counted as infinitely slow."""
    values = pd.to_numeric(times, errors="coerce").fillna(np.inf).to_numpy(dtype=float)
    if not len(values):
        return None, None, None
    finite = [float(v) if np.isfinite(v) else None for v in (np.median(values), values.min(), values.max())]
    return finite[0], finite[1], finite[2]


def is_training(frame: pd.DataFrame) -> bool:
    """True if the records are a training run's (``convbench train``)."""
    return "kind" in frame and bool((frame["kind"] == TRAINING_TO_ACCURACY).any())


def _groups(frame: pd.DataFrame) -> dict[tuple, pd.DataFrame]:
    frame = frame.assign(device_kind=frame["device"].astype(str).str.split(":").str[0])
    return {key: runs for key, runs in frame.groupby(list(GROUP_FIELDS), sort=False, dropna=False)}


def _name(key: tuple) -> str:
    model, recipe, batch_size, precision, dataset, target = key
    return f"{model}/{recipe}/b{batch_size}/{precision}/{dataset}@{target:.1%}"


def mismatches(baseline: pd.DataFrame, candidate: pd.DataFrame) -> list[tuple[str, str, object, object]]:
    """(case, field, baseline value, candidate value) for each matched case whose seeds were
    trained differently (``COMPARABLE_FIELDS``)."""
    base, cand = _groups(baseline), _groups(candidate)
    found = []
    for key in base.keys() & cand.keys():
        for field in COMPARABLE_FIELDS:
            b, c = base[key][field].iloc[0], cand[key][field].iloc[0]
            if b != c:
                found.append((_name(key), field, b, c))
    return sorted(found, key=lambda m: (m[0], m[1]))


def _accuracy(runs: pd.DataFrame) -> np.ndarray:
    return pd.to_numeric(runs["final_test_accuracy"], errors="coerce").dropna().to_numpy(dtype=float)


def compare_training(
    baseline: pd.DataFrame,
    candidate: pd.DataFrame,
    threshold: float = 0.05,
    accuracy_threshold: float = DEFAULT_ACCURACY_THRESHOLD,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """One row per case of either run (baseline order, then new cases): ``accuracy`` and
    ``time`` verdicts, the medians over seeds behind them, the Holm-adjusted p-values and a
    note. Raises IncomparableError if matched cases were trained differently."""
    from bench.analyse.compare import IncomparableError

    found = mismatches(baseline, candidate)
    if found:
        raise IncomparableError(found)
    base, cand = _groups(baseline), _groups(candidate)
    rows, tests = [], []  # tests: (row index, column of the verdict, p-value, change, threshold)
    for key in [*base, *(k for k in cand if k not in base)]:
        b, c = base.get(key), cand.get(key)
        row = {"case": _name(key), "accuracy": "", "time": "", "note": ""}
        b_ok = b is not None and bool((b["status"] == "ok").all())
        c_ok = c is not None and bool((c["status"] == "ok").all())
        for side, runs in (("baseline", b), ("candidate", c)):
            ok = runs[runs["status"] == "ok"] if runs is not None else None
            row[f"{side}_accuracy"] = float(np.median(_accuracy(ok))) if ok is not None and len(_accuracy(ok)) else None
            row[f"{side}_time_s"] = time_spread(ok["time_to_target_s"])[0] if ok is not None and len(ok) else None
            row[f"{side}_reached"] = (
                f"{int(ok['time_to_target_s'].notna().sum())}/{len(runs)}" if ok is not None else ""
            )
        row["accuracy_p"] = row["time_p"] = None
        rows.append(row)
        if b is None or c is None:
            row["accuracy"] = row["time"] = "new" if b is None else "missing"
        elif b_ok != c_ok:
            row["accuracy"] = row["time"] = "regression" if b_ok else "improvement"
            row["note"] = "a seed failed in the " + ("candidate" if b_ok else "baseline")
        elif not b_ok:
            row["accuracy"] = row["time"] = "unchanged"
            row["note"] = "failed in both"
        else:
            tests += _tests(len(rows) - 1, row, b, c, threshold, accuracy_threshold)
    if tests:
        adjusted = holm([p for _, _, p, _, _ in tests])
        for (index, column, _, change, limit), p in zip(tests, adjusted, strict=True):
            rows[index][f"{column}_p"] = float(p)
            significant = p < alpha and abs(change) > limit
            worse = change < 0 if column == "accuracy" else change > 0
            rows[index][column] = ("regression" if worse else "improvement") if significant else "unchanged"
    return pd.DataFrame(rows)


def _tests(index: int, row: dict, b: pd.DataFrame, c: pd.DataFrame, threshold: float, accuracy_threshold: float):
    """Fill what can be decided without a test; return the tests still to adjust together."""
    tests = []
    notes = []
    b_accuracy, c_accuracy = _accuracy(b), _accuracy(c)
    if min(len(b_accuracy), len(c_accuracy)) < 2:
        row["accuracy"] = "unchanged"
        notes.append("one seed on a side: no spread to judge against")
    else:
        p = welch(c_accuracy, b_accuracy).p_value
        tests.append((index, "accuracy", p, float(np.median(c_accuracy) - np.median(b_accuracy)), accuracy_threshold))
    b_times, c_times = b["time_to_target_s"], c["time_to_target_s"]
    b_reached, c_reached = b_times.notna().mean(), c_times.notna().mean()
    if b_reached != c_reached:
        row["time"] = "regression" if c_reached < b_reached else "improvement"
        notes.append("reached the target in fewer seeds" if c_reached < b_reached else "reached it in more seeds")
    elif b_reached == 0:
        row["time"] = "unchanged"
        notes.append("target reached in neither run")
    elif min(len(b_times), len(c_times)) < 2:
        row["time"] = "unchanged"
        notes.append("one seed on a side: no spread to judge time against")
    else:
        log_b, log_c = np.log(b_times.to_numpy(dtype=float)), np.log(c_times.to_numpy(dtype=float))
        p = welch(log_c, log_b).p_value
        tests.append((index, "time", p, math.expm1(float(np.median(log_c) - np.median(log_b))), threshold))
    row["note"] = "; ".join(notes)
    return tests


def has_regression(verdicts: pd.DataFrame) -> bool:
    return bool(((verdicts["accuracy"] == "regression") | (verdicts["time"] == "regression")).any())


def readable(verdicts: pd.DataFrame) -> pd.DataFrame:
    """The verdicts rounded and labelled for a table (accuracy in %, time in s)."""

    def number(value: object, scale: float = 1.0, digits: int = 2) -> str:
        return (
            "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value * scale:.{digits}f}"
        )

    def p_value(value: object) -> str:
        return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2g}"

    return pd.DataFrame(
        {
            "case": verdicts["case"],
            "accuracy": verdicts["accuracy"],
            "baseline acc. %": verdicts["baseline_accuracy"].map(lambda v: number(v, 100)),
            "candidate acc. %": verdicts["candidate_accuracy"].map(lambda v: number(v, 100)),
            "p (acc.)": verdicts["accuracy_p"].map(p_value),
            "time": verdicts["time"],
            "baseline s to target": verdicts["baseline_time_s"].map(number),
            "candidate s to target": verdicts["candidate_time_s"].map(number),
            "reached": verdicts["baseline_reached"] + " -> " + verdicts["candidate_reached"],
            "p (time)": verdicts["time_p"].map(p_value),
            "note": verdicts["note"],
        }
    )


def summary(verdicts: pd.DataFrame) -> str:
    """One line: how many cases got each verdict, for accuracy and for time to target."""
    parts = []
    for aspect in ("accuracy", "time"):
        counts = verdicts[aspect].value_counts()
        parts.append(f"{aspect}: " + ", ".join(f"{n} {verdict}" for verdict, n in counts.items()))
    return "; ".join(parts)


def side_by_side(frames: Sequence[pd.DataFrame], labels: list[str], reference: str) -> tuple[pd.DataFrame, list[str]]:
    """Training runs of one suite on different devices (``labels`` name them), per case and
    device: median time to target over seeds, its speed-up over the ``reference`` device
    (reference time / this device's time), median final accuracy and training throughput.
    Returns the long table and a sentence per case some device lacks or never reached."""
    rows = []
    for label, frame in zip(labels, frames, strict=True):
        for key, runs in _groups(frame).items():
            ok = runs[runs["status"] == "ok"]
            rows.append(
                {
                    "case": _name(key),
                    "device": label,
                    "status": "ok" if len(ok) == len(runs) else "failed",
                    "time_to_target_s": time_spread(ok["time_to_target_s"])[0] if len(ok) else None,
                    "final_accuracy": float(np.median(_accuracy(ok))) if len(_accuracy(ok)) else None,
                    "train_throughput": float(pd.to_numeric(ok["train_throughput"]).median()) if len(ok) else None,
                    "seeds": len(runs),
                }
            )
    table = pd.DataFrame(rows)
    reference_time = table[table["device"] == reference].set_index("case")["time_to_target_s"]
    table["speedup"] = pd.to_numeric(table["case"].map(reference_time), errors="coerce") / pd.to_numeric(
        table["time_to_target_s"], errors="coerce"
    )
    table.attrs["speedup_of"] = "time to target"
    notes = []
    for case in dict.fromkeys(table["case"]):
        present = table[table["case"] == case]
        absent = [label for label in labels if label not in set(present["device"])]
        missed = [r.device for r in present.itertuples() if r.time_to_target_s is None or pd.isna(r.time_to_target_s)]
        if absent:
            notes.append(f"{case} is missing on {', '.join(absent)}")
        if missed:
            notes.append(f"{case}: median time to target not reached on {', '.join(missed)}")
    return table, notes


def side_by_side_wide(table: pd.DataFrame) -> pd.DataFrame:
    """One row per case; per device its median time to target, speed-up and final accuracy."""
    wide = pd.DataFrame({"case": list(dict.fromkeys(table["case"]))})
    for device in dict.fromkeys(table["device"]):
        rows = table[table["device"] == device].set_index("case")
        wide[f"{device} s to target"] = wide["case"].map(pd.to_numeric(rows["time_to_target_s"]).round(2))
        wide[f"{device} speed-up"] = wide["case"].map(rows["speedup"].round(2))
        wide[f"{device} final acc. %"] = wide["case"].map((pd.to_numeric(rows["final_accuracy"]) * 100).round(2))
    return wide

"""Verdicts on two runs of the same suite, trends over many, and GPUs side by side.

Everything here takes Records as DataFrames (``Run.frame()`` or ``history.records``) and
returns DataFrames; the CLI formats them.

Cases are matched on ``CASE_FIELDS``. Two matched cases are only compared if they were
measured the same way: every ``PROTOCOL_FIELDS`` value, the device kind (cpu / cuda) and the
device name must agree, else ``IncomparableError`` names the case and the field (putting
different GPUs side by side is ``side_by_side``'s job, not a verdict's).

Each case gets two verdicts, one for step time and one for memory, each one of
``VERDICTS``:

- time: ``regression`` if the candidate's median step time is more than ``threshold``
  (5%) above the baseline's *and* the change is significant at ``alpha`` (0.05) after
  Holm's correction over all cases of the comparison (so that the chance of a false alarm
  anywhere in a run stays at most alpha); ``improvement`` likewise below; otherwise
  ``unchanged``. The test is Welch's t-test on the logarithms of the per-repeat medians
  (``step_time_samples_ms`` holds ``repeats`` blocks of ``steps`` samples, in order): steps
  within one repeat share its conditions (clock speed, other processes, a GC pause), so
  treating them as independent overstates the evidence, and a comparison across runs must
  be judged against how much whole repeats vary. A case with fewer than two repeats on
  either side cannot be tested and is ``unchanged``, with a note.

  With ``earlier`` runs (the runs before the baseline, same suite and machine) the baseline
  is several runs, and the test changes to what several runs make possible: a prediction
  test on the logarithms of the runs' median step times. With the baseline runs' log
  medians x (n of them, n >= ``MIN_BASELINE_RUNS``) and the candidate's y,
  t = (y - mean x) / (sd x * sqrt(1 + 1/n)) with n - 1 degrees of freedom: is the candidate
  outside what this machine gives from one run to the next? Two runs differ by more than
  their repeats do (another process, clock and thermal state, memory placement), and one
  baseline run cannot show that spread; several can. The change is then measured from the
  geometric mean of the baseline runs' medians, and memory is judged against the baseline
  run itself (the latest). One more row, ``ALL_CASES``, applies the same test to each run's
  geometric mean over the cases that ran in every run: a slow-down of everything shows
  there long before it stands out in any one case, whose own run-to-run noise averages out
  over the cases. It counts as a regression like any case.
- memory: the byte counts that the configuration fixes (``EXACT_MEMORY_FIELDS``: parameter,
  gradient and optimizer-state bytes) must match exactly, so any increase is a regression
  and any decrease an improvement; peak memory (a single reading per case, so no test is
  possible) counts when it moves by more than ``memory_threshold`` (10%).
- a case that ran in the baseline but failed in the candidate (oom, error, diverged) is a
  regression of both; the reverse an improvement of both.
- ``new``: the case is only in the candidate; ``missing``: only in the baseline.

A case measured while other processes used more than ``bench.measure.load.BUSY_FRACTION`` of the
CPUs, on either side, says so in its note: its verdict may be the neighbours', not the code's.
"""

from __future__ import annotations

import bisect
import itertools
import math
import numbers
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench import defaults
from bench.analyse.stats import holm, student_t_two_sided, welch
from bench.measure.load import BUSY_FRACTION
from bench.record import (
    CASE_FIELDS,
    DATA_PARALLEL,
    OPTIMIZER_STEP,
    PROTOCOL_FIELDS,
    REPEAT_MEDIANS,
    TRAINING_STEP,
    TRAINING_TO_ACCURACY,
    repeat_medians,
)
from bench.reporting.tables import step_peak_bytes

VERDICTS = ("regression", "improvement", "unchanged", "new", "missing")
DEFAULT_THRESHOLD = defaults.THRESHOLD
DEFAULT_MEMORY_THRESHOLD = defaults.MEMORY_THRESHOLD
DEFAULT_ALPHA = defaults.ALPHA
#: Fewest baseline runs for the between-run test (two leave one degree of freedom and a
#: prediction interval too wide to call anything); with fewer, Welch on repeats.
MIN_BASELINE_RUNS = 3
#: The row that judges every case together (several-run baselines only).
ALL_CASES = "all cases (geometric mean)"
EXACT_MEMORY_FIELDS = ("param_bytes", "grad_bytes", "optimizer_state_bytes")
#: What must agree besides the case itself for two measurements to be comparable.
COMPARABLE_FIELDS = (*PROTOCOL_FIELDS, "device_kind", "device_name")
#: Protocol fields that records from before them lack: a missing value (None) is not held
#: against a value, so the first run after an upgrade still compares with the night before.
LATER_FIELDS = ("threads",)
#: Every Record field a step-time or memory verdict reads: a record holding these (the
#: samples, or their per-repeat medians under REPEAT_MEDIANS in their place, as the history
#: keeps them) is judged as the whole record would be.
VERDICT_FIELDS = tuple(
    dict.fromkeys(
        (*CASE_FIELDS, *PROTOCOL_FIELDS, "case_id", "suite", "kind", "recipe", "device", "device_name", "status")
        + ("error", "step_time_ms", "step_time_samples_ms", *EXACT_MEMORY_FIELDS, "peak_memory_bytes")
        + ("tracked_peak_bytes", "peak_memory_source", "other_cpu_fraction")
    )
)


class IncomparableError(ValueError):
    """Matched cases that were measured differently; ``mismatches`` lists each one."""

    def __init__(self, mismatches: list[tuple[str, str, object, object]]) -> None:
        self.mismatches = mismatches
        lines = [f"  {case}: {field} differs (baseline {b!r}, candidate {c!r})" for case, field, b, c in mismatches]
        super().__init__("refusing to compare cases measured differently:\n" + "\n".join(lines))


class DifferentRunsError(IncomparableError):
    """Two runs that share nothing to compare: different kinds of run, different suites
    side by side, or no case in common."""

    def __init__(self, message: str) -> None:
        self.mismatches = []
        ValueError.__init__(self, message)


#: What a run measured, by its records: the training step, the optimizer step alone, or
#: training to a target accuracy.
RUN_KINDS = {
    "training-step": "a training-step benchmark",
    "optimizer-step": "an optimizer-step",
    "training": "a training-to-accuracy",
}


def joins_baseline(run: pd.DataFrame, baseline: pd.DataFrame) -> bool:
    """Whether an earlier ``run`` can join ``baseline`` in a several-run baseline: it shares
    a case with it, and every case they share was measured the same way."""
    return _joins(_by_case(_rows(run), "earlier"), _by_case(_rows(baseline), "baseline"))


def _joins(run: Cases, baseline: Cases) -> bool:
    shared = {r["case_id"] for r in run.values()} & {r["case_id"] for r in baseline.values()}
    return bool(shared) and not _mismatches(run, baseline)


#: The run kind (``RUN_KINDS``) of each record kind (``bench.record.KINDS``): data-parallel
#: steps are compared as training steps are.
_RUN_KIND_OF = {
    TRAINING_STEP: "training-step",
    DATA_PARALLEL: "training-step",
    OPTIMIZER_STEP: "optimizer-step",
    TRAINING_TO_ACCURACY: "training",
}


def run_kind(frame: pd.DataFrame) -> str:
    """What a run's records measured, by their ``kind``: ``training`` for ``convbench train``'s
    runs, ``optimizer-step`` for ``convbench optim``'s, else ``training-step``."""
    return records_kind(_rows(frame, ("kind",)))


def records_kind(records: Sequence[dict]) -> str:
    """``run_kind`` of a run's records as dicts."""
    kinds = {_RUN_KIND_OF.get(_hashable(record.get("kind")), "training-step") for record in records}
    if "training" in kinds:
        return "training"
    return kinds.pop() if len(kinds) == 1 else "training-step"


def check_same_kind(frames: Sequence[pd.DataFrame], names: Sequence[str]) -> None:
    """Raise DifferentRunsError naming each run's kind if ``frames`` are not all one kind."""
    kinds = [run_kind(frame) for frame in frames]
    if len(set(kinds)) > 1:
        described = ", ".join(f"{name} is {RUN_KINDS[kind]} run" for name, kind in zip(names, kinds, strict=True))
        raise DifferentRunsError(f"runs of different kinds cannot be compared: {described}")


_PLAIN = frozenset((str, int, bool, type(None)))


def _values(record: dict, fields: Sequence[str]) -> tuple:
    """``_hashable`` of each field of ``record``; plain values (most of them) pass without a call."""
    return tuple(value if type(value) in _PLAIN else _hashable(value) for value in map(record.get, fields))


def _hashable(value: object) -> object:
    if value is None or isinstance(value, str | int):  # the common case first: this runs for every field
        return value
    # A field missing from older records (NaN in a frame, or absent) means "not set", as None does.
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, list | tuple | np.ndarray):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


#: A run's records by case (the ``CASE_FIELDS`` values), each read once by ``_by_case``.
Cases = dict[tuple, dict]


def _rows(frame: pd.DataFrame, columns: Iterable[str] | None = None) -> list[dict]:
    """The frame's rows as dicts of plain Python values, only ``columns`` (default all);
    column by column, which is several times faster than ``DataFrame.to_dict``."""
    names = list(frame.columns) if columns is None else [c for c in columns if c in frame.columns]
    values = [frame[name].tolist() for name in names]
    return [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]


def _by_case(records: Iterable[dict], which: str) -> Cases:
    """The records by case, each with what every comparison reads worked out once: the
    device kind, the median step time (the Record's ``step_time_ms``, the median of every
    timed step; from the samples where a record lacks it) and the per-repeat medians."""
    cases: Cases = {}
    for record in records:
        key = _values(record, CASE_FIELDS)
        if key in cases:
            raise ValueError(f"the {which} run holds case {record['case_id']} twice")
        record = dict(record)
        record["device_kind"] = str(record.get("device", "")).split(":")[0]
        record["measured_as"] = _values(record, COMPARABLE_FIELDS)
        if REPEAT_MEDIANS not in record:
            record[REPEAT_MEDIANS] = repeat_medians(record)
        record["median_ms"] = _median_step(record, which) if record.get("status") == "ok" else None
        cases[key] = record
    return cases


def mismatches(baseline: pd.DataFrame, candidate: pd.DataFrame) -> list[tuple[str, str, object, object]]:
    """(case id, field, baseline value, candidate value) for each matched case and each
    ``COMPARABLE_FIELDS`` field on which the two disagree."""
    return _mismatches(_by_case(_rows(baseline), "baseline"), _by_case(_rows(candidate), "candidate"))


def _mismatches(base: Cases, cand: Cases) -> list[tuple[str, str, object, object]]:
    found = []
    for key in base.keys() & cand.keys():
        if base[key]["measured_as"] == cand[key]["measured_as"]:
            continue
        for field in COMPARABLE_FIELDS:
            b, c = base[key].get(field), cand[key].get(field)
            differ = _hashable(b) != _hashable(c)
            if differ and not (field in LATER_FIELDS and None in (_hashable(b), _hashable(c))):
                found.append((base[key]["case_id"], field, b, c))
    return sorted(found, key=lambda m: (m[0], m[1]))


def _number(value: object) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def _relative_change(before: float | None, after: float | None) -> float | None:
    if before is None or after is None or before == 0:
        return None
    return after / before - 1.0


def _median_step(record: dict, side: str) -> float | None:
    """An ok record's median step time, ms: its ``step_time_ms``, else the median of its
    samples; every sample and the median must be a measurement (``_step_samples``)."""
    samples = _step_samples(record, side)
    median = _number(record.get("step_time_ms"))
    if median is None and samples:
        median = float(np.median(samples))
    if median is not None and not (math.isfinite(median) and median > 0):
        raise DifferentRunsError(
            f"the {side}'s case {record.get('case_id')} has a median step time of {median!r} ms, which is no "
            "measurement: compare judges finite step times above zero only"
        )
    return median


def _step_samples(record: dict, side: str) -> list[float]:
    """The record's step-time samples (ms), every one finite and above zero: a NaN, an
    infinity, zero or a negative time is no measurement, and judging it would give a verdict
    (``unchanged``, or a logarithm's NaN) about nothing. Raises DifferentRunsError naming
    the side, the case and the value."""
    samples = list(record.get("step_time_samples_ms") or [])
    for sample in samples:
        if isinstance(sample, bool) or not isinstance(sample, numbers.Real) or not math.isfinite(sample) or sample <= 0:
            raise DifferentRunsError(
                f"the {side}'s case {record.get('case_id')} has a step time of {sample!r} ms, which is no "
                "measurement: compare judges finite step times above zero only"
            )
    return samples


def between_runs(baseline_ms: Sequence[float], candidate_ms: float) -> tuple[float, float]:
    """The candidate run's median step time against several baseline runs' medians: the
    change from their geometric mean and the two-sided p-value of the prediction t-test on
    logarithms (Student's t, n - 1 degrees of freedom)."""
    logs = np.log(np.asarray(baseline_ms, dtype=float))
    if len(logs) < 2:
        raise ValueError(f"the between-run test needs at least two baseline runs, got {len(logs)}")
    centre, spread = float(logs.mean()), float(logs.std(ddof=1))
    difference = math.log(candidate_ms) - centre
    change = math.expm1(difference)
    if spread == 0.0:
        return change, float(difference == 0.0)
    t = difference / (spread * math.sqrt(1.0 + 1.0 / len(logs)))
    return change, student_t_two_sided(t, len(logs) - 1)


def _verdict(change: float | None, threshold: float, significant: bool = True) -> str:
    if change is None or not significant:
        return "unchanged"
    if change > threshold:
        return "regression"
    if change < -threshold:
        return "improvement"
    return "unchanged"


def judged_peak_field(base: dict, cand: dict) -> str:
    """The peak the memory verdict is on: ``tracked_peak_bytes`` (the memory pass's tensor
    tracker, exact) where both sides are CPU records that have it, since a CPU's
    ``peak_memory_bytes`` is the whole process's resident set, which grows with whatever ran
    earlier in the process; else ``peak_memory_bytes``."""
    on_cpu = all(str(r.get("peak_memory_source") or "").startswith("process_rss") for r in (base, cand))
    tracked = all(_number(r.get("tracked_peak_bytes")) is not None for r in (base, cand))
    return "tracked_peak_bytes" if on_cpu and tracked else "peak_memory_bytes"


def _memory_verdict(base: dict, cand: dict, memory_threshold: float) -> str:
    verdicts = []
    for field in EXACT_MEMORY_FIELDS:
        b, c = _number(base.get(field)), _number(cand.get(field))
        if b is not None and c is not None:
            verdicts.append("regression" if c > b else "improvement" if c < b else "unchanged")
    field = judged_peak_field(base, cand)
    peak = _relative_change(_number(base.get(field)), _number(cand.get(field)))
    verdicts.append(_verdict(peak, memory_threshold))
    for verdict in ("regression", "improvement"):
        if verdict in verdicts:
            return verdict
    return "unchanged"


def _busy_note(base: dict | None, cand: dict | None) -> str:
    """Which side was measured while other processes took more than ``BUSY_FRACTION`` of the
    CPUs (``other_cpu_fraction``, bench.measure.load): its step times say as much about them."""
    parts = []
    for side, record in (("baseline", base), ("candidate", cand)):
        share = _number(record.get("other_cpu_fraction")) if record else None
        if share is not None and share > BUSY_FRACTION:
            parts.append(f"{side} measured under load (other processes used {share:.0%} of the CPUs)")
    return "; ".join(parts)


#: How a kind of run judges its own records (``bench.kinds``): baseline, candidate -> verdicts
#: with at least ``case`` and ``time`` columns. Training to accuracy judges its seeds so.
KindJudge = Callable[..., pd.DataFrame]


def compare_runs(
    baseline: pd.DataFrame,
    candidate: pd.DataFrame,
    threshold: float = DEFAULT_THRESHOLD,
    memory_threshold: float = DEFAULT_MEMORY_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
    earlier: Sequence[pd.DataFrame] = (),
    judge: KindJudge | None = None,
) -> pd.DataFrame:
    """One row per case of either run, baseline order first, then the new cases: its
    verdicts and the figures behind them. ``earlier``: runs before the baseline (same suite,
    same machine) that join it as a several-run baseline for step time. ``judge``: the runs'
    kind's own comparison, called as ``judge(baseline, candidate, threshold=, alpha=)``, for
    kinds that are not judged on step times (``bench.kinds.compare_runs`` gives training runs
    theirs; ``earlier`` does not apply to them).

    Raises:
        IncomparableError: matched cases were measured differently.
        DifferentRunsError: a run has no records, the runs are of different kinds
            (``run_kind``), or they share no case.
    """
    for frame, which in ((baseline, "baseline"), (candidate, "candidate")):
        if frame.empty:
            raise DifferentRunsError(f"the {which} has no records: nothing to compare")
    check_same_kind([baseline, candidate], ["the baseline", "the candidate"])
    if judge is not None:
        verdicts = judge(baseline, candidate, threshold=threshold, alpha=alpha)
    else:
        verdicts = _compare_steps(baseline, candidate, threshold, memory_threshold, alpha, earlier)
    if len(verdicts) and verdicts["time"].isin(["new", "missing"]).all():
        raise DifferentRunsError(
            f"the two runs have no case in common ({_cases(baseline)} in the baseline, {_cases(candidate)} in the "
            "candidate): every case would be new or missing; compare runs of one suite"
        )
    return verdicts


def _cases(frame: pd.DataFrame) -> str:
    suites = ", ".join(sorted(set(frame["suite"].dropna()))) if "suite" in frame else ""
    return f"{len(frame)} case{'s' if len(frame) != 1 else ''}" + (f" of {suites}" if suites else "")


def _compare_steps(
    baseline: pd.DataFrame,
    candidate: pd.DataFrame,
    threshold: float,
    memory_threshold: float,
    alpha: float,
    earlier: Sequence[pd.DataFrame],
) -> pd.DataFrame:
    """``compare_runs`` for two benchmark runs (training step or optimizer step)."""
    base, cand = _by_case(_rows(baseline), "baseline"), _by_case(_rows(candidate), "candidate")
    older = [_by_case(_rows(run), "baseline") for run in earlier]
    found = _mismatches(base, cand)
    for run in older:
        found += _mismatches(run, base)
    if found:
        raise IncomparableError(found)
    return pd.DataFrame(_judge_steps(base, cand, older, threshold, memory_threshold, alpha), columns=VERDICT_COLUMNS)


#: The columns of ``compare_runs``'s verdicts on benchmark runs.
VERDICT_COLUMNS = [
    "case",
    "time",
    "baseline_ms",
    "candidate_ms",
    "time_change",
    "p_value",
    "memory",
    "baseline_state_bytes",
    "candidate_state_bytes",
    "peak_change",
    "note",
]


def _judge_steps(
    base: Cases, cand: Cases, earlier: Sequence[Cases], threshold: float, memory_threshold: float, alpha: float
) -> list[dict]:
    """The verdict rows (``VERDICT_COLUMNS``) of two benchmark runs whose matched cases were
    measured alike, ``earlier`` (oldest first) joining the baseline."""
    # Each case's median step time in every baseline run where it ran, oldest first.
    history_ms: dict[tuple, list[float]] = {}
    for run_cases in [*earlier, base]:
        for key, record in run_cases.items():
            if record["median_ms"] is not None:
                history_ms.setdefault(key, []).append(record["median_ms"])
    rows = []
    tested: list[int] = []  # rows whose time verdict rests on the rank test
    p_values: list[float] = []
    candidate_ms: dict[tuple, float] = {}  # the candidate's median step time of each case that ran
    for key in [*base, *(k for k in cand if k not in base)]:
        b, c = base.get(key), cand.get(key)
        row = {"case": (b or c)["case_id"], "time": "", "memory": "", "note": ""}
        b_ok, c_ok = b is not None and b.get("status") == "ok", c is not None and c.get("status") == "ok"
        row["baseline_ms"] = b["median_ms"] if b_ok else None
        row["candidate_ms"] = c["median_ms"] if c_ok else None
        row["time_change"] = _relative_change(row["baseline_ms"], row["candidate_ms"])
        if row["candidate_ms"] is not None:
            candidate_ms[key] = row["candidate_ms"]
        row["p_value"] = None
        row["baseline_state_bytes"] = b.get("optimizer_state_bytes") if b else None
        row["candidate_state_bytes"] = c.get("optimizer_state_bytes") if c else None
        field = judged_peak_field(b, c) if b_ok and c_ok else "peak_memory_bytes"
        row["peak_change"] = _relative_change(
            _number(b.get(field)) if b_ok else None,
            _number(c.get(field)) if c_ok else None,
        )
        if b is None:
            row["time"] = row["memory"] = "new"
        elif c is None:
            row["time"] = row["memory"] = "missing"
        elif b_ok and not c_ok:
            row["time"] = row["memory"] = "regression"
            row["note"] = f"candidate {c.get('status')}: {c.get('error') or ''}".rstrip(": ")
        elif c_ok and not b_ok:
            row["time"] = row["memory"] = "improvement"
            row["note"] = f"baseline {b.get('status')}"
        elif not b_ok:
            row["time"] = row["memory"] = "unchanged"
            row["note"] = f"both failed ({b.get('status')}, {c.get('status')})"
        else:
            row["memory"] = _memory_verdict(b, c, memory_threshold)
            b_repeats, c_repeats = b[REPEAT_MEDIANS], c[REPEAT_MEDIANS]
            runs_ms = history_ms.get(key, [])
            if earlier and len(runs_ms) >= MIN_BASELINE_RUNS and row["candidate_ms"]:
                change, p = between_runs(runs_ms, row["candidate_ms"])
                row["baseline_ms"] = math.exp(float(np.mean(np.log(runs_ms))))
                row["time_change"] = change
                row["note"] = f"baseline: {len(runs_ms)} runs"
                tested.append(len(rows))
                p_values.append(p)
            elif b_repeats and c_repeats and len(b_repeats) >= 2 and len(c_repeats) >= 2:
                if earlier:
                    row["note"] = f"baseline: {len(runs_ms)} runs, too few for the between-run test; repeats tested"
                tested.append(len(rows))
                p_values.append(welch(np.log(c_repeats), np.log(b_repeats)).p_value)
            else:
                row["time"] = "unchanged"
                row["note"] = "not tested: needs step-time samples of at least two repeats on each side"
        row["note"] = "; ".join(note for note in (row["note"], _busy_note(b, c)) if note)
        rows.append(row)
    for index, p in zip(tested, holm(p_values), strict=True):
        rows[index]["p_value"] = float(p)
        rows[index]["time"] = _verdict(rows[index]["time_change"], threshold, significant=p < alpha)
    if earlier:
        rows += _all_cases_row(history_ms, candidate_ms, len(earlier) + 1, threshold, alpha)
    return rows


def _all_cases_row(
    history_ms: dict[tuple, list[float]], candidate_ms: dict[tuple, float], runs: int, threshold: float, alpha: float
) -> list[dict]:
    """The ALL_CASES row: each run's geometric mean of the median step times of the cases
    that ran (ok) in the candidate and in all ``runs`` baseline runs (``history_ms`` holds a
    case's medians over the baseline runs where it ran), candidate against baseline runs with
    ``between_runs``. None if there are fewer than MIN_BASELINE_RUNS runs or two cases."""
    keys = [key for key in candidate_ms if len(history_ms.get(key, ())) == runs]
    if runs < MIN_BASELINE_RUNS or len(keys) < 2:
        return []
    logs = np.log([history_ms[key] for key in keys])  # cases x runs
    runs_ms = np.exp(logs.mean(axis=0)).tolist()
    candidate = math.exp(float(np.mean(np.log([candidate_ms[key] for key in keys]))))
    change, p = between_runs(runs_ms, candidate)
    return [
        {
            "case": ALL_CASES,
            "time": _verdict(change, threshold, significant=p < alpha),
            "memory": "",
            "note": f"baseline: {runs} runs; {len(keys)} cases",
            "baseline_ms": math.exp(float(np.mean(np.log(runs_ms)))),
            "candidate_ms": candidate,
            "time_change": change,
            "p_value": p,
            "baseline_state_bytes": None,
            "candidate_state_bytes": None,
            "peak_change": None,
        }
    ]


def has_regression(verdicts: pd.DataFrame) -> bool:
    """True if any case regressed in step time or in memory (training: accuracy or time to target)."""
    aspects = [column for column in ("time", "memory", "accuracy") if column in verdicts]
    return bool((verdicts[aspects] == "regression").any(axis=None))


def readable(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Step runs' verdicts with their figures rounded and labelled for a table."""

    def percent(value: object) -> str:
        number = _number(value)
        return "" if number is None else f"{number * 100:+.1f}%"

    def state(row: pd.Series) -> str:
        b, c = _number(row["baseline_state_bytes"]), _number(row["candidate_state_bytes"])
        if b is None or c is None or b == c:
            return "" if b is None and c is None else f"{int(b if b is not None else c):,}"
        return f"{int(b):,} -> {int(c):,}"

    return pd.DataFrame(
        {
            "case": verdicts["case"],
            "time": verdicts["time"],
            "baseline ms": verdicts["baseline_ms"].astype(float).round(2),
            "candidate ms": verdicts["candidate_ms"].astype(float).round(2),
            "change": verdicts["time_change"].map(percent),
            "p (Holm)": verdicts["p_value"].map(lambda p: "" if _number(p) is None else f"{p:.2g}"),
            "memory": verdicts["memory"],
            "state bytes": verdicts.apply(state, axis=1) if len(verdicts) else [],
            "peak": verdicts["peak_change"].map(percent),
            "note": verdicts["note"],
        }
    )


def summary(verdicts: pd.DataFrame) -> str:
    """One line: how many cases of step runs got each verdict, for time and for memory (and
    the verdict on all cases together, where there is one)."""
    cases = verdicts[verdicts["case"] != ALL_CASES]
    parts = []
    for aspect in ("time", "memory"):
        counts = cases[aspect].value_counts()
        parts.append(f"{aspect}: " + ", ".join(f"{counts[v]} {v}" for v in VERDICTS if v in counts))
    for row in verdicts[verdicts["case"] == ALL_CASES].itertuples():
        parts.append(f"all cases: {row.time} ({row.time_change * 100:+.1f}%)")
    return "; ".join(parts)


#: What one series of ``flag_history`` shares: one suite, with one content (what it measured,
#: ``bench.storage.baselines``; where the records say), on one machine.
SERIES_KEYS = ("suite", "suite_content", "machine")


def flag_history(
    history: pd.DataFrame, baseline_runs: int = 1, baseline_tag: str | None = None, **options: float
) -> pd.DataFrame:
    """``history`` (records of many runs, with ``started`` and ``machine``; ``suite_content``
    and ``run_tags`` where ``bench.storage.history.records`` gives them) with ``time`` and
    ``memory`` verdicts added: each run compared with the complete run before it of the same
    suite and suite content on the same machine (and with ``baseline_runs`` > 1, the runs
    before that too), as ``compare previous RUN --baseline-runs N`` would; with
    ``baseline_tag`` only runs tagged so are baselines. ``all_cases`` holds the run's
    all-cases verdict where there is one, ``baseline_runs`` how many runs it was judged
    against. The first run of each series, and cases measured differently from the run
    before, get no verdict (None). Training runs have no step times to trend and are left
    out. ``flag_series`` does the judging, one series at a time."""
    if "kind" in history:
        history = history[history["kind"] != TRAINING_TO_ACCURACY]
    flagged = []
    keys = [key for key in SERIES_KEYS if key in history]
    for _, series in history.groupby(keys, sort=False, dropna=False):
        order = series.drop_duplicates("run_id").sort_values(["started", "run_id"])["run_id"].tolist()
        by_run = dict(tuple(series.groupby("run_id", sort=False)))
        runs = [
            SeriesRun(
                run_id,
                _run_status(by_run[run_id]),
                _rows(by_run[run_id], VERDICT_FIELDS),
                baseline_tag is None or baseline_tag in _tags(by_run[run_id]),
            )
            for run_id in order
        ]
        for run, verdicts in zip(runs, flag_series(runs, baseline_runs, **options), strict=True):
            current = by_run[run.run_id].copy()
            current["time"] = [verdicts.time.get(case) for case in current["case_id"]]
            current["memory"] = [verdicts.memory.get(case) for case in current["case_id"]]
            current["all_cases"] = verdicts.all_cases
            current["baseline_runs"] = len(verdicts.baseline)
            flagged.append(current)
    if not flagged:
        return history.assign(time=None, memory=None, all_cases=None, baseline_runs=0)
    return pd.concat(flagged)


def _tags(run: pd.DataFrame) -> tuple[str, ...]:
    # Records read from run folders carry no tags: such a run is tagged nothing.
    return tuple(run["run_tags"].iloc[0]) if "run_tags" in run else ()


def _run_status(run: pd.DataFrame) -> str:
    # A frame without run statuses (records read from run folders) counts as complete runs.
    return run["run_status"].iloc[0] if "run_status" in run else "complete"


@dataclass(frozen=True)
class SeriesRun:
    """One run of a series (one suite on one machine) for ``flag_series``: its id, its status
    (only ``complete`` runs become baselines), its records as dicts holding at least the
    ``VERDICT_FIELDS`` they have (the step-time samples, or ``REPEAT_MEDIANS`` instead), and
    whether it may be a baseline at all (False: judged, never judged against)."""

    run_id: str
    status: str | None
    records: list[dict]
    baseline: bool = True


@dataclass(frozen=True)
class RunVerdicts:
    """A run's verdicts against the runs before it: ``time`` and ``memory`` by case id (cases
    not judged are absent), the all-cases verdict where there is one, and ``baseline``: the
    run ids judged against, oldest first, the previous run last (empty: none)."""

    time: dict[str, str]
    memory: dict[str, str]
    all_cases: str | None
    baseline: tuple[str, ...]


NO_VERDICTS = RunVerdicts({}, {}, None, ())


def flag_series(
    runs: Sequence[SeriesRun], baseline_runs: int = 1, judge: range | None = None, **options: float
) -> list[RunVerdicts]:
    """Each of ``runs`` (one suite on one machine, oldest first) judged as ``compare previous
    RUN --baseline-runs N`` judges it: against the complete run before it and, with
    ``baseline_runs`` N > 1, the N - 1 complete runs before that which share a case with it
    measured the same way. Cases measured differently from the previous run get no verdict;
    a run of another kind than the previous one, or with no case in common, gets none at all.

    ``judge``: the indices of the runs to judge (default all), so that parts of a long series
    can be judged apart, each reading only the runs it compares with. A run's records are read
    once, however many comparisons they take part in; ``options`` are ``compare_runs``'s
    thresholds and alpha. Returns one RunVerdicts per judged run, in order."""
    complete = [i for i, run in enumerate(runs) if run.status == "complete" and run.baseline]
    digested: dict[int, tuple[Cases, str]] = {}

    def digest(index: int) -> tuple[Cases, str]:
        if index not in digested:
            records = runs[index].records
            digested[index] = (_by_case(records, "candidate"), records_kind(records))
        return digested[index]

    judged = []
    for index in range(len(runs)) if judge is None else judge:
        before = bisect.bisect_left(complete, index)  # complete[:before] started before this run
        if not before:
            judged.append(NO_VERDICTS)
            continue
        previous = complete[before - 1]
        earlier = (complete[i] for i in range(before - 2, -1, -1))
        judged.append(_against(runs, digest, index, previous, earlier, baseline_runs, options))
    return judged


def _against(
    runs: Sequence[SeriesRun],
    digest: Callable[[int], tuple[Cases, str]],
    index: int,
    previous: int,
    earlier: Iterator[int],
    baseline_runs: int,
    options: dict,
) -> RunVerdicts:
    """Run ``index`` against run ``previous`` and the first of ``earlier`` (complete runs,
    latest first) that can join it."""
    (cases, kind), (before, previous_kind) = digest(index), digest(previous)
    skip = {case for case, *_ in _mismatches(before, cases)}
    base = {key: record for key, record in before.items() if record["case_id"] not in skip}
    cand = {key: record for key, record in cases.items() if record["case_id"] not in skip}
    if not base or not cand or kind != previous_kind:
        return NO_VERDICTS
    joining = (i for i in earlier if _joins(digest(i)[0], before))
    joined = list(itertools.islice(joining, baseline_runs - 1))[::-1]
    rows = _judge_steps(
        base,
        cand,
        [digest(i)[0] for i in joined],
        options.get("threshold", DEFAULT_THRESHOLD),
        options.get("memory_threshold", DEFAULT_MEMORY_THRESHOLD),
        options.get("alpha", DEFAULT_ALPHA),
    )
    if all(row["time"] in ("new", "missing") for row in rows):  # no case in common
        return NO_VERDICTS
    cases_rows = [row for row in rows if row["case"] != ALL_CASES]
    return RunVerdicts(
        time={row["case"]: row["time"] for row in cases_rows},
        memory={row["case"]: row["memory"] for row in cases_rows},
        all_cases=next((row["time"] for row in rows if row["case"] == ALL_CASES), None),
        baseline=tuple(runs[i].run_id for i in [*joined, previous]),
    )


def _device_names(frames: Sequence[pd.DataFrame]) -> list[str]:
    """Each run's device names, joined (``unknown device`` where its records name none)."""
    names = []
    for frame in frames:
        devices = sorted(frame["device_name"].dropna().unique()) if len(frame) else []
        names.append(", ".join(devices) or "unknown device")
    return names


def _device_labels(frames: Sequence[pd.DataFrame]) -> list[str]:
    """One label per run: its device name, with the run id where two runs share a device."""
    names = _device_names(frames)
    return [
        name if names.count(name) == 1 else f"{name} ({frame['run_id'].iloc[0]})"
        for name, frame in zip(names, frames, strict=True)
    ]


def same_device_notes(frames: Sequence[pd.DataFrame], labels: Sequence[str], reference: str) -> dict[str, str]:
    """By label, a sentence for each run that ran on the reference run's device (the same
    device name; the same host said where it is): its "speed-up" is one device against itself
    from one run to the next, not one device against another."""
    names = _device_names(frames)
    hosts = [", ".join(sorted(frame["hostname"].dropna().unique())) if "hostname" in frame else "" for frame in frames]
    at = labels.index(reference)
    notes = {}
    for label, name, host in zip(labels, names, hosts, strict=True):
        if label != reference and name == names[at]:
            where = f"{name} on host {host}" if host and host == hosts[at] else name
            notes[label] = (
                f"{label} ran on the same device as the reference {reference} ({where}): its speed-up is one "
                "device against itself from run to run, not a difference between devices"
            )
    return notes


def side_by_side(
    frames: Sequence[pd.DataFrame],
    reference: str | None = None,
    side_by_side_kind: Callable[[Sequence[pd.DataFrame], list[str], str], tuple[pd.DataFrame, list[str]]] | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Runs of one suite on different devices, per case and device: throughput, speed-up
    over the ``reference`` device (default: the first run's) and memory. ``side_by_side_kind``:
    the runs' kind's own table, ``(frames, device labels, reference) -> (table, notes)``, for
    kinds not measured in throughput (``bench.kinds.side_by_side`` gives training runs theirs).

    Returns the long table (one row per case and device, cases in first-seen order;
    ``peak_memory_bytes``: a training step's peak, on the CPU the tracked one rather than the
    process's resident set, ``bench.reporting.tables.step_peak_bytes``;
    ``same_device``: the run ran on the reference's device, ``same_device_notes``) and one
    sentence per such run and per case that some device lacks or failed, naming the devices. The
    speed-up is the ratio of throughputs, or of step times where a case has no throughput
    (an optimizer step).

    Raises:
        UnknownNameError: ``reference`` is none of the runs' devices.
        DifferentRunsError: the runs are of different kinds or suites, a run is given twice,
            or one has no records.
    """
    names = [str(frame["run_id"].iloc[0]) if len(frame) else "" for frame in frames]
    if not all(names):
        raise DifferentRunsError("gpus needs runs with records; a run given has none")
    labels = _device_labels(frames)
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:  # one run given twice (two runs of one id on one device read the same)
        raise DifferentRunsError(
            f"gpus puts different runs side by side; the same run is given more than once: {', '.join(repeated)}"
        )
    reference = reference or labels[0]
    if reference not in labels:
        # Imported here: the models package loads torch, which nothing else here needs (the
        # dashboard judges years of nights in processes that should start in a second).
        from models.registry import UnknownNameError

        raise UnknownNameError("device", reference, labels)
    check_same_kind(frames, names)
    suites = [", ".join(sorted(set(frame["suite"].dropna()))) if "suite" in frame else "" for frame in frames]
    if len(set(suites)) > 1:
        described = ", ".join(f"{name} is {suite or 'of no suite'}" for name, suite in zip(names, suites, strict=True))
        raise DifferentRunsError(f"gpus puts runs of one suite side by side: {described}")
    if side_by_side_kind is not None:
        return side_by_side_kind(frames, labels, reference)
    rows = []
    for label, frame in zip(labels, frames, strict=True):
        for record in frame.assign(step_peak_bytes=step_peak_bytes(frame)).to_dict("records"):
            ok = record.get("status") == "ok"
            rows.append(
                {
                    "case": record["case_id"],
                    "device": label,
                    "status": record.get("status"),
                    "throughput": _number(record.get("throughput")) if ok else None,
                    "step_time_ms": _number(record.get("step_time_ms")) if ok else None,
                    "optimizer_state_bytes": record.get("optimizer_state_bytes"),
                    "peak_memory_bytes": _number(record["step_peak_bytes"]) if ok else None,
                }
            )
    table = pd.DataFrame(rows)
    cases = list(dict.fromkeys(table["case"]))
    table["throughput"] = pd.to_numeric(table["throughput"])
    table["step_time_ms"] = pd.to_numeric(table["step_time_ms"])
    at_reference = table[table["device"] == reference].set_index("case")
    by_throughput = table["throughput"] / table["case"].map(at_reference["throughput"])
    by_step_time = table["case"].map(at_reference["step_time_ms"]) / table["step_time_ms"]
    table["speedup"] = by_throughput.fillna(by_step_time)
    same_device = same_device_notes(frames, labels, reference)
    table["same_device"] = table["device"].isin(list(same_device))
    table["case"] = pd.Categorical(table["case"], categories=cases, ordered=True)
    table["device"] = pd.Categorical(table["device"], categories=labels, ordered=True)
    table = table.sort_values(["case", "device"]).reset_index(drop=True)
    notes = list(same_device.values())
    for case in cases:
        present = table[table["case"] == case]
        absent = [label for label in labels if label not in set(present["device"])]
        failed = [f"{r.device} ({r.status})" for r in present.itertuples() if r.status != "ok"]
        if absent:
            notes.append(f"{case} is missing on {', '.join(absent)}")
        if failed:
            notes.append(f"{case} failed on {', '.join(failed)}")
    table["case"] = table["case"].astype(str)
    table["device"] = table["device"].astype(str)
    return table, notes


def side_by_side_wide(table: pd.DataFrame) -> pd.DataFrame:
    """``side_by_side``'s table of step runs with one row per case and, per device, its
    throughput, speed-up and peak memory next to each other; a device lacking the case has
    empty cells."""
    devices = list(dict.fromkeys(table["device"]))
    wide = pd.DataFrame({"case": list(dict.fromkeys(table["case"]))})
    for device in devices:
        rows = table[table["device"] == device].set_index("case")
        if rows["throughput"].notna().any():
            wide[f"{device} samples/s"] = wide["case"].map(rows["throughput"].round(1))
        else:  # optimizer-step cases: no samples, a step time
            wide[f"{device} step ms"] = wide["case"].map(rows["step_time_ms"].round(3))
        itself = " (same device as the reference)" if rows["same_device"].any() else ""
        wide[f"{device} speed-up{itself}"] = wide["case"].map(rows["speedup"].round(2))
        wide[f"{device} peak MiB"] = wide["case"].map((pd.to_numeric(rows["peak_memory_bytes"]) / 2**20).round(1))
    return wide

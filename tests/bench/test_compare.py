"""Verdicts on constructed runs whose truth is known, refusals, GPUs side by side, trends."""

import numpy as np
import pandas as pd
import pytest

from bench.analyse.compare import (
    ALL_CASES,
    DifferentRunsError,
    IncomparableError,
    between_runs,
    compare_runs,
    flag_history,
    has_regression,
    readable,
    repeat_medians,
    side_by_side,
    side_by_side_wide,
    summary,
)
from bench.analyse.stats import mann_whitney, welch
from bench.storage.store import load_run
from models.registry import UnknownNameError
from tests.bench.runs import record, samples, smoke_run

# Twelve repeats (one step each) with an 8% spread, and the same run 6% slower: Welch's test on
# the logarithms gives p = 0.024, significant at 0.05, but not after Holm's correction over four
# cases (0.097).
NOISY = [101.0, 98.9, 105.3, 100.8, 95.8, 102.9, 111.0, 107.9, 94.5, 90.4, 95.1, 100.3]
NOISY_SLOWER = [round(t * 1.06, 1) for t in NOISY]


def repeats_at(levels: list[float], steps: int = 10, seed: int = 0) -> list[float]:
    """Samples of one run whose repeats sit at the given levels (ms), 1% noise per step."""
    return [t for i, level in enumerate(levels) for t in samples(level, n=steps, spread=0.01, seed=seed + i)]


def frame(*records) -> pd.DataFrame:
    return pd.DataFrame([r.to_dict() for r in records])


def verdicts_by_case(verdicts: pd.DataFrame) -> dict[str, tuple[str, str]]:
    return {row.case.split("/b")[0]: (row.time, row.memory) for row in verdicts.itertuples()}


def test_known_changes_get_their_verdicts(tmp_path):
    baseline = load_run(smoke_run(tmp_path, "base", seed=0)).frame()
    candidate = load_run(
        smoke_run(
            tmp_path,
            "cand",
            medians={("cnn", "adam"): 46.0, ("cnn", "sgdm"): 34.0, ("resnet20", "adam"): 41.2},
            seed=1,
        )
    ).frame()
    verdicts = compare_runs(baseline, candidate)
    assert verdicts_by_case(verdicts) == {
        "cnn/adam": ("regression", "unchanged"),  # +15%, 30 samples each: unmistakable
        "cnn/sgdm": ("improvement", "unchanged"),  # -15%
        "resnet20/adam": ("unchanged", "unchanged"),  # +3%: real, maybe significant, under 5%
        "resnet20/sgdm": ("unchanged", "unchanged"),  # the same distribution, other draws
    }
    assert verdicts.loc[0, "time_change"] == pytest.approx(
        np.median(candidate.loc[0, "step_time_samples_ms"]) / np.median(baseline.loc[0, "step_time_samples_ms"]) - 1
    )
    assert has_regression(verdicts)
    assert not has_regression(compare_runs(baseline, load_run(smoke_run(tmp_path, "again", seed=2)).frame()))


def test_repeat_medians_split_the_samples_in_order():
    split = repeat_medians(record("r", step_samples=[1.0, 2.0, 3.0, 10.0, 20.0, 30.0], repeats=2, steps=3).to_dict())
    assert split == [2.0, 20.0]
    assert repeat_medians(record("r", step_samples=[1.0, 2.0, 3.0], repeats=2, steps=3).to_dict()) is None


def test_a_large_change_in_few_noisy_repeats_is_not_a_verdict():
    baseline = frame(record("b", step_samples=[40.0, 60.0, 35.0], steps=1))
    candidate = frame(record("c", step_samples=[45.0, 38.0, 70.0], steps=1))
    verdicts = compare_runs(baseline, candidate)
    assert verdicts.loc[0, "time_change"] == pytest.approx(45 / 40 - 1)
    assert verdicts.loc[0, "p_value"] > 0.05
    assert verdicts.loc[0, "time"] == "unchanged"


def test_steps_of_one_repeat_do_not_count_as_independent_evidence():
    # The repeats sit at 100, 110 and 90 ms (the machine's conditions shift between them), with
    # tight steps inside each; the candidate is 8% slower. Thirty steps a side would make a
    # step-level test certain; three repeats that disagree by 10% are no evidence of 8%.
    baseline = frame(record("b", step_samples=repeats_at([100.0, 110.0, 90.0])))
    candidate = frame(record("c", step_samples=repeats_at([108.0, 118.8, 97.2], seed=5)))
    verdicts = compare_runs(baseline, candidate)
    assert verdicts.loc[0, "time_change"] == pytest.approx(0.08, abs=0.01)
    steps_p = mann_whitney(candidate.loc[0, "step_time_samples_ms"], baseline.loc[0, "step_time_samples_ms"]).p_value
    assert steps_p < 0.05
    assert verdicts.loc[0, "p_value"] > 0.3 and verdicts.loc[0, "time"] == "unchanged"
    # The same 8% with repeats that agree is a regression.
    steady = compare_runs(
        frame(record("b", step_samples=repeats_at([100.0, 100.0, 100.0]))),
        frame(record("c", step_samples=repeats_at([108.0, 108.0, 108.0], seed=5))),
    )
    assert steady.loc[0, "time"] == "regression"


def test_one_repeat_cannot_be_tested():
    verdicts = compare_runs(
        frame(record("b", step_samples=samples(40.0, n=10), repeats=1)),
        frame(record("c", step_samples=samples(80.0, n=10), repeats=1)),
    )
    assert verdicts.loc[0, "time"] == "unchanged" and verdicts.loc[0, "time_change"] == pytest.approx(1.0, abs=0.1)
    assert verdicts.loc[0, "note"].startswith("not tested")


def test_significance_is_corrected_for_the_number_of_cases():
    raw_p = welch(np.log(NOISY_SLOWER), np.log(NOISY)).p_value
    assert 0.0125 < raw_p < 0.05
    alone = compare_runs(
        frame(record("b", step_samples=NOISY, repeats=12, steps=1)),
        frame(record("c", step_samples=NOISY_SLOWER, repeats=12, steps=1)),
    )
    assert alone.loc[0, "time"] == "regression" and alone.loc[0, "p_value"] == pytest.approx(raw_p)
    others = [("cnn", "sgdm"), ("resnet20", "adam"), ("resnet20", "sgdm")]
    baseline = frame(
        record("b", step_samples=NOISY, repeats=12, steps=1), *(record("b", m, o, samples(40.0)) for m, o in others)
    )
    candidate = frame(
        record("c", step_samples=NOISY_SLOWER, repeats=12, steps=1),
        *(record("c", m, o, samples(40.0, seed=1)) for m, o in others),
    )
    family = compare_runs(baseline, candidate)
    assert family.loc[0, "p_value"] == pytest.approx(4 * raw_p)
    assert family.loc[0, "time"] == "unchanged"


def test_threshold_decides_what_change_counts():
    baseline = frame(record("b", step_samples=samples(40.0, seed=0)))
    candidate = frame(record("c", step_samples=samples(46.0, seed=1)))  # +15%
    assert compare_runs(baseline, candidate, threshold=0.10).loc[0, "time"] == "regression"
    assert compare_runs(baseline, candidate, threshold=0.20).loc[0, "time"] == "unchanged"


@pytest.mark.parametrize(
    "change,verdict",
    [
        ({"optimizer_state_bytes": 4 * 360_778 * 2 + 4}, "regression"),  # one float more: exact fields
        ({"optimizer_state_bytes": 4 * 360_778 * 2 - 4}, "improvement"),
        ({"param_bytes": 4 * 360_778 + 8}, "regression"),
        ({"peak_memory_bytes": int(600 * 2**20 * 1.05)}, "unchanged"),  # within 10%
        ({"peak_memory_bytes": int(600 * 2**20 * 1.2)}, "regression"),
        ({"peak_memory_bytes": int(600 * 2**20 * 0.8)}, "improvement"),
        (
            {"optimizer_state_bytes": 4 * 360_778 * 2 + 4, "peak_memory_bytes": int(600 * 2**20 * 0.8)},
            "regression",  # a regression anywhere is not cancelled by an improvement elsewhere
        ),
    ],
)
def test_memory_verdicts(change, verdict):
    step = samples(40.0)
    verdicts = compare_runs(frame(record("b", step_samples=step)), frame(record("c", step_samples=step, **change)))
    assert (verdicts.loc[0, "time"], verdicts.loc[0, "memory"]) == ("unchanged", verdict)
    assert has_regression(verdicts) == (verdict == "regression")


def test_failures_new_and_missing_cases():
    baseline = frame(
        record("b", "cnn", "adam"),
        record("b", "cnn", "sgdm", status="error"),
        record("b", "resnet20", "adam"),
        record("b", "resnet20", "sgdm", status="oom"),
    )
    candidate = frame(
        record("c", "cnn", "adam", status="oom"),
        record("c", "cnn", "sgdm"),
        record("c", "resnet20", "sgdm", status="oom"),
        record("c", "mlp", "adam"),
    )
    verdicts = compare_runs(baseline, candidate)
    assert verdicts_by_case(verdicts) == {
        "cnn/adam": ("regression", "regression"),
        "cnn/sgdm": ("improvement", "improvement"),
        "resnet20/adam": ("missing", "missing"),
        "resnet20/sgdm": ("unchanged", "unchanged"),
        "mlp/adam": ("new", "new"),
    }
    assert verdicts.loc[0, "note"] == "candidate oom: CUDA out of memory"
    assert summary(verdicts) == (
        "time: 1 regression, 1 improvement, 1 unchanged, 1 new, 1 missing; "
        "memory: 1 regression, 1 improvement, 1 unchanged, 1 new, 1 missing"
    )


@pytest.mark.parametrize(
    "field,value",
    [
        ("steps", 20),
        ("repeats", 5),
        ("device", "cuda:0"),
        ("device_name", "NVIDIA H100 80GB HBM3"),
    ],
)
def test_cases_measured_differently_are_refused_naming_the_field(field, value):
    baseline = frame(record("b"), record("b", "resnet20"))
    candidate = frame(record("c"), record("c", "resnet20", **{field: value}))
    with pytest.raises(IncomparableError) as raised:
        compare_runs(baseline, candidate)
    kind = "device_kind" if field == "device" else field
    assert [(case, f) for case, f, *_ in raised.value.mismatches] == [
        ("resnet20/adam/b32/fp32/cl0/eager/synthetic/3x32x32", kind)
    ]
    assert f"resnet20/adam/b32/fp32/cl0/eager/synthetic/3x32x32: {kind} differs" in str(raised.value)


def test_cases_trained_with_other_hyperparameters_are_other_cases():
    baseline = frame(record("b"), record("b", "resnet20"))
    candidate = frame(record("c"), record("c", "resnet20", hyperparameters={"lr": 0.01}))
    verdicts = compare_runs(baseline, candidate)
    resnet20 = verdicts[verdicts["case"].str.startswith("resnet20")]
    assert sorted(resnet20["time"]) == ["missing", "new"]


def test_another_cuda_index_of_the_same_gpu_is_comparable():
    step = samples(40.0)
    baseline = frame(record("b", step_samples=step, device="cuda:0", device_name="NVIDIA H100"))
    candidate = frame(record("c", step_samples=step, device="cuda:1", device_name="NVIDIA H100"))
    assert compare_runs(baseline, candidate).loc[0, "time"] == "unchanged"


def test_readable_table():
    baseline = frame(record("b", step_samples=[10.0, 10.0, 10.0], steps=1))
    candidate = frame(record("c", step_samples=[11.0, 11.0, 11.0], steps=1, optimizer_state_bytes=99))
    table = readable(compare_runs(baseline, candidate, threshold=0.05))
    row = table.iloc[0].to_dict()
    assert row["baseline ms"] == 10.0 and row["candidate ms"] == 11.0 and row["change"] == "+10.0%"
    assert row["state bytes"] == "2,886,224 -> 99" and row["memory"] == "improvement"


def gpu_run(run_id: str, device_name: str, throughputs: dict[str, float], statuses: dict | None = None):
    statuses = statuses or {}
    return frame(
        *(
            record(
                run_id,
                model,
                device="cuda:0",
                device_name=device_name,
                throughput=value,
                status=statuses.get(model, "ok"),
            )
            for model, value in throughputs.items()
        )
    )


def test_side_by_side_normalises_to_the_reference_and_names_missing_cases():
    a100 = gpu_run("r-a100", "NVIDIA A100", {"cnn": 1000.0, "resnet20": 400.0, "mlp": 5000.0})
    h100 = gpu_run("r-h100", "NVIDIA H100", {"cnn": 2500.0, "mlp": 9000.0}, statuses={"mlp": "oom"})
    table, notes = side_by_side([a100, h100])
    speedup = {(row.case.split("/")[0], row.device): row.speedup for row in table.itertuples()}
    assert speedup[("cnn", "NVIDIA H100")] == pytest.approx(2.5)
    assert speedup[("cnn", "NVIDIA A100")] == pytest.approx(1.0)
    assert np.isnan(speedup[("mlp", "NVIDIA H100")])
    assert notes == [
        "resnet20/adam/b32/fp32/cl0/eager/synthetic/3x32x32 is missing on NVIDIA H100",
        "mlp/adam/b32/fp32/cl0/eager/synthetic/1x28x28 failed on NVIDIA H100 (oom)",
    ]
    by_h100, _ = side_by_side([a100, h100], reference="NVIDIA H100")
    cnn_a100 = by_h100[(by_h100["case"].str.startswith("cnn/")) & (by_h100["device"] == "NVIDIA A100")]
    assert cnn_a100["speedup"].item() == pytest.approx(0.4)
    with pytest.raises(UnknownNameError, match="NVIDIA A100, NVIDIA H100"):
        side_by_side([a100, h100], reference="V100")


def test_two_runs_on_one_device_are_told_apart_by_run_id():
    first = gpu_run("r1", "NVIDIA H100", {"cnn": 1000.0})
    second = gpu_run("r2", "NVIDIA H100", {"cnn": 1100.0})
    table, notes = side_by_side([first, second])
    assert table["device"].tolist() == ["NVIDIA H100 (r1)", "NVIDIA H100 (r2)"]
    assert table["speedup"].tolist() == pytest.approx([1.0, 1.1])
    assert table["same_device"].tolist() == [False, True]
    assert notes == [
        "NVIDIA H100 (r2) ran on the same device as the reference NVIDIA H100 (r1) (NVIDIA H100 on host "
        "nightly-box): its speed-up is one device against itself from run to run, not a difference between devices"
    ]


def history_frame(tmp_path, medians_by_run):
    frames = []
    for day, (run_id, medians) in enumerate(medians_by_run):
        run = load_run(smoke_run(tmp_path, run_id, medians=medians, seed=day, started=f"2026-11-2{day}T01:00:00+00:00"))
        frames.append(run.frame().assign(started=run.manifest["started"], machine="nightly-box"))
    return pd.concat(frames, ignore_index=True)


def test_flag_history_flags_the_run_that_changed_against_the_one_before(tmp_path):
    runs = [("mon", {}), ("tue", {}), ("wed", {("cnn", "adam"): 48.0}), ("thu", {("cnn", "adam"): 48.0})]
    flagged = flag_history(history_frame(tmp_path, runs))
    hits = flagged[flagged["time"] == "regression"]
    assert list(zip(hits["run_id"], hits["model"], hits["optimizer"], strict=True)) == [("wed", "cnn", "adam")]
    assert flagged[flagged["run_id"] == "mon"]["time"].isna().all()
    assert set(flagged[flagged["run_id"] != "mon"]["memory"]) == {"unchanged"}


# --- a baseline of several runs -----------------------------------------------------------


def student_t3_two_sided(t: float) -> float:
    """P(|T| >= |t|) for Student's t with 3 degrees of freedom, in closed form."""
    t = abs(t)
    cdf = 0.5 + (t / (np.sqrt(3) * (1 + t * t / 3)) + np.arctan(t / np.sqrt(3))) / np.pi
    return 2 * (1 - cdf)


def test_between_runs_is_the_prediction_t_test_on_log_medians():
    runs = [100.0, 110.0, 90.0, 105.0]
    logs = np.log(runs)
    t = (np.log(130.0) - logs.mean()) / (logs.std(ddof=1) * np.sqrt(1 + 1 / 4))
    change, p = between_runs(runs, 130.0)
    assert change == pytest.approx(130.0 / np.exp(logs.mean()) - 1, rel=1e-12)
    assert p == pytest.approx(student_t3_two_sided(t), rel=1e-9)
    assert between_runs([50.0, 50.0, 50.0], 50.0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="at least two baseline runs"):
        between_runs([50.0], 60.0)


def runs_at(levels: list[float], prefix: str = "r") -> list[pd.DataFrame]:
    """One run per level: a single case whose 5 repeats agree within 1% around the level."""
    return [
        frame(record(f"{prefix}{i}", step_samples=repeats_at([level] * 5, seed=10 * i), repeats=5, steps=10))
        for i, level in enumerate(levels)
    ]


def test_several_baseline_runs_see_the_machines_run_to_run_spread():
    # Runs whose repeats agree within 1% but whose levels wander by about 8% from run to run.
    *earlier, baseline = runs_at([100.0, 112.0, 95.0, 105.0])
    same_machine_noise, twice_as_slow = runs_at([112.0, 210.0], prefix="c")
    # Against the last run alone, 112 vs 105 is a certain +7%: Welch on tight repeats flags it.
    assert compare_runs(baseline, same_machine_noise).loc[0, "time"] == "regression"
    # Against four runs it is inside what the machine does from one run to the next.
    verdicts = compare_runs(baseline, same_machine_noise, earlier=earlier)
    assert verdicts.loc[0, "time"] == "unchanged" and verdicts.loc[0, "note"] == "baseline: 4 runs"
    assert verdicts.loc[0, "baseline_ms"] == pytest.approx(
        np.exp(np.mean(np.log([np.median(f.loc[0, "step_time_samples_ms"]) for f in [*earlier, baseline]]))),
        rel=1e-12,
    )
    assert compare_runs(baseline, twice_as_slow, earlier=earlier).loc[0, "time"] == "regression"


def test_too_few_baseline_runs_fall_back_to_the_repeats():
    first, baseline = runs_at([100.0, 105.0])
    (candidate,) = runs_at([150.0], prefix="c")
    verdicts = compare_runs(baseline, candidate, earlier=[first])
    assert verdicts.loc[0, "time"] == "regression"
    assert verdicts.loc[0, "note"] == "baseline: 2 runs, too few for the between-run test; repeats tested"


def test_an_earlier_run_measured_differently_is_refused():
    (earlier,) = [frame(record("e", step_samples=repeats_at([100.0] * 4), repeats=4, steps=10))]
    baseline, candidate = runs_at([100.0, 101.0])
    with pytest.raises(IncomparableError, match="repeats differs"):
        compare_runs(baseline, candidate, earlier=[earlier])


LEVELS = {  # four cases over four baseline runs: each case wanders by ~8%, their product barely moves
    ("cnn", "adam"): [100.0, 110.0, 92.0, 104.0],
    ("cnn", "sgdm"): [50.0, 46.0, 54.0, 49.0],
    ("resnet20", "adam"): [200.0, 185.0, 214.0, 196.0],
    ("resnet20", "sgdm"): [80.0, 87.0, 76.0, 83.0],
}


def four_case_run(run_id: str, levels: dict[tuple[str, str], float]) -> pd.DataFrame:
    return frame(
        *(
            record(run_id, model, optimizer, step_samples=repeats_at([level] * 5, seed=i), repeats=5, steps=10)
            for i, ((model, optimizer), level) in enumerate(levels.items())
        )
    )


def test_all_cases_together_catch_a_slow_down_that_no_single_case_shows():
    runs = [four_case_run(f"r{i}", {case: levels[i] for case, levels in LEVELS.items()}) for i in range(4)]
    *earlier, baseline = runs
    slower = four_case_run("slow", {case: levels[-1] * 1.2 for case, levels in LEVELS.items()})
    same = four_case_run("same", {case: np.exp(np.mean(np.log(levels))) for case, levels in LEVELS.items()})

    verdicts = compare_runs(baseline, slower, earlier=earlier)
    cases, together = verdicts.iloc[:4], verdicts.iloc[4]
    assert (cases["time"] == "unchanged").all()  # each case's own wandering hides 20%
    assert together["case"] == ALL_CASES and together["time"] == "regression"
    assert together["note"] == "baseline: 4 runs; 4 cases" and has_regression(verdicts)
    per_run = [np.exp(np.mean(np.log([np.median(s) for s in run["step_time_samples_ms"]]))) for run in runs]
    assert together["baseline_ms"] == pytest.approx(np.exp(np.mean(np.log(per_run))), rel=1e-12)
    assert summary(verdicts).endswith(f"all cases: regression ({together['time_change'] * 100:+.1f}%)")
    assert "time: 4 unchanged" in summary(verdicts)

    calm = compare_runs(baseline, same, earlier=earlier)
    assert not has_regression(calm) and calm.iloc[4]["time"] == "unchanged"
    # A single-run baseline has no all-cases row: there is no between-run spread to test against.
    assert ALL_CASES not in set(compare_runs(baseline, slower)["case"])


def test_flag_history_with_several_baseline_runs(tmp_path):
    everything = {(m, o): 48.0 for m in ("cnn", "resnet20") for o in ("adam", "sgdm")}
    runs = [("mon", {}), ("tue", {}), ("wed", {}), ("thu", everything), ("fri", everything)]
    flagged = flag_history(history_frame(tmp_path, runs), baseline_runs=3)
    by_run = flagged.groupby("run_id", sort=False)
    # Thursday: every case 20% slower than the three runs before it, and so is their mean.
    assert set(by_run.get_group("thu")["time"]) == {"regression"}
    assert set(by_run.get_group("thu")["all_cases"]) == {"regression"}
    # Friday equals Thursday: against Tue, Wed and Thu (40, 40, 48) nothing stands out.
    assert set(by_run.get_group("fri")["time"]) == {"unchanged"}
    assert set(by_run.get_group("fri")["all_cases"]) == {"unchanged"}
    # Tuesday and Wednesday have fewer than three runs behind them: no all-cases verdict.
    assert by_run.get_group("wed")["all_cases"].isna().all() and by_run.get_group("mon")["time"].isna().all()


def test_cpu_peak_memory_is_judged_on_the_tracked_peak_not_the_process():
    """Two runs in one process: the resident set grew by what the first left behind, the
    tensors of the step did not. The verdict follows the tracker where both sides have it."""
    base, cand = (
        record(run_id, peak_memory_source="process_rss", peak_memory_bytes=rss, tracked_peak_bytes=8_830_000).to_dict()
        for run_id, rss in (("a", 800 * 2**20), ("b", 928 * 2**20))
    )
    verdicts = compare_runs(pd.DataFrame([base]), pd.DataFrame([cand]))
    assert verdicts.iloc[0]["memory"] == "unchanged" and verdicts.iloc[0]["peak_change"] == 0
    cand["tracked_peak_bytes"] = 10_000_000
    assert compare_runs(pd.DataFrame([base]), pd.DataFrame([cand])).iloc[0]["memory"] == "regression"
    del cand["tracked_peak_bytes"]  # an older record: the process's peak is all there is
    assert compare_runs(pd.DataFrame([base]), pd.DataFrame([cand])).iloc[0]["memory"] == "regression"


def optimizer_step_run(run_id: str, device_name: str, step_ms: float) -> pd.DataFrame:
    """An optimizer-step run: step times, no throughput and no batch."""
    records = []
    for k, (optimizer, factor) in enumerate([("adam", 2.0), ("sgdm", 1.0)]):
        one = record(run_id, "cnn", optimizer, samples(step_ms * factor, n=10, seed=k), device_name=device_name)
        one.kind, one.case_id, one.suite = "optimizer-step", f"cnn/{optimizer}/optimizer-step/fp32", "optim"
        one.timing.throughput = one.case.batch_size = None
        records.append(one)
    return frame(*records)


def test_runs_of_different_kinds_or_without_a_common_case_are_refused():
    benchmark = frame(record("b", "cnn", "adam", samples(40.0)))
    optim = optimizer_step_run("o", "AMD EPYC", 1.0)
    with pytest.raises(DifferentRunsError, match="the baseline is a training-step benchmark run, the candidate is an"):
        compare_runs(benchmark, optim)
    other_batch = frame(record("c", "cnn", "adam", samples(40.0), batch_size=64, suite="other"))
    with pytest.raises(
        DifferentRunsError, match=r"no case in common \(1 case of smoke in the baseline, 1 case of other"
    ):
        compare_runs(benchmark, other_batch)
    with pytest.raises(DifferentRunsError, match="r-a100 is smoke, c is other"):
        side_by_side([gpu_run("r-a100", "NVIDIA A100", {"cnn": 1000.0}), other_batch])
    with pytest.raises(DifferentRunsError, match="given more than once: AMD EPYC"):  # was a pandas InvalidIndexError
        side_by_side([other_batch, other_batch])
    with pytest.raises(DifferentRunsError, match="a run given has none"):  # was a KeyError
        side_by_side([other_batch, benchmark.iloc[0:0]])
    with pytest.raises(DifferentRunsError, match="the candidate has no records"):  # a run that failed before a case
        compare_runs(benchmark, benchmark.iloc[0:0])
    # Two runs of one id on two GPUs (the README's --run-id r50-bf16 on each machine) are two runs.
    a100 = gpu_run("r50-bf16", "NVIDIA A100", {"cnn": 1000.0})
    h100 = gpu_run("r50-bf16", "NVIDIA H100", {"cnn": 2500.0})
    assert side_by_side([a100, h100])[0]["speedup"].tolist() == pytest.approx([1.0, 2.5])


def test_optimizer_steps_side_by_side_are_sped_up_by_their_step_times():
    # The same optimizer step in 0.4 ms against 1.0 ms: 2.5 times as fast.
    table, notes = side_by_side(
        [optimizer_step_run("o1", "NVIDIA A100", 1.0), optimizer_step_run("o2", "NVIDIA H100", 0.4)]
    )
    assert table["speedup"].tolist() == pytest.approx([1.0, 2.5, 1.0, 2.5], rel=0.05) and notes == []
    wide = side_by_side_wide(table)
    assert list(wide.columns[1:3]) == ["NVIDIA A100 step ms", "NVIDIA A100 speed-up"]
    assert wide["NVIDIA H100 speed-up"].tolist() == pytest.approx([2.5, 2.5], abs=0.1)


def test_a_run_measured_differently_takes_no_place_among_the_baseline_runs(tmp_path):
    from bench.api import resolve_runs
    from bench.storage.history import ingest
    from tests.bench.runs import write_run

    def night(run_id: str, day: int, **protocol) -> object:
        cases = [record(run_id, "cnn", o, samples(40.0, seed=day), **protocol) for o in ("adam", "sgdm")]
        return write_run(tmp_path, run_id, cases, started=f"2026-11-2{day}T01:00:00+00:00")

    # Wednesday ran 20 steps a repeat (so did a run of other batch sizes on Thursday): neither
    # can join Friday's baseline, and neither may use up one of its two places.
    runs = [night("mon", 1), night("tue", 2), night("wed", 3, steps=20), night("thu", 4, batch_size=8)]
    ingest([*runs, night("fri", 5), night("sat", 6)], tmp_path / "h.sqlite")
    baseline, _, earlier = resolve_runs("fri", "sat", tmp_path / "h.sqlite", baseline_runs=3)
    assert baseline.run_id == "fri" and [run.run_id for run in earlier] == ["mon", "tue"]


def test_flag_history_reads_each_run_once_however_many_comparisons_it_joins(tmp_path, monkeypatch):
    """Each run is a baseline for the runs after it: reading its records again for every
    comparison (and checking every earlier run for a place in the baseline) made a year of
    nights take hours. Each run's records are digested once."""
    from bench.analyse import compare

    digested = []
    by_case = compare._by_case
    monkeypatch.setattr(compare, "_by_case", lambda records, which: digested.append(which) or by_case(records, which))
    runs = [(day, {}) for day in ("mon", "tue", "wed", "thu", "fri", "sat")]
    flagged = flag_history(history_frame(tmp_path, runs), baseline_runs=3)
    assert len(digested) == len(runs)
    assert flagged["time"].notna().sum() == 4 * (len(runs) - 1)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -4.0, 0.0])
def test_a_step_time_that_is_no_measurement_is_refused_not_called_unchanged(bad):
    base = record("a", step_samples=samples(40.0, n=6))
    cand = record("b", step_samples=[*samples(40.0, n=5), bad])
    frames = [pd.DataFrame([base.to_dict()]), pd.DataFrame([cand.to_dict()])]
    with pytest.raises(DifferentRunsError, match=f"the candidate's case {base.case_id} has a step time of"):
        compare_runs(*frames)
    with pytest.raises(DifferentRunsError, match="the baseline's case"):
        compare_runs(*frames[::-1])

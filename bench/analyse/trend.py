"""``convbench trend``'s lines and notes, from ``compare.flag_history``'s flagged records.

A line is one case of one suite content (``bench.storage.baselines``) on one device: the
same case id measured with other steps, repeats, threads or a different grid is another
series, never a point on the nightly line (a short test run's step times joined to the
nightly's would look like a regression or an improvement that no code change made).
"""

from __future__ import annotations

import pandas as pd

#: Hex digits of the suite-content key shown in a line's name where a suite has several.
CONTENT_DIGITS = 6


def series_names(flagged: pd.DataFrame) -> pd.Series:
    """The line each flagged record belongs to: its case id, with the suite where several
    suites are drawn, the suite content's key (``#a1b2c3``) where a suite was measured in
    several ways, and the device where several devices are."""
    qualifier = pd.Series("", index=flagged.index)
    if flagged["suite"].nunique() > 1:
        qualifier += flagged["suite"].astype(str) + " "
    if "suite_content" in flagged:
        several = flagged.groupby("suite", dropna=False)["suite_content"].transform("nunique") > 1
        key = "#" + flagged["suite_content"].astype(str).str[:CONTENT_DIGITS]
        qualifier += key.where(several, "")
    qualifier = qualifier.str.strip()
    names = flagged["case_id"].astype(str)
    names = names.where(qualifier == "", names + " (" + qualifier + ")")
    if flagged["device_name"].nunique() > 1:
        names = names + " @ " + flagged["device_name"].astype(str)
    return names


def content_notes(flagged: pd.DataFrame) -> list[str]:
    """One sentence per suite measured in several ways on one machine: which runs measured
    it otherwise than its latest run, drawn as lines of their own and never baselines of it."""
    if "suite_content" not in flagged:
        return []
    notes = []
    runs = flagged.drop_duplicates("run_id").sort_values(["started", "run_id"])
    for (suite, machine), same in runs.groupby(["suite", "machine"], sort=False, dropna=False):
        latest = same["suite_content"].iloc[-1]
        other = same[same["suite_content"] != latest]
        if other.empty:
            continue
        listed = ", ".join(f"{row.run_id} (#{str(row.suite_content)[:CONTENT_DIGITS]})" for row in other.itertuples())
        notes.append(
            f"suite {suite} on {machine}: {len(other)} run{'s' if len(other) != 1 else ''} measured it otherwise than "
            f"the latest (#{str(latest)[:CONTENT_DIGITS]}): {listed}; drawn as lines of their own, never its baselines"
        )
    return notes


def baseline_count_notes(flagged: pd.DataFrame, asked: int) -> list[str]:
    """With ``--baseline-runs N`` (N > 1): the runs judged against fewer than N runs, and how
    many they had (the first run of a series has none and is not listed)."""
    if asked <= 1 or "baseline_runs" not in flagged:
        return []
    runs = flagged.drop_duplicates("run_id").sort_values(["started", "run_id"])
    short = runs[(runs["baseline_runs"] > 0) & (runs["baseline_runs"] < asked)]
    if short.empty:
        return []
    listed = ", ".join(f"{row.run_id} ({int(row.baseline_runs)})" for row in short.itertuples())
    return [f"runs judged against fewer baseline runs than the {asked} asked for: {listed}"]

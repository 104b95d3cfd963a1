"""Reports: what a run folder holds for people to read.

``write_report(run_dir)`` reads the run back (never measures) and writes

    figures/<name>.png, .pdf   every figure in FIGURES that applies to the run
    summary.csv                the main results, one row per case, unrounded, units in headers
    summary.md                 the same rounded, with the run's context and its failed cases
    summary.tex                the same as a LaTeX (booktabs) table
    report.html                one self-contained page: figures embedded, no network needed
    report.md                  the same for GitHub, figures linked by relative path
"""

from __future__ import annotations

import base64
import dataclasses
import html
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench.measure.load import BUSY_FRACTION
from bench.record import OPTIMIZER_STEP, STEP_KINDS
from bench.reporting import figures
from bench.reporting.tables import (
    code_fence,
    format_number,
    html_table,
    latex_table,
    markdown_table,
    markdown_text,
    process_rss,
    step_peak_bytes,
    tracked_peak,
)
from bench.storage.store import Run, RunFolderError, load_run, write_atomic

FIGURES_DIR = "figures"
RF_CSV = "rf.csv"
RF_MAPS = "rf_maps.npz"
MIB = 2**20


@dataclass(frozen=True)
class FigureSpec:
    """A figure of the report: ``draw`` turns the frame ``data(run)`` into a Figure; ``data``
    returns None when the run has nothing for this figure."""

    name: str
    title: str
    caption: str
    draw: Callable[[pd.DataFrame], object]
    data: Callable[[Run], pd.DataFrame | None]


@dataclass(frozen=True)
class KindParts:
    """What the kinds of run add to the report of a run of steps (``bench.kinds.report_parts``
    gives them; the report itself knows no kind): ``figures``, every figure in page order;
    ``prepare(records)``, the records with the kinds' derived columns (the optimizer step's
    roofline figures); ``notes(records)``, sentences under the summary (which limit a
    percentage above 100 is of); ``expected_cases(run)``, the case ids its suite expands to
    (None where it cannot be expanded here)."""

    figures: list[FigureSpec]
    prepare: Callable[[pd.DataFrame], pd.DataFrame] = lambda frame: frame
    notes: Callable[[pd.DataFrame], list[str]] = lambda frame: []
    expected_cases: Callable[[Run], list[str] | None] = lambda run: None


def step_records(run: Run) -> pd.DataFrame | None:
    """The records that time a training step, data parallel included (not the optimizer-step
    cases of ``convbench optim``)."""
    frame = run.frame()
    if "kind" in frame:
        frame = frame[frame["kind"].isin(STEP_KINDS)]
    return frame if len(frame) else None


def _ok_records(run: Run) -> pd.DataFrame | None:
    frame = run.frame() if run.records else None
    return frame if frame is not None and (frame["status"] == "ok").any() else None


def _batch_sweep(run: Run) -> pd.DataFrame | None:
    frame = step_records(run)
    return frame if frame is not None and figures.batch_sweeps(frame) else None


def read_damageable(path: Path, read: Callable[[Path], pd.DataFrame]) -> pd.DataFrame | None:
    """``read(path)`` for a file of the run folder, None where there is none; a file that
    does not read as what it should be is a RunFolderError naming it, as a damaged record is."""
    if not path.is_file():
        return None
    try:
        return read(path)
    except (ValueError, KeyError, OSError, EOFError, RecursionError, zipfile.BadZipFile) as error:
        raise RunFolderError(f"{path}: damaged ({type(error).__name__}: {error})") from None


def _rf(run: Run) -> pd.DataFrame | None:
    # Layer names such as the lab cnn's "0", "2" are names, not numbers.
    return read_damageable(run.path / RF_CSV, lambda path: pd.read_csv(path, dtype={"model": str, "layer": str}))


#: The columns of rf.csv the pages show (the CSV beside them has them all).
RF_SHOWN = ["model", "layer", "kind", "kernel", "stride", "rf", "jump", "start", "rf_empirical", "fill", "erf95"]
RF_SHOWN += ["match", "clipped"]


def rf_table(rf: pd.DataFrame) -> pd.DataFrame:
    return rf[[c for c in RF_SHOWN if c in rf]]


#: In rf_maps.npz, the array holding each heat map's analytic field ([first, last] input
#: index per axis h, w, in the map's coordinates).
MAP_FIELDS = {"mask": "field", "erf": "erf_field"}


def rf_maps_frame(path: Path) -> pd.DataFrame:
    """rf_maps.npz as rows of model, layer, map (a figures.MAP_TITLES key), values (the
    2-D heat map) and field (its analytic box, or None). The file's keys are
    ``<model>/<layer>/<array>`` (see bench.receptive.section)."""
    with np.load(path) as npz:
        arrays = {key: npz[key] for key in npz.files}
    rows = []
    for key, values in arrays.items():
        model, layer, kind = key.rsplit("/", 2)
        if kind in MAP_FIELDS:
            field = arrays.get(f"{model}/{layer}/{MAP_FIELDS[kind]}")
            rows.append({"model": model, "layer": layer, "map": kind, "values": values, "field": field})
    return pd.DataFrame(rows, columns=["model", "layer", "map", "values", "field"])


def _rf_maps(run: Run) -> pd.DataFrame | None:
    return read_damageable(run.path / RF_MAPS, rf_maps_frame)


FIGURES = [
    FigureSpec(
        "throughput",
        "Throughput",
        "Training throughput by model and optimizer: the bar is batch size / median step time, the "
        "error bar the interquartile range of the step times (batch / q75 to batch / q25).",
        figures.throughput_figure,
        step_records,
    ),
    FigureSpec(
        "memory",
        "Memory breakdown",
        "Memory per case at the peak of one tracked training step: every live tensor by what it is "
        "(parameters, buffers, gradients, optimizer state, the batch, activations autograd saved, "
        "temporaries), adding up to the peak; runs without that pass show parameters, gradients, optimizer "
        "state and activations (peak minus the static parts). The title gives Adam's optimizer state as a "
        "multiple of SGDM's.",
        figures.memory_breakdown_figure,
        step_records,
    ),
    FigureSpec(
        "state_bytes",
        "Optimizer state per parameter",
        "Optimizer-state bytes per parameter as measured from the optimizer's state tensors, beside "
        "theory: state buffers (Adam 2, SGDM 1) × bytes per parameter element.",
        figures.state_bytes_figure,
        _ok_records,
    ),
    FigureSpec(
        "batch_scaling",
        "Batch-size scaling",
        "Throughput and peak memory against batch size (on the CPU the tracked peak of a training step, "
        "not the process's resident set); × marks a case that ran out of memory.",
        figures.batch_scaling_figure,
        _batch_sweep,
    ),
    FigureSpec(
        "constant_gradient",
        "Constant-gradient trajectories",
        "Closed forms under a constant gradient c (optimizers.theory): SGDM's weight moves in "
        "proportion to c, Adam's by ηt whatever c is.",
        figures.constant_gradient_figure,
        lambda run: figures.constant_gradient_frame(),
    ),
    FigureSpec(
        "receptive_field",
        "Receptive-field growth",
        "Receptive-field size layer by layer: analytic (line) and the gradient-mask probe (squares).",
        figures.receptive_field_figure,
        _rf,
    ),
    FigureSpec(
        "receptive_field_maps",
        "Gradient masks and effective receptive fields",
        "Per probed layer: the input region with non-zero gradient from the centre output unit, "
        "and the mean |gradient| over random inputs with the model's weights.",
        figures.receptive_field_maps_figure,
        _rf_maps,
    ),
]


def write_figures(run: Run, specs: list[FigureSpec] = FIGURES) -> list[FigureSpec]:
    """Draw and save every figure of ``specs`` that applies to the run; returns those written."""
    figures.use_theme()
    written = []
    for spec in specs:
        data = spec.data(run)
        if data is None or data.empty:
            continue
        figures.save(spec.draw(data), run.path / FIGURES_DIR / spec.name, inside=run.path)
        written.append(spec)
    return written


# ---------------------------------------------------------------------------------------
# What the pages show besides figures.


def flatten(data: object, prefix: str = "") -> list[tuple[str, str]]:
    """Nested JSON (env.json) as (dotted key, value) pairs, e.g. ('gpus[0].name', 'H100')."""
    if isinstance(data, dict):
        return [pair for key, value in data.items() for pair in flatten(value, f"{prefix}.{key}" if prefix else key)]
    if isinstance(data, list) and any(isinstance(item, (dict, list)) for item in data):
        return [pair for i, item in enumerate(data) for pair in flatten(item, f"{prefix}[{i}]")]
    if isinstance(data, list):
        return [(prefix, ", ".join(map(str, data)))]
    return [(prefix, "" if data is None else str(data))]


def environment_frame(env: dict) -> pd.DataFrame:
    return pd.DataFrame(flatten(env), columns=["what", "value"])


def missing_cases(run: Run, expected_cases: Callable[[Run], list[str] | None]) -> list[str] | None:
    """The case ids of ``expected_cases(run)`` (what the run's suite expands to, in suite
    order) that have no record; None where the suite cannot be expanded here."""
    expected = expected_cases(run)
    if expected is None:
        return None
    recorded = {r.get("case_id") for r in run.records}
    return [case for case in expected if case not in recorded]


def failures_frame(frame: pd.DataFrame, missing: list[str] | None = None) -> pd.DataFrame:
    """The cases that did not finish: case, status and the error message; then the cases
    that have no record at all (``missing``), with status ``not run``."""
    failed = frame[frame["status"] != "ok"] if len(frame) else frame
    table = pd.DataFrame(
        {
            "case": failed.get("case_id", []),
            "status": failed.get("status", []),
            "error": failed.get("error", pd.Series(dtype=object)).fillna(""),
        }
    )
    not_run = pd.DataFrame({"case": missing or [], "status": "not run", "error": ""})
    return pd.concat([table, not_run], ignore_index=True) if len(not_run) else table


#: What each way of ending says about a run that is not complete.
_ENDINGS = {
    "running": "the run is still running",
    "killed": "the run was killed: its process ended without closing it (SIGKILL, the out-of-memory killer, "
    "a time limit)",
    "incomplete": "the run is incomplete",
}
_SECTIONS = {"rf": "the receptive fields ([rf]) were not measured"}


def run_status(run: Run) -> str:
    """One plain sentence on whether the run is whole: every case, failures, missing cases
    and sections, and how it ended if it did not finish."""
    manifest = run.manifest
    total, done = manifest.get("cases_total", len(run.records)), len(run.records)
    failed = sum(r.get("status") != "ok" for r in run.records)
    parts = [f"{done} of {total} cases have a record"]
    if failed:
        parts.append(f"{failed} failed (see Failed cases)")
    status = manifest.get("status", "unknown")
    not_run = [name for name, outcome in manifest.get("sections", {}).items() if outcome == "not run"]
    if status == "complete" and done >= total and not not_run:
        return "; ".join([*parts, "the run is complete"]) + "."
    ending = _ENDINGS.get(status, f"the run is {status}")
    if manifest.get("stopped_by") and status == "incomplete":
        ending += f" (stopped by {manifest['stopped_by']})"
    missing = total - done
    if missing > 0:
        parts.append(
            f"{ending}: {missing} {'case has' if missing == 1 else 'cases have'} no result, "
            "so this report is not the whole suite"
        )
    else:
        parts.append(ending)
    parts += [_SECTIONS.get(name, f"the [{name}] section did not run") for name in not_run]
    return "; ".join(parts) + "."


#: Summary columns that are no Record field: a training step's peak (on the CPU the tracked
#: one, ``bench.reporting.tables.step_peak_bytes``), the process's resident-set peak beside it
#: (CPU records), and a mark on each case measured while other processes took more than
#: ``bench.measure.load.BUSY_FRACTION`` of the CPUs.
STEP_PEAK, PROCESS_RSS, UNDER_LOAD = "step_peak_bytes", "process_rss_peak_bytes", "under_load"

#: The summary's columns: record field, header with unit, and scale from the record's unit.
SUMMARY_COLUMNS = [
    ("model", "model", None),
    ("optimizer", "optimizer", None),
    ("batch_size", "batch", None),
    ("precision", "precision", None),
    ("channels_last", "channels-last", None),
    ("compile", "compile", None),
    ("strategy", "strategy", None),
    ("world_size", "ranks", None),
    ("status", "status", None),
    (UNDER_LOAD, "under load", None),  # beside the figures it qualifies
    ("throughput", "throughput (samples/s)", 1),
    ("global_throughput", "global throughput (samples/s)", 1),
    ("scaling_efficiency", "scaling efficiency", 1),
    ("step_time_ms", "step time (ms)", 1),
    ("step_time_iqr_ms", "step time IQR (ms)", 1),
    ("load_average_1m", "load average (1 min)", 1),
    ("other_cpu_fraction", "other processes' CPU (%)", 100),
    ("params", "parameters", 1),
    ("state_buffers_per_param", "state buffers/param", 1),
    ("state_bytes_per_param", "state (B/param)", 1),
    ("optimizer_state_bytes", "optimizer state (MiB)", 1 / MIB),
    (STEP_PEAK, "peak memory (MiB)", 1 / MIB),
    (PROCESS_RSS, "process RSS peak (MiB)", 1 / MIB),
    ("activation_bytes", "activations (MiB)", 1 / MIB),
    ("host_syncs_per_step", "host syncs/step", 1),
    ("host_bound", "host-bound", None),
    ("flops_per_sample", "GFLOP/sample (fwd+bwd)", 1e-9),
    ("achieved_tflops", "TFLOP/s", 1),
    ("mfu", "MFU (%)", 100),
    ("tracked_peak_bytes", "tracked peak (MiB)", 1 / MIB),
    ("predicted_peak_bytes", "predicted peak (MiB)", 1 / MIB),
    ("tracked_allocator_peak_bytes", "allocator peak (MiB)", 1 / MIB),
    ("max_batch_size", "largest batch", 1),
    ("max_batch_predicted", "largest batch predicted", 1),
    ("compulsory_bytes_per_param", "compulsory (B/param)", 1),
    ("traffic_bytes_per_param", "kernel traffic (B/param)", 1),
    ("device_time_ms", "device time (ms)", 1),
    ("host_time_ms", "host time (ms)", 1),
    ("achieved_bandwidth_gbs", "achieved (GB/s)", 1),
    ("bandwidth_fraction", "of bandwidth (%)", 100),
    ("wall_bandwidth_fraction", "of bandwidth in wall time (%)", 100),
    ("working_set_bytes", "working set (MiB)", 1 / MIB),
    ("dram_bandwidth_fraction", "of DRAM bandwidth (%)", 100),
]
#: Fields whose column shows only optimizer-step records' values (training steps record a
#: host time too, which their tables do not show).
OPTIMIZER_STEP_FIELDS = ("host_time_ms",)
#: Energy per sample: the record's energy per step over its batch size.
ENERGY_PER_SAMPLE = "energy (J/sample)"
#: Columns left out of the tables people read when no case of the run sets them: configuration
#: switches, and marks and figures that only some devices or cases have (MFU needs a known
#: peak: a GPU in bench.measure.peaks or --peak-tflops).
OPTIONAL_COLUMNS = ("channels-last", "compile", "host syncs/step", "host-bound", ENERGY_PER_SAMPLE, "MFU (%)")
OPTIONAL_COLUMNS += ("strategy", "ranks", "global throughput (samples/s)", "scaling efficiency", "under load")
#: Figures left out of the tables people read when no case has them (runs from before the
#: memory pass or the FLOP count, CUDA only, --find-max-batch only).
OPTIONAL_FIGURES = ("GFLOP/sample (fwd+bwd)", "TFLOP/s")
OPTIONAL_FIGURES += ("tracked peak (MiB)", "predicted peak (MiB)", "allocator peak (MiB)")
OPTIONAL_FIGURES += ("largest batch", "largest batch predicted")
OPTIONAL_FIGURES += ("process RSS peak (MiB)", "load average (1 min)", "other processes' CPU (%)")
#: Columns that only one kind of case fills (training steps, optimizer steps), left out of the
#: tables people read when no case of the run has a value in them.
KIND_COLUMNS = (
    "batch",
    "throughput (samples/s)",
    "peak memory (MiB)",
    "activations (MiB)",
    "compulsory (B/param)",
    "kernel traffic (B/param)",
    "device time (ms)",
    "host time (ms)",
    "achieved (GB/s)",
    "of bandwidth (%)",
    "of bandwidth in wall time (%)",
    "working set (MiB)",
    "of DRAM bandwidth (%)",
)


def summary_frame(frame: pd.DataFrame, prepare: Callable[[pd.DataFrame], pd.DataFrame] | None = None) -> pd.DataFrame:
    """One row per case: its configuration, status and main measurements, units in headers,
    unrounded (summary.csv keeps every digit; the other tables round when they write).
    ``prepare``: ``KindParts.prepare``, the kinds' derived columns."""
    frame = with_derived_columns(prepare(frame) if prepare is not None else frame)
    energy = frame["energy_per_step_j"] if "energy_per_step_j" in frame else pd.Series([None] * len(frame))
    batch = pd.to_numeric(frame["batch_size"], errors="coerce") if "batch_size" in frame else float("nan")
    columns = {}
    for field, header, scale in SUMMARY_COLUMNS:
        values = frame[field] if field in frame else pd.Series([None] * len(frame), dtype=object)
        if field in OPTIMIZER_STEP_FIELDS:
            values = values.where(frame["kind"] == OPTIMIZER_STEP) if "kind" in frame else values.map(lambda _: None)
        values = values.reset_index(drop=True)
        columns[header] = values if scale is None else pd.to_numeric(values, errors="coerce") * scale
        if field == "host_bound":  # the host's and the device's cost of a step side by side
            columns[ENERGY_PER_SAMPLE] = (pd.to_numeric(energy, errors="coerce") / batch).reset_index(drop=True)
    if "case_id" in frame:
        # A sweep over model arguments or hyperparameters: the names as in the case id
        # (``mypkg.nets:build[depth=18]``, ``sgdm[lr=0.1]``), or its rows look the same.
        parts = frame["case_id"].astype(str).str.split("/").reset_index(drop=True)
        for position, header in enumerate(("model", "optimizer")):
            columns[header] = pd.Series(
                [
                    name if isinstance(name, str) and name.startswith(f"{plain}[") else plain
                    for name, plain in zip(parts.str[position], columns[header], strict=True)
                ],
                dtype=object,
            )
    return pd.DataFrame(columns)


def with_derived_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the summary's columns that are no Record field added: ``STEP_PEAK``,
    ``PROCESS_RSS`` (where the step peak is the tracked one in its place) and ``UNDER_LOAD``
    (``*`` or empty)."""
    rss = process_rss(frame)
    peak = pd.to_numeric(frame["peak_memory_bytes"], errors="coerce") if "peak_memory_bytes" in frame else np.nan
    other = pd.to_numeric(frame.get("other_cpu_fraction", pd.Series(np.nan, index=frame.index)), errors="coerce")
    return frame.assign(
        **{
            STEP_PEAK: step_peak_bytes(frame),
            PROCESS_RSS: pd.Series(peak, index=frame.index).where(rss & tracked_peak(frame).notna()),
            UNDER_LOAD: (other > BUSY_FRACTION).map({True: "*", False: ""}),
        }
    )


def under_load_note(frame: pd.DataFrame) -> str | None:
    """A sentence naming the cases measured under load (``UNDER_LOAD``), or None."""
    loaded = with_derived_columns(frame)
    cases = loaded.loc[loaded[UNDER_LOAD] == "*", "case_id"].astype(str).tolist() if "case_id" in loaded else []
    if not cases:
        return None
    return (
        f"* under load: {len(cases)} of {len(loaded)} cases ran while other processes used more than "
        f"{BUSY_FRACTION:.0%} of the CPUs (their step times and throughputs are partly the other work's; rerun "
        f"them on a quieter machine or with --threads): {', '.join(cases)}"
    )


def readable(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary for people: channels-last, compile, the host, energy and data-parallel
    columns only when some case has them, and the figures of one kind of case or device only
    when some case has a value in them."""
    unused = [c for c in OPTIONAL_COLUMNS if not (summary[c].notna() & summary[c].astype(bool)).any()]
    unused += [c for c in OPTIONAL_FIGURES if summary[c].isna().all()]
    unused += [c for c in KIND_COLUMNS if pd.to_numeric(summary[c], errors="coerce").isna().all()]
    return summary.drop(columns=unused)


def failures(frame: pd.DataFrame) -> list[str]:
    """``case_id: status: message`` for every case that did not end ``ok``."""
    if frame.empty:
        return []
    failed = frame[frame["status"] != "ok"]
    return [f"{row.case_id}: {row.status}: {row.error}" for row in failed.itertuples()]


def _context(run: Run, frame: pd.DataFrame) -> list[str]:
    """The lines above the table in summary.md: what ran, where, with what."""
    manifest, env = run.manifest, run.env
    devices = ", ".join(sorted(frame["device_name"].dropna().unique())) if run.records else ""
    context = [
        f"# convbench run {run.run_id}",
        "",
        f"- suite: {manifest.get('suite')}; status: {manifest.get('status')} "
        f"({len(run.records)} of {manifest.get('cases_total')} cases, {manifest.get('failures')} failed)",
        f"- started {manifest.get('started')}, finished {manifest.get('finished')}",
        f"- device: {devices or 'none recorded'}; host: {env.get('hostname')}",
        f"- torch {env.get('torch')}, CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}, "
        f"Python {env.get('python')}, commit {env.get('git_commit')}{' (dirty)' if env.get('git_dirty') else ''}",
    ]
    return [
        *map(markdown_text, context),
        "",
        "Throughput = batch / median step time over every timed step; IQR = 75th minus 25th percentile. "
        "MiB = 2^20 bytes; activations = peak minus the memory in use before the first step, "
        "the gradients and the optimizer state. Host syncs/step: host-device synchronisations in one "
        "step (on the CPU, the operations that would synchronise on CUDA); host-bound: the GPU idled "
        "more than a tenth of the step waiting for the host; energy: the GPU's energy counter over "
        "the timed steps per sample (columns shown when some case has them).",
        "",
    ]


def write_tables(run_dir: Path | str, parts: KindParts) -> list[Path]:
    """Write summary.csv (unrounded), summary.md (with the run's context and its failed cases)
    and summary.tex (booktabs) into the run folder; returns their paths."""
    run = load_run(run_dir)
    frame = run.frame()
    return _write_tables(run, frame, summary_frame(frame, parts.prepare), parts.notes(frame))


def _write_tables(run: Run, frame: pd.DataFrame, summary: pd.DataFrame, notes: list[str]) -> list[Path]:
    shown = readable(summary)
    markdown = _context(run, frame) + [markdown_table(shown, format_number)]
    loaded = under_load_note(frame)
    if loaded:
        markdown += ["", markdown_text(loaded)]
    if notes:
        markdown += ["", "## Above 100%", "", *(f"- {line}" for line in notes)]
    failed = failures(frame)
    if failed:
        markdown += ["", "## Cases that did not finish", "", *(f"- {markdown_text(line)}" for line in failed)]
    written = []
    for name, text in (
        ("summary.csv", summary.to_csv(index=False)),
        ("summary.md", "\n".join(markdown) + "\n"),
        ("summary.tex", latex_table(shown, f"convbench run {run.run_id}", f"tab:convbench-{run.run_id}")),
    ):
        write_atomic(run.path / name, text, inside=run.path)
        written.append(run.path / name)
    return written


# ---------------------------------------------------------------------------------------
# The two pages.

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; color: #1a1a1a; margin: 0; }
main { max-width: 90rem; margin: 0 auto; padding: 1rem 1.5rem 3rem; }
h1 { font-size: 1.5rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ccc; }
h3 { font-size: 1rem; margin-bottom: .3rem; }
table { border-collapse: collapse; margin: .5rem 0; font-size: .8rem; }
th, td { padding: .2rem .45rem; border-bottom: 1px solid #e3e3e3; text-align: left; vertical-align: top; }
th { border-bottom: 2px solid #888; } .num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f6f6; padding: .6rem; overflow-x: auto; font-size: .8rem; white-space: pre-wrap; }
td pre { margin: 0; padding: .1rem .3rem; }
.wide { overflow-x: auto; } td { white-space: nowrap; } td:has(pre) { white-space: normal; }
.status { padding: .6rem .9rem; border-left: .4rem solid #0072b2; background: #eef5fb; }
.status.warning { border-color: #d55e00; background: #fdf1ea; }
figure { margin: 1.2rem 0 2rem; } img { max-width: 100%; height: auto; }
figcaption { font-size: .85rem; color: #444; max-width: 60rem; }
"""


@dataclass
class Sections:
    """What both pages show, gathered once from the run folder."""

    run: Run
    status: str
    summary: pd.DataFrame
    failures: pd.DataFrame
    rf: pd.DataFrame | None
    figures: list[FigureSpec]
    # what each percentage above 100 in the summary exceeds, and why
    notes: list[str] = dataclasses.field(default_factory=list)


def _png_width(path: Path) -> int:
    """The PNG's width in pixels, from its IHDR chunk."""
    return int.from_bytes(path.read_bytes()[16:20], "big")


def _html_figure(spec: FigureSpec, folder: Path) -> str:
    png = folder / FIGURES_DIR / f"{spec.name}.png"
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    # PNGs are drawn at 200 dpi; shown at two thirds of their pixels (max-width shrinks the
    # widest to the page), a one-column figure is about 470 px wide, its labels as large as
    # the text around it (at half, 350 px, they were smaller than the captions).
    return (
        f'<figure id="figure-{spec.name}"><h3>{html.escape(spec.title)}</h3>'
        f'<img src="data:image/png;base64,{data}" alt="{html.escape(spec.title)}" width="{_png_width(png) * 2 // 3}">'
        f"<figcaption>{html.escape(spec.caption)} Vector version: "
        f'<a href="{FIGURES_DIR}/{spec.name}.pdf">{FIGURES_DIR}/{spec.name}.pdf</a>.</figcaption></figure>'
    )


def _scrolling(table: str) -> str:
    """A wide table scrolls sideways inside the page instead of running off it."""
    return f'<div class="wide">{table}</div>'


def html_report(sections: Sections) -> str:
    """The whole report as one HTML page that needs nothing but itself."""
    run = sections.run
    warning = " warning" if run.manifest.get("status") != "complete" or len(sections.failures) else ""
    failures = (
        "<p>None: every case has a record and ended ok.</p>"
        if sections.failures.empty
        else "<table>\n<tr><th>case</th><th>status</th><th>error</th></tr>\n"
        + "\n".join(
            f"<tr><td>{html.escape(r.case)}</td><td>{html.escape(r.status)}</td>"
            f"<td><pre>{html.escape(r.error)}</pre></td></tr>"
            for r in sections.failures.itertuples(index=False)
        )
        + "\n</table>"
    )
    body = [
        f"<h1>convbench run <code>{html.escape(run.run_id)}</code></h1>",
        f'<p class="status{warning}">{"<strong>Warning:</strong> " if warning else ""}'
        f"{html.escape(sections.status)}</p>",
        f"<p>Suite <code>{html.escape(str(run.manifest.get('suite', '')))}</code>, started "
        f"{html.escape(str(run.manifest.get('started')))}, finished {html.escape(str(run.manifest.get('finished')))}."
        "</p>",
        "<h2 id=results>Results</h2>",
        _scrolling(html_table(sections.summary)),
        *(["<ul>", *(f"<li>{html.escape(note)}</li>" for note in sections.notes), "</ul>"] if sections.notes else []),
        "<p>The same table: <a href=summary.csv>summary.csv</a> (unrounded), <a href=summary.md>summary.md</a>, "
        "<a href=summary.tex>summary.tex</a> (LaTeX, booktabs).</p>",
        "<h2 id=failures>Failed cases</h2>",
        failures,
        "<h2 id=figures>Figures</h2>",
        *(_html_figure(spec, run.path) for spec in sections.figures),
    ]
    if sections.rf is not None:
        body += ["<h2 id=receptive-fields>Receptive fields</h2>", _scrolling(html_table(rf_table(sections.rf)))]
    body += [
        "<h2 id=configuration>Configuration</h2>",
        f"<pre>{html.escape(run.suite_toml)}</pre>",
        "<h2 id=machine>Machine and software</h2>",
        _scrolling(html_table(environment_frame(run.env))),
    ]
    return (
        "<!DOCTYPE html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n"
        '<meta name=viewport content="width=device-width, initial-scale=1">\n'
        '<link rel=icon href="data:,">\n'  # no favicon request: the page loads nothing
        f"<title>convbench run {html.escape(run.run_id)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        "<body>\n<main>\n" + "\n".join(body) + "\n</main>\n</body>\n</html>\n"
    )


def _markdown_text(text: str) -> str:
    """A table cell: one line, pipes escaped by markdown_table."""
    return " ".join(str(text).split())


def markdown_report(sections: Sections) -> str:
    """The report for GitHub: tables inline, figures linked by relative path."""
    run = sections.run
    text = markdown_text  # what the run folder says goes on the page as text, never as HTML
    lines = [
        f"# convbench run {text(run.run_id)}",
        "",
        f"> {'**Warning:** ' if run.manifest.get('status') != 'complete' or len(sections.failures) else ''}"
        f"{text(sections.status)}",
        "",
        f"Suite {text(run.manifest.get('suite', ''))}, started {text(run.manifest.get('started'))}, "
        f"finished {text(run.manifest.get('finished'))}.",
        "",
        "## Results",
        "",
        markdown_table(sections.summary, format_number),
        "",
        *(line for note in sections.notes for line in (f"- {note}", "")),
        "Also as [summary.csv](summary.csv) (unrounded) and [summary.tex](summary.tex) (LaTeX).",
        "",
        "## Failed cases",
        "",
    ]
    if sections.failures.empty:
        lines.append("None: every case has a record and ended ok.")
    else:
        lines.append(markdown_table(sections.failures.map(_markdown_text)))
    lines += ["", "## Figures", ""]
    for spec in sections.figures:
        lines += [
            f"### {spec.title}",
            "",
            f"![{spec.title}]({FIGURES_DIR}/{spec.name}.png)",
            "",
            f"{spec.caption} [PDF]({FIGURES_DIR}/{spec.name}.pdf)",
            "",
        ]
    if sections.rf is not None:
        lines += ["## Receptive fields", "", markdown_table(rf_table(sections.rf), format_number), ""]
    fence = code_fence(run.suite_toml)
    lines += ["## Configuration", "", f"{fence}toml", run.suite_toml.rstrip(), fence, "", "## Machine and software", ""]
    lines.append(markdown_table(environment_frame(run.env).map(_markdown_text)))
    return "\n".join(lines) + "\n"


def write_report(run_dir: Path | str, parts: KindParts) -> list[Path]:
    """Write a step or optimizer-step run folder's figures, tables and both pages, with what
    the kinds add (``parts``); returns the files written (``bench.kinds.write_report`` picks
    the report of a run's kind and gives the parts)."""
    run = load_run(run_dir)
    rf = _rf(run)  # read (and a damaged one refused) before anything is written
    _rf_maps(run)
    frame = run.frame()
    summary = summary_frame(frame, parts.prepare)
    limits = parts.notes(frame)
    written = _write_tables(run, frame, summary, limits)
    specs = write_figures(run, parts.figures)
    written += [run.path / FIGURES_DIR / f"{s.name}.{ext}" for s in specs for ext in ("png", "pdf")]
    failed = failures_frame(frame, missing_cases(run, parts.expected_cases))
    notes = [note for note in (under_load_note(frame),) if note] + limits
    sections = Sections(run, run_status(run), readable(summary), failed, rf, specs, notes)
    write_atomic(run.path / "report.html", html_report(sections), inside=run.path)
    write_atomic(run.path / "report.md", markdown_report(sections), inside=run.path)
    return written + [run.path / "report.html", run.path / "report.md"]

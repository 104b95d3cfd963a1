"""Figures: one function per figure, each taking a DataFrame and returning a matplotlib Figure.

Every figure uses the same theme (seaborn's ``paper`` context, a white grid and the
colour-blind-safe palette) and is sized for a paper: ``COLUMN`` inches wide for one
column, ``PAGE`` for the full text width. ``save`` writes PNG (for the web) and PDF (for
papers, with embedded TrueType fonts) side by side.
"""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files; no display is needed or assumed

import matplotlib.lines  # noqa: E402
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from bench.reporting.tables import printable, process_rss, step_peak_bytes, tracked_peak  # noqa: E402

COLUMN = 3.5  # inches: one column of a two-column paper
PAGE = 7.0  # inches: the full text width
PALETTE = "colorblind"
PNG_DPI = 200


def use_theme() -> None:
    """Apply the suite's one theme to everything drawn after this call."""
    sns.set_theme(
        context="paper",
        style="whitegrid",
        palette=PALETTE,
        rc={"pdf.fonttype": 42, "ps.fonttype": 42, "figure.dpi": 100, "savefig.bbox": "tight"},
    )


def save(figure: Figure, stem: Path, inside: Path | None = None) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` and close the figure; returns both paths. Each is
    drawn in memory and written by ``bench.storage.store.write_atomic`` (a link is followed,
    a device or FIFO written to, never replaced); ``inside``: the run folder they belong to,
    where no link is followed at all."""
    from bench.storage.store import write_atomic

    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    # Lay the figure out once (positions are fractions of the figure, the same at any dpi)
    # rather than once per file: the layout is most of the time a save takes.
    if figure.get_layout_engine() is not None:
        figure.get_layout_engine().execute(figure)
        figure.set_layout_engine("none")
    try:
        for path, options in zip(paths, ({"format": "png", "dpi": PNG_DPI}, {"format": "pdf"}), strict=True):
            drawn = io.BytesIO()
            figure.savefig(drawn, **options)
            write_atomic(path, drawn.getvalue(), inside=inside)
    finally:
        plt.close(figure)
    return paths


#: How ``trend_figure`` marks a run that ``compare`` flags against the run before it.
FLAG_MARKERS = {"regression": ("v", "regression"), "improvement": ("^", "improvement")}
#: Colours a figure's lines cycle through before the line style changes: eight colour-blind-safe
#: colours tell lines apart; past that, colour and dash pattern together do (``line_styles``).
LINE_COLOURS = 8
_DASHES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "D", "P", "X", "*", "h", "p")


def line_styles(count: int) -> list[dict]:
    """``count`` distinct line styles (matplotlib ``plot`` keywords): the palette's first
    ``LINE_COLOURS`` colours, then the same colours dashed, dotted, dash-dotted, then with
    other markers, so no two of up to 256 lines look alike (colour, dash, marker)."""
    colours = sns.color_palette(PALETTE, LINE_COLOURS)
    return [
        {
            "color": colours[i % LINE_COLOURS],
            "linestyle": _DASHES[i // LINE_COLOURS % len(_DASHES)],
            "marker": _MARKERS[i // (LINE_COLOURS * len(_DASHES)) % len(_MARKERS)],
        }
        for i in range(count)
    ]


def trend_figure(frame: pd.DataFrame) -> Figure:
    """Throughput (top) and peak memory (bottom, from zero) of each case over the runs.

    ``frame``: one row per case and run with ``started`` (ISO time), ``series`` (the line a
    row belongs to, e.g. the case id), ``throughput``, ``peak_memory_bytes`` (with
    ``tracked_peak_bytes`` and ``peak_memory_source`` where the records have them: CPU
    records are drawn at their tracked step peak, ``bench.reporting.tables.step_peak_bytes``),
    and the ``time`` and ``memory`` verdicts from ``bench.analyse.compare.flag_history``;
    flagged points get a large open marker, pointing down for a regression and up for an
    improvement. The legend lists the lines drawn (a series with no value in either panel,
    such as an optimizer-step case's throughput, is not drawn) and the flags that occur."""
    frame = frame.assign(
        when=pd.to_datetime(frame["started"]),
        peak_mib=step_peak_bytes(frame) / 2**20,
        series=frame["series"].astype(str).map(printable),  # names from other machines' runs
    )
    panels = (("throughput", "time", "throughput (samples/s)"), ("peak_mib", "memory", _peak_label(frame)))
    drawn = frame[frame[["throughput", "peak_mib"]].apply(pd.to_numeric, errors="coerce").notna().any(axis=1)]
    series = list(dict.fromkeys(drawn["series"]))
    styles = dict(zip(series, line_styles(len(series)), strict=True))
    figure, all_axes = plt.subplots(2, 1, sharex=True, figsize=(PAGE, 5.0 + 0.12 * max(0, len(series) - 16)))
    flags_drawn = set()
    for axes, (column, verdict, label) in zip(all_axes, panels, strict=True):
        for name in series:
            points = frame[(frame["series"] == name) & pd.to_numeric(frame[column], errors="coerce").notna()]
            points = points.sort_values("when")
            axes.plot(points["when"], points[column].astype(float), markersize=3, label=name, **styles[name])
            for flag, (marker, _) in FLAG_MARKERS.items():
                hit = points[points[verdict] == flag]
                axes.scatter(hit["when"], hit[column], marker=marker, s=90, facecolors="none", edgecolors="black")
                flags_drawn |= {flag} if len(hit) else set()
        axes.set_ylabel(label)
    all_axes[1].set_ylim(bottom=0)  # memory is a quantity: its axis starts at nothing
    handles = [matplotlib.lines.Line2D([], [], markersize=3, **styles[name]) for name in series]
    labels = list(series)
    for flag in (f for f in FLAG_MARKERS if f in flags_drawn):
        marker, text = FLAG_MARKERS[flag]
        flag_handle = dict(marker=marker, markersize=9, fillstyle="none", color="black", linestyle="none")
        handles.append(matplotlib.lines.Line2D([], [], **flag_handle))
        labels.append(text)
    all_axes[1].set_xlabel("run started (UTC)")
    figure.autofmt_xdate()
    columns = 1 + len(labels) // 24
    all_axes[0].legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, ncols=columns)
    return figure


def _peak_label(frame: pd.DataFrame) -> str:
    """The memory panel's axis label: what its peak is, where CPU records are among it."""
    on_cpu = process_rss(frame)
    tracked = tracked_peak(frame)[on_cpu].notna()
    if not on_cpu.any():
        return "peak memory (MiB)"
    if tracked.all():
        return "peak memory (MiB)\nCPU: tracked step peak"
    return "peak memory (MiB)\nCPU: " + ("tracked step peak, else process RSS" if tracked.any() else "process RSS")


def speedup_figure(frame: pd.DataFrame) -> Figure:
    """Throughput of each case on each device relative to the reference device (1 = as fast).

    ``frame``: one row per case and device with ``case``, ``device`` and ``speedup``, as
    ``bench.analyse.compare.side_by_side`` returns it; ``frame.attrs["speedup_of"]`` names what the
    speed-up is of when it is not throughput (training runs: time to target)."""
    # Names from other machines' runs: what is not printable is drawn as its escape.
    frame = frame.assign(
        case=frame["case"].astype(str).map(printable), device=frame["device"].astype(str).map(printable)
    )
    cases = list(dict.fromkeys(frame["case"]))
    figure, axes = plt.subplots(figsize=(PAGE, 1.0 + 0.3 * len(cases) * frame["device"].nunique()))
    sns.barplot(data=frame, y="case", x="speedup", hue="device", order=cases, ax=axes)
    axes.axvline(1.0, color="black", linewidth=0.8)
    axes.set_xlabel(f"{frame.attrs.get('speedup_of', 'throughput')} speed-up over the reference device")
    axes.set_ylabel("")
    axes.legend(title="device", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return figure


# ---------------------------------------------------------------------------------------
# The run's figures. Each takes the records of a run as a DataFrame (``Run.frame()``), or
# the rows of rf.csv, or a theory frame, and returns a Figure. Cases that failed (status
# other than ``ok``, measurements None) are shown by their status, never plotted as zeros.

MIB = 2**20
STATUS_TEXT = {"oom": "out of memory", "error": "error", "diverged": "diverged"}
#: Fields a case differs by, with how each is written in a label.
_LABEL_FIELDS = {
    "model": str,
    "optimizer": str,
    "batch_size": lambda b: f"b{b}",
    "precision": str,
    "channels_last": lambda on: "channels_last" if on else "contiguous",
    "compile": lambda on: "compiled" if on else "eager",
    "dataset": str,
    "strategy": str,  # data parallel: ddp | zero1 | fsdp, and the ranks
    "world_size": lambda n: f"w{int(n)}",
}


def _ok(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["status"] == "ok"]


def _varying(frame: pd.DataFrame, fields: list[str]) -> list[str]:
    """The fields among ``fields`` that take more than one value in ``frame``."""
    return [f for f in fields if f in frame and frame[f].astype(str).nunique() > 1]


def _labels(frame: pd.DataFrame, fields: list[str]) -> pd.Series:
    """One short label per row: the first field, then only the others that differ between
    the rows, e.g. 'cnn · adam'."""
    shown = fields[:1] + _varying(frame, fields[1:])
    return frame.apply(lambda row: " · ".join(_LABEL_FIELDS[f](row[f]) for f in shown), axis=1)


def _values(series: pd.Series) -> np.ndarray:
    """A numeric column with None as NaN."""
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)


def algorithm(optimizer: str) -> str:
    """``adam`` or ``sgdm`` for a registry name; the name itself for anything else."""
    import optimizers
    from models.registry import UnknownNameError

    try:
        return optimizers.spec(optimizer).algorithm
    except UnknownNameError:
        return optimizer


def throughput_interval(batch_size: int, step_times_ms: list[float]) -> tuple[float, float, float]:
    """(median, low, high) throughput in samples/s from the step-time samples: the median
    step time gives the median throughput, and the step-time quartiles give its IQR
    (batch/q75 .. batch/q25), since throughput falls as step time rises."""
    q25, q50, q75 = np.percentile(np.asarray(step_times_ms, dtype=float), [25, 50, 75])
    per_second = 1000.0 * batch_size
    return per_second / q50, per_second / q75, per_second / q25


def throughput_figure(frame: pd.DataFrame) -> Figure:
    """Throughput by model (bars coloured by optimizer) with the IQR as error bars, one panel
    per precision and one row of panels per batch size."""
    fields = ["model", "channels_last", "compile", "dataset", "strategy", "world_size"]
    frame = frame.assign(case=_labels(frame, fields))
    optimizer_names = list(dict.fromkeys(frame["optimizer"]))
    colours = dict(zip(optimizer_names, sns.color_palette(PALETTE, len(optimizer_names)), strict=True))
    precisions = sorted(frame["precision"].unique())
    batch_sizes = sorted(frame["batch_size"].unique())
    width = COLUMN if len(precisions) == 1 else min(PAGE, 1.2 + 2.4 * len(precisions))
    figure, grid = plt.subplots(
        len(batch_sizes),
        len(precisions),
        figsize=(width, 2.4 * len(batch_sizes)),
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    cases = list(dict.fromkeys(frame["case"]))
    for row, batch_size in zip(grid, batch_sizes, strict=True):
        for axes, precision in zip(row, precisions, strict=True):
            panel = frame[(frame["precision"] == precision) & (frame["batch_size"] == batch_size)]
            _throughput_panel(axes, panel, cases, optimizer_names, colours)
            axes.set_title(f"{precision}, batch {batch_size}")
        row[0].set_ylabel("throughput (samples/s)")
    handles = [matplotlib.patches.Patch(color=colours[name], label=name) for name in optimizer_names]
    figure.legend(handles=handles, title="optimizer", loc="outside right upper", frameon=False)
    return figure


def _throughput_panel(axes, panel: pd.DataFrame, cases: list[str], optimizer_names: list[str], colours) -> None:
    width = 0.8 / len(optimizer_names)
    for k, name in enumerate(optimizer_names):
        for _, row in panel[panel["optimizer"] == name].iterrows():
            x = cases.index(row["case"]) - 0.4 + width * (k + 0.5)
            if row["status"] != "ok":
                axes.text(
                    x,
                    0,
                    " " + STATUS_TEXT.get(row["status"], row["status"]),
                    rotation=90,
                    ha="center",
                    va="bottom",
                    fontsize="x-small",
                    color=colours[name],
                )
                continue
            samples = row["step_time_samples_ms"]
            if isinstance(samples, list) and samples:
                middle, low, high = throughput_interval(row["batch_size"], samples)
                errors = [[middle - low], [high - middle]]
            else:
                middle, errors = row["throughput"], None
            axes.bar(x, middle, width, color=colours[name])
            if errors is not None:
                axes.errorbar(x, middle, yerr=errors, fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
    axes.set_xticks(
        range(len(cases)), cases, rotation=30 if len(cases) > 3 else 0, ha="right" if len(cases) > 3 else "center"
    )
    axes.set_xlim(-0.5, len(cases) - 0.5)
    axes.grid(axis="x", visible=False)


#: The memory a training step holds, in stacking order: Record field and legend label.
MEMORY_PARTS = {
    "param_bytes": "parameters",
    "grad_bytes": "gradients",
    "optimizer_state_bytes": "optimizer state",
    "activation_bytes": "activations",
}


#: The same, exact: the memory pass's categories at the tracked peak, which they add up to.
EXACT_MEMORY_PARTS = {
    "tracked_parameters_bytes": "parameters",
    "tracked_buffers_bytes": "buffers",
    "tracked_gradients_bytes": "gradients",
    "tracked_optimizer_state_bytes": "optimizer state",
    "tracked_inputs_bytes": "inputs",
    "tracked_activations_bytes": "activations (saved)",
    "tracked_temporaries_bytes": "temporaries",
}


def memory_parts(frame: pd.DataFrame) -> dict[str, str]:
    """EXACT_MEMORY_PARTS where the run has the memory pass's breakdown, else MEMORY_PARTS."""
    exact = "tracked_peak_bytes" in frame and frame["tracked_peak_bytes"].notna().any()
    return EXACT_MEMORY_PARTS if exact else MEMORY_PARTS


def state_ratio_text(frame: pd.DataFrame) -> str | None:
    """'Adam / SGDM optimizer state: 2.00×' per model (once when every model agrees), from
    the successful cases; None when the run lacks either algorithm."""
    ok = _ok(frame).dropna(subset=["optimizer_state_bytes"])
    state = ok.assign(algorithm=ok["optimizer"].map(algorithm)).groupby(["model", "algorithm"])
    state = state["optimizer_state_bytes"].median().unstack()
    if not {"adam", "sgdm"} <= set(state.columns):
        return None
    ratios = (state["adam"] / state["sgdm"]).dropna()
    if ratios.empty:
        return None
    texts = {f"{ratio:.2f}×" for ratio in ratios}
    if len(texts) == 1:
        return f"Adam / SGDM optimizer state: {texts.pop()}" + (" for every model" if len(ratios) > 1 else "")
    return "Adam / SGDM optimizer state: " + ", ".join(f"{m} {r:.2f}×" for m, r in ratios.items())


def memory_breakdown_figure(frame: pd.DataFrame) -> Figure:
    """One horizontal stacked bar per case in MiB, of the exact categories at the tracked
    peak where the run has them (``memory_parts``), else of parameters, gradients, optimizer
    state and activations; the Adam / SGDM optimizer-state ratio above. Failed cases keep
    their row, with their status written instead of a bar."""
    cases = frame.assign(label=_labels(frame, list(_LABEL_FIELDS)))
    parts = memory_parts(frame)
    legend_rows = -(-len(parts) // 2)  # two columns; the height had room for two rows
    height = 1.1 + 0.22 * len(cases) + 0.2 * (legend_rows - 2)
    figure, axes = plt.subplots(figsize=(COLUMN, height), layout="constrained")
    colours = sns.color_palette(PALETTE, len(parts))
    positions = np.arange(len(cases))
    left = np.zeros(len(cases))
    ok = (cases["status"] == "ok").to_numpy()
    for (column, label), colour in zip(parts.items(), colours, strict=True):
        mib = np.nan_to_num(_values(cases[column]).clip(min=0)) / MIB
        axes.barh(positions[ok], mib[ok], left=left[ok], color=colour, label=label, height=0.7)
        left += mib
    for position, status in zip(positions[~ok], cases["status"][~ok], strict=True):
        axes.text(0, position, " " + STATUS_TEXT.get(status, status), va="center", fontsize="x-small")
    axes.set_yticks(positions, cases["label"])
    axes.invert_yaxis()
    axes.set_xlabel("memory (MiB)")
    axes.grid(axis="y", visible=False)
    ratio = state_ratio_text(frame)
    if ratio:
        axes.set_title(ratio, fontsize="small")
    figure.legend(loc="outside lower center", ncols=2, frameon=False)
    return figure


def state_bytes_figure(frame: pd.DataFrame) -> Figure:
    """Optimizer-state bytes per parameter: theory (state buffers × bytes per parameter
    element) beside what each model measured, grouped by optimizer."""
    ok = _ok(frame).dropna(subset=["state_bytes_per_param"])
    ok = ok.assign(
        theory=_values(ok["state_buffers_theory"]) * _values(ok["param_bytes"]) / _values(ok["params"]),
        measured=_values(ok["state_bytes_per_param"]),
    )
    table = ok.groupby(["optimizer", "model"], sort=False)[["theory", "measured"]].median().reset_index()
    optimizer_names = list(dict.fromkeys(table["optimizer"]))
    model_names = list(dict.fromkeys(table["model"]))
    bars = ["theory"] + model_names
    colours = dict(zip(bars, ["0.6"] + sns.color_palette(PALETTE, len(model_names)), strict=True))
    figure, axes = plt.subplots(figsize=(COLUMN, 2.4), layout="constrained")
    width = 0.8 / len(bars)
    labelled = set()
    for g, name in enumerate(optimizer_names):
        group = table[table["optimizer"] == name]
        heights = [group["theory"].median()] + [
            group.loc[group["model"] == m, "measured"].median() for m in model_names
        ]
        for k, (bar, height) in enumerate(zip(bars, heights, strict=True)):
            if np.isnan(height):
                continue
            drawn = axes.bar(
                g - 0.4 + width * (k + 0.5),
                height,
                width,
                color=colours[bar],
                hatch="//" if bar == "theory" else None,
                edgecolor="white",
                label=None if bar in labelled else bar,
            )
            labelled.add(bar)
            axes.bar_label(drawn, fmt="%.2f", fontsize="xx-small", padding=1)
    axes.set_xticks(range(len(optimizer_names)), optimizer_names)
    axes.set_xlabel("optimizer")
    axes.set_ylabel("optimizer state (bytes / parameter)")
    axes.grid(axis="x", visible=False)
    axes.margins(y=0.15)
    if labelled:
        axes.legend(loc="upper right", fontsize="x-small")
    else:
        axes.text(0.5, 0.5, "no successful case", transform=axes.transAxes, ha="center")
    return figure


#: How a failed case is marked on the x-axis of a sweep, by status: marker and legend text.
FAILED_MARKERS = {"oom": ("x", "out of memory"), "diverged": ("d", "diverged"), "error": ("P", "error")}


def batch_scaling_figure(frame: pd.DataFrame) -> Figure:
    """Throughput and peak memory against batch size from zero, one line per model and
    optimizer (a row of panels per precision); memory is a training step's peak, on the CPU
    the tracked one (``bench.reporting.tables.step_peak_bytes``), not the process's. A failed
    case is marked on the x-axis by its status (``FAILED_MARKERS``), so no series vanishes."""
    series = ["model", "optimizer", "channels_last", "compile", "dataset", "strategy", "world_size"]
    frame = frame.assign(series=_labels(frame, series), peak_mib=step_peak_bytes(frame) / MIB)
    models_ = list(dict.fromkeys(frame["model"]))
    optimizer_names = list(dict.fromkeys(frame["optimizer"]))
    colours = dict(zip(models_, sns.color_palette(PALETTE, len(models_)), strict=True))
    styles = dict(zip(optimizer_names, ["-o", "--s", ":^", "-.D", "-v", "--P"] * 3, strict=False))
    precisions = sorted(frame["precision"].unique())
    figure, grid = plt.subplots(
        len(precisions), 2, figsize=(PAGE, 2.4 * len(precisions)), squeeze=False, layout="constrained"
    )
    for row, precision in zip(grid, precisions, strict=True):
        panel = frame[frame["precision"] == precision]
        for label, line in panel.groupby("series", sort=False):
            line = line.sort_values("batch_size")
            ok = line[line["status"] == "ok"]
            colour, style = colours[line["model"].iloc[0]], styles[line["optimizer"].iloc[0]]
            for axes, column in zip(row, ["throughput", "peak_mib"], strict=True):
                axes.plot(ok["batch_size"], _values(ok[column]), style, color=colour, label=label, markersize=4)
                # A failed case keeps its place: its mark on the x-axis, so a series that
                # never ran (diverged, say) still shows where it was tried.
                for status, (marker_style, name) in FAILED_MARKERS.items():
                    failed = line[line["status"] == status]
                    if len(failed):
                        (marker,) = axes.plot(
                            failed["batch_size"],
                            np.zeros(len(failed)),
                            marker_style,
                            color=colour,
                            markersize=7,
                            mew=1.5,
                            clip_on=False,
                            transform=axes.get_xaxis_transform(),
                            label=name,
                        )
                        marker.set_in_layout(False)
        for axes in row:
            axes.set_xscale("log", base=2)
            axes.set_xticks(
                sorted(frame["batch_size"].unique()), [str(b) for b in sorted(frame["batch_size"].unique())]
            )
            axes.minorticks_off()
            axes.set_xlabel("batch size (samples)")
            axes.set_title(precision)
        row[0].set_ylabel("throughput (samples/s)")
        row[1].set_ylabel(_peak_label(frame))
        for axes in row:  # from zero: a 1 MiB difference on an 830 MiB process is not a slope
            axes.set_ylim(bottom=0)
    lines = {
        label: handle for axes in grid[:, 0] for handle, label in zip(*axes.get_legend_handles_labels(), strict=True)
    }
    for marker_style, name in FAILED_MARKERS.values():
        if lines.pop(name, None) is not None:
            lines[name] = matplotlib.lines.Line2D([], [], color="black", marker=marker_style, ls="none", mew=1.5)
    figure.legend(lines.values(), lines.keys(), loc="outside right upper", frameon=False, fontsize="x-small")
    return figure


def batch_sweeps(frame: pd.DataFrame) -> bool:
    """Whether some model, optimizer and precision ran at more than one batch size."""
    keys = ["model", "optimizer", "precision", "channels_last", "compile", "dataset"]
    return bool((frame.groupby(keys)["batch_size"].nunique() > 1).any())


def constant_gradient_frame(
    gradients: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0),
    steps: int = 100,
    sgdm: dict | None = None,
    adam: dict | None = None,
) -> pd.DataFrame:
    """The weight w(t) of SGDM and Adam under a constant gradient c, from ``optimizers.theory``;
    hyperparameters default to the registry's (SGDM lr 0.01, β 0.9; Adam lr 1e-3, β 0.9 and
    0.999, ε 1e-8). Columns: optimizer, c, t, w, and the hyperparameters as text."""
    from optimizers.theory import adam_constant_gradient, sgdm_constant_gradient

    sgdm = {"lr": 0.01, "beta": 0.9} | (sgdm or {})
    adam = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8} | (adam or {})
    rows = []
    for c in gradients:
        for t in range(1, steps + 1):
            rows.append({"optimizer": "SGDM", "c": c, "t": t, "w": sgdm_constant_gradient(t, c, **sgdm)["w"]})
            rows.append({"optimizer": "Adam", "c": c, "t": t, "w": adam_constant_gradient(t, c, **adam)["w"]})
    frame = pd.DataFrame(rows)
    settings = {
        "SGDM": f"η = {sgdm['lr']:g}, β = {sgdm['beta']:g}",
        "Adam": f"η = {adam['lr']:g}, β₁ = {adam['beta1']:g}, β₂ = {adam['beta2']:g}, ε = {adam['eps']:g}",
    }
    return frame.assign(hyperparameters=frame["optimizer"].map(settings))


def constant_gradient_figure(frame: pd.DataFrame) -> Figure:
    """How far w moves under a constant gradient c (log scale, so every c is legible): SGDM's
    distance scales with c, one decade per decade of c; Adam's is ηt for every c, one line."""
    gradients = sorted(frame["c"].unique())
    colours = dict(zip(gradients, sns.color_palette(PALETTE, len(gradients)), strict=True))
    figure, grid = plt.subplots(1, 2, figsize=(PAGE, 2.6), sharey=True, layout="constrained")
    for axes, name in zip(grid, ["SGDM", "Adam"], strict=True):
        panel = frame[frame["optimizer"] == name]
        # A dash pattern per c, so lines that coincide (Adam's) still show every colour.
        for c, dashes in zip(gradients, [(None, None), (6, 2), (2, 2), (6, 2, 2, 2)] * 3, strict=False):
            line = panel[panel["c"] == c]
            axes.plot(line["t"], -line["w"], color=colours[c], label=f"c = {c:g}", lw=1.5, dashes=dashes)
        axes.set_yscale("log")
        axes.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())  # decades suffice; minor ticks cost time
        axes.set_xlabel("step t")
        axes.set_title(f"{name} ({panel['hyperparameters'].iloc[0]})", fontsize="small")
    grid[0].text(0.03, 0.97, "−w ∝ c", transform=grid[0].transAxes, va="top", fontsize="small")
    grid[1].text(
        0.03, 0.97, "−w = ηt·|c|/(|c| + ε) ≈ ηt for every c", transform=grid[1].transAxes, va="top", fontsize="small"
    )
    grid[0].set_ylabel("distance moved −w(t) (weight units)")
    grid[0].legend(title="gradient", fontsize="x-small", loc="lower right")
    return figure


def axis_values(value: object) -> tuple[float, float] | None:
    """An rf.csv per-axis value as (h, w): a [h, w] list (or its text), or one number for
    both axes. A word ('global': the layer sees the whole input; 'irregular') or a missing
    value is None; a word for one axis only makes that axis NaN."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    if isinstance(value, (list, tuple)) and len(value) == 2:
        h, w = (float(v) if isinstance(v, (int, float)) else np.nan for v in value)
        return None if np.isnan(h) and np.isnan(w) else (h, w)
    if isinstance(value, (int, float)) and not np.isnan(value):
        return float(value), float(value)
    return None


#: Module-name parts of residual shortcuts (CIFAR ResNets: ``shortcut``, torchvision: ``downsample``).
SHORTCUT_PARTS = ("shortcut", "downsample")
MAX_LAYER_LABELS = 24


def is_shortcut(layer: str) -> bool:
    """Whether ``layer`` (a qualified module name) sits on a residual shortcut, off the main path."""
    return any(part in SHORTCUT_PARTS for part in layer.split("."))


def _shortcuts(axes, layers: pd.DataFrame, shortcut: np.ndarray, colour) -> None:
    """Shortcut layers as unconnected diamonds at the main-path layer they join after (the
    last main-path layer before them in network order), so the line does not zig-zag."""
    if not shortcut.any():
        return
    position = np.cumsum(~shortcut) - 1  # index along the main path of the layer at or before each
    sizes = [axis_values(v) for v in layers["rf"][shortcut]]
    axes.plot(
        position[shortcut],
        [np.nan if v is None else v[0] for v in sizes],
        "D",
        mfc="none",
        color=colour,
        markersize=5,
        label="shortcut (off the main path)",
    )


def receptive_field_figure(frame: pd.DataFrame) -> Figure:
    """Receptive-field size along each model's main path, analytic (line) beside the
    gradient-mask probe (open markers), one panel per model, every layer named (up to
    MAX_LAYER_LABELS, else evenly thinned); residual-shortcut layers are unconnected diamonds
    beside the block they belong to; layers that see the whole input are marked 'global' at
    the top. Width is drawn dashed where it differs from height."""
    model_names = list(dict.fromkeys(frame["model"]))
    columns = min(2, len(model_names))
    rows = -(-len(model_names) // columns)
    figure, grid = plt.subplots(
        rows, columns, figsize=(COLUMN * columns, 2.5 * rows), squeeze=False, layout="constrained"
    )
    colours = sns.color_palette(PALETTE, 2)
    for axes, name in zip(grid.flat, model_names, strict=False):
        every = frame[frame["model"] == name].reset_index(drop=True)
        shortcut = every["layer"].map(is_shortcut).to_numpy(dtype=bool)
        layers = every[~shortcut].reset_index(drop=True)
        analytic = [axis_values(v) for v in layers["rf"]]
        empirical = [axis_values(v) for v in layers.get("rf_empirical", pd.Series([None] * len(layers)))]
        index = np.arange(len(layers))
        _shortcuts(axes, every, shortcut, colours[0])
        clipped = layers["clipped"].astype(str).str.lower().eq("true").to_numpy() if "clipped" in layers else index < 0
        for axis, (label, dashes) in enumerate([("height", (None, None)), ("width", (4, 2))]):
            size = np.array([np.nan if v is None else v[axis] for v in analytic])
            probe = np.array([np.nan if v is None else v[axis] for v in empirical])
            if axis == 1 and np.array_equal(size, [np.nan if v is None else v[0] for v in analytic], equal_nan=True):
                break  # square fields: one line says it all
            suffix = "" if axis == 0 else f" ({label})"
            axes.plot(index, size, "-o", color=colours[0], markersize=3, dashes=dashes, label="analytic" + suffix)
            axes.plot(index, probe, "s", mfc="none", color=colours[1], markersize=6, label="gradient mask" + suffix)
            if axis == 0 and clipped.any():
                axes.plot(
                    index[clipped],
                    probe[clipped],
                    "x",
                    color=colours[1],
                    markersize=6,
                    label="mask cut by the input border",
                )
        # Layers without a size say what they are instead ('global', 'irregular'), on top.
        words = pd.Series([str(v) if a is None else None for v, a in zip(layers["rf"], analytic, strict=True)])
        for word, marker in zip(words.dropna().unique(), "^v", strict=False):
            at = index[(words == word).to_numpy()]
            label = "global (whole input)" if word == "global" else word
            (marks,) = axes.plot(
                at,
                np.ones(len(at)),
                marker,
                color="black",
                markersize=5,
                label=label,
                transform=axes.get_xaxis_transform(),
                clip_on=False,
            )
            marks.set_in_layout(False)
        axes.set_title(name)
        axes.set_xlabel("layer along the main path")
        axes.set_ylabel("receptive field (input pixels)")
        step = -(-len(layers) // MAX_LAYER_LABELS)  # every layer named up to MAX_LAYER_LABELS, else every step-th
        axes.set_xticks(index[::step], layers["layer"][::step], rotation=90, fontsize="xx-small")
        axes.set_ylim(bottom=0)
        axes.legend(fontsize="x-small", loc="upper left")
    for axes in grid.flat[len(model_names) :]:
        axes.set_visible(False)
    return figure


#: The heat maps rf_maps.npz holds per layer, and how each is titled.
MAP_TITLES = {"mask": "gradient mask", "erf": "effective receptive field"}


def receptive_field_maps_figure(frame: pd.DataFrame) -> Figure:
    """Heat maps over the input, one row per probed layer: where the gradient of the layer's
    centre unit is non-zero (the gradient mask), and the mean |gradient| of the model's real
    weights over random inputs (the effective receptive field), each with its analytic field
    outlined. ``frame`` has columns model, layer, map (a MAP_TITLES key), values (a 2-D
    array) and, optionally, field (the analytic [first, last] index per axis h, w)."""
    rows = list(dict.fromkeys(zip(frame["model"], frame["layer"], strict=True)))
    kinds = [k for k in MAP_TITLES if k in set(frame["map"])]
    figure, grid = plt.subplots(
        len(rows), len(kinds), figsize=(COLUMN, 1.6 * len(rows) + 0.3), squeeze=False, layout="constrained"
    )
    for (model, layer), row in zip(rows, grid, strict=True):
        for kind, axes in zip(kinds, row, strict=True):
            found = frame[(frame["model"] == model) & (frame["layer"] == layer) & (frame["map"] == kind)]
            if found.empty:
                axes.set_visible(False)
                continue
            values = np.asarray(found["values"].iloc[0], dtype=float)
            image = axes.imshow(
                values / values.max() if values.max() > 0 else values,
                cmap="cividis",
                vmin=0,
                vmax=1,
                interpolation="nearest",
            )
            field = found["field"].iloc[0] if "field" in found else None
            if isinstance(field, np.ndarray) and field.shape == (2, 2):
                (top, bottom), (left, right) = field
                axes.add_patch(
                    matplotlib.patches.Rectangle(
                        (left - 0.5, top - 0.5),
                        right - left + 1,
                        bottom - top + 1,
                        fill=False,
                        edgecolor="white",
                        linestyle="--",
                        linewidth=0.8,
                        label="analytic field",
                    )
                )
            if axes.get_subplotspec().is_first_row():
                axes.set_title(MAP_TITLES[kind], fontsize="small")
            if axes.get_subplotspec().is_first_col():
                axes.set_ylabel(f"{model} {layer}\ninput row (px)", fontsize="x-small")
            axes.set_xlabel("input column (px)", fontsize="x-small")
            axes.tick_params(labelsize="xx-small")
            axes.grid(False)
    if any(a.patches for a in figure.axes):
        figure.legend(
            handles=[matplotlib.patches.Patch(fill=False, edgecolor="black", linestyle="--", label="analytic field")],
            loc="outside lower center",
            fontsize="x-small",
            frameon=False,
        )
    bar = figure.colorbar(image, ax=grid, shrink=0.6)
    bar.set_label("|gradient| / its maximum", fontsize="x-small")
    bar.ax.tick_params(labelsize="xx-small")
    return figure


def _roofline_bar(axes: object, x: int, row: pd.Series, colour: object) -> None:
    """One optimizer-step case's bars, limits and label at ``x`` (see ``roofline_figure``)."""
    limit = _values(pd.Series([row.get("working_set_bandwidth_gbs")]))[0]
    dram = _values(pd.Series([row.get("measured_bandwidth_gbs")]))[0]
    device_share, wall_share = _values(pd.Series([row.get("bandwidth_fraction"), row.get("wall_bandwidth_fraction")]))
    traffic, achieved = _values(pd.Series([row.get("traffic_bandwidth_gbs"), row.get("achieved_bandwidth_gbs")]))
    reference = limit if not np.isnan(limit) else dram  # records from before the working-set limit
    if not np.isnan(traffic):
        axes.bar(x, traffic, 0.8, fill=False, edgecolor=colour, linewidth=0.8)
    if not np.isnan(achieved):
        axes.bar(x, achieved, 0.8, color=colour)
    if not np.isnan(wall_share):
        axes.bar(x, wall_share * reference, 0.36, facecolor="white", edgecolor=colour, hatch="////", linewidth=0.6)
    if not np.isnan(dram):
        axes.hlines(dram, x - 0.45, x + 0.45, colors="0.45", linewidth=1.2, linestyles=":")
    if not np.isnan(limit):
        axes.hlines(limit, x - 0.45, x + 0.45, colors="0.1", linewidth=1.5)
    parts = [f"{100 * device_share:.0f}%"] if not np.isnan(device_share) else []
    if not np.isnan(wall_share) and (not parts or round(100 * wall_share) != round(100 * device_share)):
        parts.append(f"wall {100 * wall_share:.0f}%")
    top = max((v for v in (achieved, wall_share * reference, traffic) if not np.isnan(v)), default=0.0)
    marked = "*" if max(np.nan_to_num([device_share, wall_share])) > 1 else ""
    axes.text(x, top, "\n".join(parts) + marked, ha="center", va="bottom", fontsize="xx-small")


def roofline_figure(frame: pd.DataFrame, notes: list[str] | None = None) -> Figure:
    """The optimizer step against the memory-bandwidth limit, one panel per model (rows) and
    precision (columns): per implementation, the bandwidth its kernels achieved on the
    algorithm's compulsory bytes in device time (solid bar, its % of the limit written above
    it), the same on wall time (hatched inner bar, "wall N%" where it differs: the host's
    share), and its kernels' actual traffic in device time (outlined bar), against the
    in-place update's bandwidth measured right before the case at the working set's size
    (black dash: the limit the percentages are of) and on DRAM-sized arrays (grey dots);
    Adam's implementations beside SGDM's. A percentage above 100 has a "*", and ``notes``
    (``bench.kinds.optimizer_step.roofline.limit_notes``) go under the figure. Failed cases keep their
    place, with their status."""
    frame = frame.assign(algorithm=frame["optimizer"].map(algorithm))
    frame = frame.sort_values(["algorithm"], kind="stable")
    model_names = list(dict.fromkeys(frame["model"]))
    precisions = list(dict.fromkeys(frame["precision"]))
    names = list(dict.fromkeys(frame["optimizer"]))
    algorithms = list(dict.fromkeys(frame["algorithm"]))
    colours = dict(zip(algorithms, sns.color_palette(PALETTE, len(algorithms)), strict=True))
    width = min(PAGE, 1.0 + max(COLUMN, 0.35 * len(names)) * len(precisions))
    characters = round(width * 19)  # of xx-small text across the figure
    wrapped = "\n".join(textwrap.fill(f"* {note}", characters, subsequent_indent="  ") for note in notes or [])
    figure, grid = plt.subplots(
        len(model_names),
        len(precisions),
        figsize=(width, 1.0 + 2.6 * len(model_names) + 0.1 * (wrapped.count("\n") + 1 if wrapped else 0)),
        sharey="row",
        squeeze=False,
        layout="constrained",
    )
    for row_axes, model in zip(grid, model_names, strict=True):
        for axes, precision in zip(row_axes, precisions, strict=True):
            panel = frame[(frame["model"] == model) & (frame["precision"] == precision)]
            for x, name in enumerate(names):
                found = panel[panel["optimizer"] == name]
                if found.empty:
                    continue
                row = found.iloc[0]
                if row["status"] != "ok":
                    text = STATUS_TEXT.get(row["status"], row["status"])
                    axes.text(x, 0, text, rotation=90, ha="center", va="bottom", fontsize="xx-small")
                    continue
                _roofline_bar(axes, x, row, colours[row["algorithm"]])
            axes.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize="x-small")
            axes.set_title(f"{model}, {precision}", fontsize="small")
            axes.grid(axis="x", visible=False)
        row_axes[0].set_ylabel("bandwidth (GB/s)")
    handles = [matplotlib.patches.Patch(color=colours[a], label=f"{a}: device time") for a in algorithms]
    handles.append(matplotlib.patches.Patch(facecolor="white", edgecolor="0.3", hatch="////", label="wall time"))
    handles.append(matplotlib.patches.Patch(fill=False, edgecolor="0.3", label="on the kernels' traffic"))
    handles.append(matplotlib.lines.Line2D([], [], color="0.1", linewidth=1.5, label="limit at the working set"))
    handles.append(matplotlib.lines.Line2D([], [], color="0.45", linewidth=1.2, linestyle=":", label="DRAM-sized"))
    figure.legend(handles=handles, loc="outside upper center", ncols=2, frameon=False, fontsize="x-small")
    if wrapped:  # under the panels: the layout makes room for it
        figure.supxlabel(wrapped, fontsize="xx-small", x=0.01, ha="left", multialignment="left")
    return figure

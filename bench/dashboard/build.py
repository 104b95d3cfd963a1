"""``convbench dashboard``: the whole site from the history, published atomically
(``site.publish``). With at least as many series (suite × machine) as CPUs, whole series are
written in parallel, one forked process each (see ``series`` for why forked); with fewer,
one series after another, each judged in parallel parts. Either way a process holds one
series' records at a time, not the history's."""

from __future__ import annotations

import functools
import gc
import json
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from bench.analyse.compare import DEFAULT_THRESHOLD
from bench.dashboard import content, html
from bench.dashboard.series import Night, Series, can_fork, cpus, read_series, series_keys
from bench.dashboard.site import check_output, copy_assets, plotly_js, publish
from bench.record import utc_now

REPORT = "report.html"


@dataclass(frozen=True)
class Site:
    """What was written: the version folder ``output`` links to, and its pages."""

    version: Path
    series_pages: list[str]
    gpu_pages: list[str]
    runs: int


def build_site(
    history_path: Path | str,
    output: Path | str,
    baseline_runs: int = 1,
    threshold: float = DEFAULT_THRESHOLD,
) -> Site:
    """Write the dashboard of the history at ``history_path`` into ``output`` (a link to the
    version written; see ``bench.dashboard.site``): ``index.html``, one page per suite and
    machine, one per suite run on several machines. Verdicts are ``compare``'s with
    ``baseline_runs`` and ``threshold`` (a fraction), as ``convbench trend`` draws them.
    Each run's points link to ``report.html`` in its run folder beside the history
    (``<history folder>/<run id>/``) where that exists.

    Raises:
        DashboardError: plotly is not installed, or ``output`` is not a dashboard's.
        HistoryError: there is no history at ``history_path``, or it holds no runs.
    """
    plotly = plotly_js()  # everything that can refuse does so before any work
    output = Path(output)
    check_output(output)
    keys = series_keys(history_path)
    gpu_pages: dict[str, str] = {}
    rows: list[html.IndexRow] = []

    def write(folder: Path) -> None:
        copy_assets(folder, plotly)
        (folder / "data").mkdir()
        whole = len(keys) >= cpus() > 1 and can_fork()  # whole series in parallel, else parts of each
        job = functools.partial(_series_pages, folder, history_path, output, baseline_runs, threshold, not whole)
        shown: dict[str | None, dict[str, tuple[Series, int]]] = {}  # suite -> machine -> (series, night)
        pages: dict[str | None, dict[str, str]] = {}  # suite -> machine -> its page
        for (suite, *_), (row, kept) in zip(keys, _map(job, keys, whole), strict=True):
            rows.append(row)
            pages.setdefault(suite, {})[row.machine] = row.page
            if kept is not None:
                shown.setdefault(suite, {})[row.machine] = kept
        for suite, machines in shown.items():
            if len(machines) > 1:
                gpu_pages[suite or "no suite"] = _write_gpus(folder, suite, machines, pages[suite])
        (folder / "index.html").write_text(
            html.index_page(rows, gpu_pages, utc_now(), str(history_path)), encoding="utf-8"
        )

    version = publish(output, write)
    pages = [row.page for row in rows]
    return Site(version, pages, list(gpu_pages.values()), sum(len(nights) for *_, nights in keys))


def _map(function: Callable, items: Sequence, in_parallel: bool) -> list:
    """``function`` over ``items``, in order; ``in_parallel``: in forked processes, one per CPU."""
    if not in_parallel:
        return [function(item) for item in items]
    with ProcessPoolExecutor(min(len(items), cpus()), mp_context=multiprocessing.get_context("fork")) as pool:
        return list(pool.map(function, items))


def _series_pages(
    folder: Path,
    history_path: Path | str,
    output: Path,
    baseline_runs: int,
    threshold: float,
    in_parts: bool,
    key: tuple[str | None, str | None, list[Night]],
) -> tuple[html.IndexRow, tuple[Series, int] | None]:
    """Write one series' page and data; return its index row and, for the GPU page, the
    series with only the records of the night that page shows (None: it has none)."""
    suite, machine, nights = key
    with _collections_paused():
        series = read_series(history_path, suite, machine, nights, baseline_runs, in_parts, threshold=threshold)
        page = content.slug(suite, machine)
        links = [_report_link(history_path, output, night) for night in nights]
        _write_series(folder, page, series, links, baseline_runs, threshold)
    row = _index_row(series, f"{page}.html", links[-1])
    night = content.latest_comparable_night(series)
    if night is None:
        return row, None
    kept = Series(series.suite, series.machine, series.nights, series.env, [[] for _ in nights])
    kept.records[night] = series.records[night]
    return row, (kept, night)


@contextmanager
def _collections_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused: a series is hundreds of thousands of dicts
    (with no cycles among them; they are freed when the series is), which every full
    collection would walk again (a tenth of the time), and forked processes touching them
    would copy the parent's memory."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _report_link(history_path: Path | str, output: Path, night: Night) -> str | None:
    """The run's report relative to the site's pages, if its run folder beside the history
    has one; None otherwise (a run ingested without its folder, or one that wrote none)."""
    report = Path(history_path).parent / night.run_id / REPORT
    if not report.is_file():
        return None
    relative = os.path.relpath(os.path.abspath(report), os.path.abspath(output))
    return "/".join(quote(part) for part in Path(relative).parts)


def _script(path: Path, call: str, data: object) -> None:
    """``path``: a script that hands ``data`` to the page (``call(data)``); pages load their
    data as scripts, since a browser refuses fetch() of a file:// page's neighbours."""
    path.write_text(f"{call}({json.dumps(data, separators=(',', ':'), allow_nan=False)});\n", encoding="utf-8")


def _write_series(
    folder: Path, page: str, series: Series, links: list[str | None], baseline_runs: int, threshold: float
) -> None:
    cases, points = content.case_series(series)
    (folder / "data" / page).mkdir()
    for number, table in enumerate(points):
        _script(folder / "data" / page / f"{number}.js", "convbench.caseLoaded", {"case": number, **table})
    metrics = [
        {"key": m.key, "label": m.label, "unit": m.unit, "spread": bool(m.spread), "verdict": m.verdict}
        for m in content.METRICS[series.kind]
    ]
    data = {
        "page": page,
        "suite": series.suite,
        "machine": series.machine,
        "kind": series.kind,
        "baseline_runs": baseline_runs,
        "threshold": threshold,
        "metrics": metrics,
        "nights": content.night_table(series, links),
        "cases": cases,
    }
    _script(folder / "data" / f"{page}.js", "convbench.pageLoaded", data)
    gpu = content.gpu_description(series)
    title = f"{series.suite or 'no suite'} on {series.machine or 'unknown machine'}"
    (folder / f"{page}.html").write_text(html.series_page(page, title, _describe(gpu, series)), encoding="utf-8")


def _describe(gpu: dict, series: Series) -> str:
    devices = [
        ", ".join(str(part) for part in (g["name"], g["memory_gib"] and f"{g['memory_gib']} GiB", g["uuid"]) if part)
        for g in gpu["gpus"]
    ]
    where = "; ".join(devices) or gpu["device"] or gpu["cpu"] or "device not recorded"
    latest = (series.nights[-1].started or "")[:16].replace("T", " ")
    return f"{series.kind} runs; {where}; {len(series.nights)} runs, the latest started {latest} UTC"


def _index_row(series: Series, page: str, report: str | None) -> html.IndexRow:
    latest, records, verdicts = series.nights[-1], series.records[-1], series.verdicts[-1]
    gpu = content.gpu_description(series)
    names = sorted({g["name"] for g in gpu["gpus"] if g["name"]})
    identities = [g["uuid"] for g in gpu["gpus"] if g["uuid"]]
    machine = series.machine or "unknown machine"
    improved = {c for c, v in [*verdicts.time.items(), *verdicts.memory.items()] if v == "improvement"}
    return html.IndexRow(
        page=page,
        machine=machine,
        gpu=", ".join(names) or latest.device or gpu["cpu"] or "",
        identity=", ".join(identities) or (machine if machine.startswith("GPU-") else ""),
        suite=series.suite or "",
        kind=series.kind,
        nights=len(series.nights),
        latest=latest.run_id,
        date=(latest.started or "")[:16].replace("T", " "),
        commit=(latest.commit or "")[:10],
        status=latest.status,
        done=f"{len(records)} of {latest.cases_total} cases" if latest.cases_total else f"{len(records)} cases",
        report=report,
        regressions=sum(v == "regression" for v in verdicts.time.values()),
        memory=sum(v == "regression" for v in verdicts.memory.values()),
        improvements=len(improved),
        failed=sum(r.get("status") != "ok" for r in records),
        all_cases=content.VERDICT_CODES.get(verdicts.all_cases),
        judged=bool(verdicts.baseline),
    )


def _write_gpus(folder: Path, suite: str | None, machines: dict[str, tuple[Series, int]], pages: dict[str, str]) -> str:
    page = "gpus-" + content.slug(suite)
    data = content.gpu_comparison(machines, pages)
    _script(folder / "data" / f"{page}.js", "convbench.pageLoaded", {"page": page, "suite": suite, **data})
    notes = data.get("notes", []) or ([data["error"]] if "error" in data else [])
    (folder / f"{page}.html").write_text(html.gpu_page(page, suite or "no suite", notes), encoding="utf-8")
    return f"{page}.html"

"""The dashboard's HTML: the index is complete without scripts (a table); the series and GPU
pages are a frame that ``assets/dashboard.js`` fills from the page's ``data/<page>.js``."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape


@dataclass(frozen=True)
class IndexRow:
    """One series on the index: where it ran, what it is, and its latest night."""

    page: str
    machine: str
    gpu: str
    identity: str
    suite: str
    kind: str
    nights: int
    latest: str
    date: str
    commit: str
    status: str
    done: str
    report: str | None
    regressions: int
    memory: int
    improvements: int
    failed: int
    all_cases: str | None
    judged: bool


def _document(title: str, body: str, scripts: tuple[str, ...] = ()) -> str:
    tags = "".join(f'<script src="{escape(src)}"></script>' for src in scripts)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{escape(title)}</title><link rel="stylesheet" href="assets/dashboard.css">{tags}</head>\n'
        f'<body><header><a href="index.html">convbench dashboard</a></header>\n<main>{body}</main></body></html>\n'
    )


def _badge(count: int, text: str, kind: str) -> str:
    return f'<span class="badge {kind}">{count} {escape(text)}</span>' if count else ""


def _verdicts(row: IndexRow) -> str:
    if row.kind == "training":
        return '<span class="muted">not judged here: <code>convbench compare</code> judges training runs</span>'
    if not row.judged:
        return '<span class="muted">no baseline yet</span>'
    badges = [
        _badge(row.regressions, "slower", "bad"),
        _badge(row.memory, "more memory", "bad"),
        _badge(row.improvements, "better", "good"),
        _badge(row.failed, "failed", "failed"),
    ]
    if row.all_cases == "r":
        badges.append('<span class="badge bad">all cases slower</span>')
    return "".join(badges) or '<span class="badge ok">unchanged</span>'


def index_page(rows: list[IndexRow], gpu_pages: dict[str, str], generated: str, source: str) -> str:
    """The first page: every machine × suite with its latest run and that run's verdicts."""
    flagged = sum(row.regressions + row.memory > 0 or row.all_cases == "r" for row in rows)
    failing = sum(row.failed > 0 for row in rows)
    unfinished = sum(row.status != "complete" for row in rows)
    headline = (
        f"Latest runs: {flagged} of {len(rows)} series with a regression, {failing} with failed cases, "
        f"{unfinished} not complete."
    )
    body_rows = []
    for row in sorted(rows, key=lambda row: (row.machine, row.suite)):
        report = f'<a href="{escape(row.report)}">report</a>' if row.report else '<span class="muted">none</span>'
        status = escape(row.status) + f' <span class="muted">{escape(row.done)}</span>'
        body_rows.append(
            f'<tr class="{"flagged" if row.regressions + row.memory else ""}">'
            f'<td><a href="{escape(row.page)}">{escape(row.machine)}</a></td>'
            f'<td>{escape(row.gpu)}<div class="muted identity">{escape(row.identity)}</div></td>'
            f"<td>{escape(row.suite)}</td><td>{escape(row.kind)}</td><td>{row.nights}</td>"
            f'<td><a href="{escape(row.page)}">{escape(row.latest)}</a></td><td>{escape(row.date)}</td>'
            f'<td><code>{escape(row.commit)}</code></td><td class="status-{escape(row.status)}">{status}</td>'
            f"<td>{_verdicts(row)}</td><td>{report}</td></tr>"
        )
    gpus = "".join(f'<li><a href="{escape(page)}">{escape(suite)}</a></li>' for suite, page in gpu_pages.items())
    body = (
        f'<h1>Benchmarks over time</h1><p class="headline">{escape(headline)}</p>'
        '<table class="index"><thead><tr><th>machine</th><th>GPU / device</th><th>suite</th><th>kind</th>'
        "<th>runs</th><th>latest run</th><th>started (UTC)</th><th>commit</th><th>status</th>"
        "<th>latest run against its baseline</th><th></th></tr></thead><tbody>"
        + "".join(body_rows)
        + "</tbody></table>"
        + (f"<h2>GPUs side by side</h2><ul>{gpus}</ul>" if gpus else "")
        + f'<p class="muted">From {escape(source)}, written {escape(generated)}. Verdicts are <code>convbench '
        "compare</code>'s, each run against the complete run(s) before it on the same machine.</p>"
    )
    return _document("convbench dashboard", body)


LEGEND = (
    '<p class="legend">Each point is one run; click it to open that run\'s report. Bars: the slowest and the '
    'fastest repeat\'s median step time that night. <b class="bad">▼</b> regression and <b class="good">▲</b> '
    "improvement: <code>compare</code>'s verdict; the red band behind a regression spans the runs it was judged "
    "against, up to it. Hollow points: the run did not complete. Orange rings: measured while other processes used "
    "the CPUs. ✕ in the bottom row: the case failed (out of memory, error) that night.</p>"
)


def series_page(page: str, title: str, subtitle: str) -> str:
    """A series' page: the nights, then one plot per case, filled in by dashboard.js."""
    body = (
        f'<h1>{escape(title)}</h1><p class="muted">{escape(subtitle)}</p>'
        '<section><h2>Runs</h2><p class="muted">Cases flagged, improved and failed in each run; click a bar for '
        'its report.</p><div id="nights" class="plot nights"></div></section>'
        '<section><h2>Cases</h2><form id="filters" class="filters"></form>'
        + LEGEND
        + '<div id="cases"></div></section>'
        "<script>convbench.seriesPage()</script>"
    )
    return _document(title, body, ("assets/plotly.min.js", "assets/dashboard.js", f"data/{page}.js"))


def gpu_page(page: str, suite: str, notes: list[str]) -> str:
    """One suite on several machines side by side, filled in by dashboard.js."""
    listed = "".join(f"<li>{escape(note)}</li>" for note in notes)
    body = (
        f"<h1>{escape(suite)}: GPUs side by side</h1>"
        '<p class="muted">Each machine\'s latest complete run, as <code>convbench gpus</code> compares them: per '
        "case the throughput (time to target for training, step time for optimizer steps) and the speed-up over "
        "the reference device.</p>"
        '<form id="filters" class="filters"></form><div id="speedup" class="plot"></div><div id="table"></div>'
        + (f'<h2>Missing and failed cases</h2><ul class="notes">{listed}</ul>' if listed else "")
        + "<script>convbench.gpuPage()</script>"
    )
    return _document(
        f"{suite}: GPUs side by side", body, ("assets/plotly.min.js", "assets/dashboard.js", f"data/{page}.js")
    )

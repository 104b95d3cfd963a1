"""`convbench report`: the files a run folder gets, their content, and report.html as a real
browser shows it."""

import base64
import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.cli import main
from bench.kinds import write_report, write_tables
from bench.reporting.report import (
    ENERGY_PER_SAMPLE,
    SUMMARY_COLUMNS,
    rf_maps_frame,
    run_status,
)
from bench.storage.store import load_run
from tests.bench import synthetic

FIGURES = [
    "throughput",
    "memory",
    "state_bytes",
    "batch_scaling",
    "constant_gradient",
    "receptive_field",
    "receptive_field_maps",
]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def reported(tmp_path_factory) -> tuple[Path, str]:
    """The synthetic run, one case short of its suite (so incomplete), with an rf section,
    reported once through the command line: its folder and what the command printed."""
    path = synthetic.write_run(tmp_path_factory.mktemp("results"), cases_total=len(synthetic.records()) + 1)
    synthetic.rf_frame().to_csv(path / "rf.csv", index=False)
    # rf_maps.npz as bench.receptive.section writes it
    mask = np.zeros((11, 11), dtype=bool)
    mask[3:8, 3:8] = True
    erf = np.outer(np.hanning(11), np.hanning(11))
    box = np.array([[3, 7], [3, 7]])
    arrays = {"mask": mask, "field": box, "erf": erf, "erf_field": box}
    np.savez_compressed(path / "rf_maps.npz", **{f"toynet/conv2/{k}": v for k, v in arrays.items()})
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["report", str(path)]) == 0
    return path, printed.getvalue()


@pytest.fixture(scope="module")
def run_dir(reported) -> Path:
    return reported[0]


def test_every_file_is_written(run_dir):
    figures = {f"figures/{name}.{ext}" for name in FIGURES for ext in ("png", "pdf")}
    pages = {"summary.csv", "summary.md", "summary.tex", "report.html", "report.md"}
    on_disk = {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}
    assert figures | pages <= on_disk
    for name in FIGURES:
        assert (run_dir / f"figures/{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (run_dir / f"figures/{name}.pdf").read_bytes()[:5] == b"%PDF-"


def test_command_line_prints_what_it_wrote_and_rejects_a_non_run(reported, tmp_path, capsys):
    run_dir, printed = reported
    written = {Path(line) for line in printed.splitlines()}
    inputs = {"run.json", "env.json", "suite.toml", "records.jsonl", "rf.csv", "rf_maps.npz"}
    assert written == {p for p in run_dir.rglob("*") if p.is_file() and p.name not in inputs}
    assert written >= {run_dir / "report.html", run_dir / "figures/memory.pdf"}
    assert main(["report", str(tmp_path)]) == 2
    assert "run.json" in capsys.readouterr().err


def test_summary_csv_keeps_whole_numbers_with_units_in_headers(run_dir):
    summary = pd.read_csv(run_dir / "summary.csv")
    assert len(summary) == len(synthetic.records())
    row = summary[(summary["model"] == "cnn") & (summary["optimizer"] == "adam") & (summary["batch"] == 32)].iloc[0]
    assert row["throughput (samples/s)"] == pytest.approx(32_000 / 14, rel=1e-12)
    assert row["optimizer state (MiB)"] == pytest.approx(8 * 360_778 / 2**20, rel=1e-12)
    assert row["state (B/param)"] == 8 and row["state buffers/param"] == 2
    assert row["activations (MiB)"] == pytest.approx(50_000 * 32 / 2**20, rel=1e-12)
    assert not row["channels-last"] and not row["compile"]
    oom = summary[summary["status"] == "oom"].iloc[0]
    assert oom["model"] == "resnet20" and np.isnan(oom["throughput (samples/s)"])


def test_summary_markdown_and_latex_are_rounded(run_dir):
    markdown = (run_dir / "summary.md").read_text().splitlines()
    header = next(i for i, line in enumerate(markdown) if line.startswith("| model"))
    assert markdown[header].startswith("| model | optimizer | batch | precision | status | throughput (samples/s) |")
    row = "| cnn | adam | 32 | fp32 | ok | 2,286 | 14.0 | 4.00 | 360,778 | 2.00 | 8.00 | 2.75 | 7.03 | 1.53 |"
    assert row in markdown[header + 2]
    tex = (run_dir / "summary.tex").read_text()
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    # the records here carry no FLOPs: GFLOP/sample, TFLOP/s and MFU are left out
    assert r"cnn & adam & 32 & fp32 & ok & 2,286 & 14.0 & 4.00 & 360,778 & 2.00 & 8.00 & 2.75 & 7.03 & 1.53 \\" in tex
    assert r"resnet20 & adam & 128 & fp32 & oom" + " & " * 9 + r" \\" in tex


def test_html_report_is_one_page_with_every_part(run_dir):
    page = (run_dir / "report.html").read_text()
    status = re.search(r'<p class="status warning"><strong>Warning:</strong> (.*?)</p>', page).group(1)
    assert status == (
        "11 of 12 cases have a record; 2 failed (see Failed cases); the run is incomplete: "
        "1 case has no result, so this report is not the whole suite."
    )
    # every figure embedded as a PNG data URI, and nothing fetched from anywhere
    sources = re.findall(r'<img src="([^"]*)"', page)
    assert len(sources) == len(FIGURES)
    for source in sources:
        assert base64.b64decode(source.removeprefix("data:image/png;base64,"))[:4] == b"\x89PNG"
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)
    # the failed cases with their errors, the configuration and the machine
    assert "resnet20/adam/b128/fp32/cl0/eager/synthetic/3x32x32</td><td>oom</td><td><pre>oom in resnet20" in page
    assert "name = &#x27;smoke&#x27;" in page
    assert "<td>hostname</td><td>testhost</td>" in page
    assert "<td>AdaptiveAvgPool2d</td>" in page  # the receptive-field table


def test_markdown_report_links_figures_that_exist(run_dir):
    text = (run_dir / "report.md").read_text()
    assert text.splitlines()[2].startswith("> **Warning:** 11 of 12 cases have a record; 2 failed")
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert links == [f"figures/{name}.png" for name in FIGURES]
    assert all((run_dir / link).is_file() for link in links)
    assert "| cnn/sgdm/b128/fp32/cl0/eager/synthetic/1x28x28 | error | error in cnn |" in text
    assert "```toml\n[suite]\nname = 'smoke'\n```" in text


def test_rf_maps_frame_pairs_each_heat_map_with_its_analytic_field(run_dir):
    maps = rf_maps_frame(run_dir / "rf_maps.npz")
    assert list(maps["map"]) == ["mask", "erf"] and set(maps["layer"]) == {"conv2"}
    assert maps["values"][0].dtype == bool and maps["field"][1].tolist() == [[3, 7], [3, 7]]


def test_a_complete_run_without_sweeps_or_rf_gets_only_the_figures_that_apply(tmp_path):
    rows = [synthetic.record(m, o) for m in synthetic.PARAMS for o in ("adam", "sgdm")]
    path = synthetic.write_run(tmp_path, rows)
    write_report(path)
    assert run_status(load_run(path)) == "4 of 4 cases have a record; the run is complete."
    assert sorted(p.stem for p in (path / "figures").glob("*.png")) == sorted(
        ["throughput", "memory", "state_bytes", "constant_gradient"]
    )
    assert "None: every case has a record and ended ok." in (path / "report.html").read_text()


def test_a_run_with_no_records_still_gets_a_report(tmp_path):
    path = synthetic.write_run(tmp_path, [], cases_total=4)
    write_report(path)
    assert (
        "0 of 4 cases have a record; the run is incomplete: 4 cases have no result" in (path / "report.md").read_text()
    )
    assert [p.stem for p in (path / "figures").glob("*.png")] == ["constant_gradient"]


# --- report.html in a real browser ---------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium through Debian's chromedriver. Never skipped: .ci/run installs both,
    so a missing browser is a failure, and Selenium Manager (which would download a driver)
    is made to fail if anything calls it."""
    assert CHROMIUM.is_file() and CHROMEDRIVER.is_file(), (
        "report.html is checked in headless Chromium: apt-get install chromium chromium-driver (.ci/run does)"
    )
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    def refuse(*args, **kwargs):
        raise AssertionError("Selenium Manager must not run: the driver is Debian's chromedriver")

    patch = pytest.MonkeyPatch()
    patch.setattr(SeleniumManager, "binary_paths", refuse)
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()
    patch.undo()


def page_problems(driver, page: Path) -> tuple[int, list[str]]:
    """Open ``page``; return how many images it has and what went wrong: images that did
    not load, errors in the console, anything fetched that is not part of the page."""
    driver.get(page.resolve().as_uri())
    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])"
    )
    problems = [f"image {alt!r} did not load" for alt, loaded in images if not loaded]
    problems += [f"console: {e['message']}" for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    fetched = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    problems += [f"fetched {name}" for name in fetched if not name.startswith("data:")]
    return len(images), problems


def test_report_html_renders_in_chromium_with_every_image_and_no_error(run_dir, browser):
    images, problems = page_problems(browser, run_dir / "report.html")
    assert problems == []
    assert images == len(FIGURES)


def test_report_html_shows_every_results_column_and_figures_at_a_readable_size(run_dir, browser):
    """On a 1440 px wide window: the results table needs no sideways scrolling (peak memory
    and activations in view), and a one-column figure is drawn wider than 400 px."""
    browser.set_window_size(1440, 1000)
    browser.get((run_dir / "report.html").resolve().as_uri())
    hidden = browser.execute_script(
        "const box = document.querySelector('#results + .wide'); return box.scrollWidth - box.clientWidth"
    )
    assert hidden <= 0
    widths = browser.execute_script("return Array.from(document.images).map(i => [i.alt, i.clientWidth])")
    assert min(width for _, width in widths) > 400, widths


def test_the_browser_check_catches_a_broken_image_and_a_script_error(tmp_path, browser):
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><img src="missing.png" alt="gone"><script>undefinedFunction()</script>')
    images, problems = page_problems(browser, page)
    assert images == 1
    assert "image 'gone' did not load" in problems
    assert any("undefinedFunction" in p for p in problems)


def test_summary_md_says_what_ran_where_and_lists_the_failed_cases(run_dir):
    text = (run_dir / "summary.md").read_text()
    assert "- suite: smoke; status: incomplete (11 of 12 cases, " in text
    assert "device: test CPU" in text
    failed = text.split("## Cases that did not finish")[1]
    assert "resnet20/adam/b128/fp32/cl0/eager/synthetic/3x32x32: oom: oom in resnet20" in failed
    assert "cnn/sgdm/b128/fp32/cl0/eager/synthetic/1x28x28: error: error in cnn" in failed


def test_channels_last_and_compile_columns_appear_only_when_a_case_uses_them(tmp_path):
    rows = [synthetic.record("cnn", "adam"), synthetic.record("cnn", "sgdm")]
    path = synthetic.write_run(tmp_path / "plain", rows)
    write_tables(path)
    header = next(line for line in (path / "summary.md").read_text().splitlines() if line.startswith("| model"))
    assert "channels-last" not in header and "compile" not in header
    assert "channels-last" in (path / "summary.csv").read_text().splitlines()[0]
    rows[1]["channels_last"] = True
    path = synthetic.write_run(tmp_path / "cl", rows)
    write_tables(path)
    header = next(line for line in (path / "summary.md").read_text().splitlines() if line.startswith("| model"))
    assert "| channels-last | compile |" not in header and "| channels-last |" in header


def test_tables_of_a_run_without_records(tmp_path):
    path = synthetic.write_run(tmp_path, [], cases_total=3)
    csv_path, md_path, tex_path = write_tables(path)
    headers = [header for _, header, _ in SUMMARY_COLUMNS]
    headers.insert(headers.index("host-bound") + 1, ENERGY_PER_SAMPLE)
    assert csv_path.read_text().splitlines() == [",".join(headers)]
    text = md_path.read_text()
    assert "status: incomplete (0 of 3 cases" in text and "device: none recorded" in text
    assert r"\bottomrule" in tex_path.read_text()


def test_host_syncing_host_bound_cases_and_energy_per_sample_are_marked(tmp_path):
    plain = synthetic.record("cnn", "sgdm", batch_size=32)
    plain.update(host_syncs_per_step=0, host_bound=False)
    scaled = synthetic.record("cnn", "adam", batch_size=64, precision="fp16")
    scaled.update(host_syncs_per_step=1, host_bound=True, energy_per_step_j=16.0)
    path = synthetic.write_run(tmp_path / "gpu", [plain, scaled])
    write_tables(path)
    lines = (path / "summary.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| model"))
    assert "| host syncs/step | host-bound | energy (J/sample) |" in header
    row = next(line for line in lines if line.startswith("| cnn | adam | 64 |"))
    assert row.endswith("| 1 | True | 0.25 |")  # 16 J per step / 64 samples
    summary = pd.read_csv(path / "summary.csv")
    assert summary[ENERGY_PER_SAMPLE].tolist()[1] == 16.0 / 64 and pd.isna(summary[ENERGY_PER_SAMPLE][0])
    # A CPU run with no syncing case and no energy shows none of these columns.
    path = synthetic.write_run(tmp_path / "cpu", [synthetic.record("cnn", "sgdm")])
    write_tables(path)
    header = next(line for line in (path / "summary.md").read_text().splitlines() if line.startswith("| model"))
    assert "host" not in header and "energy" not in header


def test_a_sweep_over_hyperparameters_and_model_arguments_has_rows_told_apart():
    from bench.reporting.report import summary_frame
    from tests.bench.runs import record

    def swept(case_prefix: str, **fields) -> dict:
        one = record("s", "cnn", "sgdm", **fields).to_dict()
        one["case_id"] = case_prefix + one["case_id"].split("/", 2)[2]
        return one

    frame = pd.DataFrame(
        [swept("cnn/sgdm[lr=0.1]/"), swept("cnn/sgdm/"), swept("cnn[width=2]/sgdm/"), swept("cnn/sgdm[momentum=0.5]/")]
    )
    summary = summary_frame(frame)
    assert summary["optimizer"].tolist() == ["sgdm[lr=0.1]", "sgdm", "sgdm", "sgdm[momentum=0.5]"]
    assert summary["model"].tolist() == ["cnn", "cnn", "cnn[width=2]", "cnn"]


def test_reports_show_each_cases_load_mark_the_loaded_ones_and_peak_the_tracked_step(tmp_path):
    rows = synthetic.records()[:4]
    for index, row in enumerate(rows):
        row.update(load_average_1m=0.5 + index, other_cpu_fraction=[0.01, 0.02, 0.45, 0.03][index])
        row["tracked_peak_bytes"] = 12 * 2**20  # the memory pass's exact peak of a step
    path = synthetic.write_run(tmp_path, rows)
    write_report(path)
    markdown = (path / "report.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| model"))
    headers = [cell.strip() for cell in header.strip("|").split("|")]
    assert {"load average (1 min)", "other processes' CPU (%)", "under load", "process RSS peak (MiB)"} <= set(headers)
    table = [line for line in markdown.splitlines() if line.startswith("| ") and "| ok |" in line]
    cells = [dict(zip(headers, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in table]
    assert [row["under load"] for row in cells] == ["", "", "*", ""]
    assert [row["other processes' CPU (%)"] for row in cells] == ["1.00", "2.00", "45.0", "3.00"]
    # the peak memory column is the tracked step peak; the process's resident set stands beside it
    assert {row["peak memory (MiB)"] for row in cells} == {"12.0"}
    assert [float(row["process RSS peak (MiB)"]) for row in cells] == pytest.approx(
        [row["peak_memory_bytes"] / 2**20 for row in rows], abs=0.01
    )
    loaded_case = rows[2]["case_id"]
    note = "* under load: 1 of 4 cases ran while other processes used more than 10% of the CPUs"
    assert note in markdown and loaded_case in markdown.split(note)[1].splitlines()[0]
    page = (path / "report.html").read_text()
    assert "<th>under load</th>" in page and note in page

"""`convbench dashboard`: the site's pages and data against a hand-built history of two machines
(one a GPU box), three suites (training step, optimizer step, training to accuracy) and a week
of nights with a slow-down, an out-of-memory night, a run that stopped early and a loaded case;
the atomic update; and the site as headless Chromium shows it."""

import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.analyse.compare import flag_history
from bench.cli import main
from bench.record import Record
from bench.storage import history
from bench.storage.store import RunWriter
from tests.bench.runs import SMOKE, record, samples
from tests.bench.test_report import CHROMEDRIVER, CHROMIUM

H100 = "NVIDIA H100 80GB HBM3"
UUID = "GPU-4b3f0e4c-1111-2222-3333-444455556666"
GPU_ENV = {
    "hostname": "node-17",
    "git_commit": "abc123",
    "gpus": [{"index": 0, "name": H100, "memory_bytes": 85_520_809_984, "driver": "580.65"}],
    "gpu_telemetry": {"source": "pynvml", "gpus": [{"index": 0, "name": H100, "uuid": UUID, "cuda_index": 0}]},
    "cpu": {"model": "Intel Xeon"},
}
CPU_ENV = {"hostname": "cpu-box", "git_commit": "abc123", "gpus": [], "cpu": {"model": "AMD EPYC"}}
DAYS = ["mon", "tue", "wed", "thu", "fri", "sat"]
#: The GPU box's smoke nights: median step time (ms) per case where it is not the usual, the
#: cases that ran out of memory, how many cases the run holds of its four, and loaded cases.
SLOWER = {"wed": {("cnn", "adam"): 48.0}}  # 20% slower on Wednesday only
OOM = {"thu": {("resnet20", "adam")}}
STOPPED_EARLY = {"fri": 2}  # Friday's run was interrupted after two of its four cases
LOADED = {"sat": {("cnn", "sgdm"): 0.6}}  # other processes used 60% of the CPUs
BASE_MS = {"gpu-box": 10.0, "cpu-box": 40.0}


def case_id(model: str, optimizer: str) -> str:
    return record("x", model, optimizer).case_id


def night(root: Path, machine: str, day: str, records: list[Record], suite: str, total: int | None = None) -> Path:
    run_id = f"{day}-{suite}-{machine}"
    env = GPU_ENV if machine == "gpu-box" else CPU_ENV
    writer = RunWriter(root, run_id, suite, "", env, total or len(records), machine=machine)
    writer.manifest["started"] = f"2026-11-{23 + DAYS.index(day):02d}T01:00:00+00:00"
    for one in records:
        writer.append(Record.from_flat({**one.to_dict(), "run_id": run_id, "suite": suite}))
    writer.finish()
    return writer.path


def smoke_night(root: Path, machine: str, day: str) -> Path:
    gpu = machine == "gpu-box"
    records = []
    for index, (model, optimizer) in enumerate(SMOKE):
        median = SLOWER.get(day, {}).get((model, optimizer), BASE_MS[machine])
        status = "oom" if gpu and (model, optimizer) in OOM.get(day, ()) else "ok"
        load = LOADED.get(day, {}).get((model, optimizer)) if gpu else None
        step = samples(median, seed=DAYS.index(day) * 10 + index)
        device = {"device": "cuda:0", "device_name": H100} if gpu else {}
        records.append(record("x", model, optimizer, step, status, other_cpu_fraction=load, **device))
    kept = STOPPED_EARLY.get(day, len(records)) if gpu else len(records)
    return night(root, machine, day, records[:kept], "smoke", total=len(records))


def optimizer_night(root: Path, day: str) -> Path:
    records = [
        record("x", "resnet20", optimizer, samples(5.0, seed=i), kind="optimizer-step",
               throughput=None, bandwidth_fraction=fraction, achieved_bandwidth_gbs=40.0 * fraction)
        for i, (optimizer, fraction) in enumerate((("adam", 0.5), ("sgdm", 0.75)))
    ]  # fmt: skip
    return night(root, "cpu-box", day, records, "optim")


def training_night(root: Path, day: str, seconds: float) -> Path:
    one = record("x", "cnn", "adam", samples(40.0), recipe="adam-default", seed=0, time_to_target_s=seconds,
                 final_test_accuracy=0.985, train_throughput=2000.0, target_accuracy=0.98)  # fmt: skip
    return night(root, "cpu-box", day, [one], "train-digits")


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """results/ with the run folders and their history; every GPU-box smoke run but Tuesday's
    has a report.html (Tuesday's shows what a run without one gets)."""
    root = tmp_path_factory.mktemp("results")
    folders = [smoke_night(root, "gpu-box", day) for day in DAYS]
    folders += [smoke_night(root, "cpu-box", day) for day in ("mon", "tue")]
    folders += [optimizer_night(root, day) for day in ("mon", "tue")]
    folders += [training_night(root, "mon", 30.0), training_night(root, "tue", 31.0)]
    for folder in folders:
        if not folder.name.startswith("tue-smoke-gpu"):
            (folder / "report.html").write_text("<!DOCTYPE html><title>report</title>")
    history.ingest(folders, root / "history.sqlite")
    return root


@pytest.fixture(scope="module")
def site(results) -> Path:
    assert main(["dashboard", "--history", str(results / "history.sqlite"), "--output", str(results / "site")]) == 0
    return results / "site"


def page_data(path: Path) -> dict:
    """What a data script hands its page."""
    text = path.read_text()
    return json.loads(text[text.index("(") + 1 : text.rindex(")")])


def series_page(site: Path, suite: str, machine: str) -> tuple[dict, list[dict]]:
    """A series' page data and its cases' points, by the page the index links to."""
    index = (site / "index.html").read_text()
    row = next(r for r in index.split("<tr")[1:] if f">{machine}<" in r and f"<td>{suite}</td>" in r)
    page = re.search(r'href="([^"]+)\.html"', row).group(1)
    data = page_data(site / "data" / f"{page}.js")
    points = [page_data(site / "data" / page / f"{n}.js") for n in range(len(data["cases"]))]
    return data, points


# --- pages and data against the history ----------------------------------------------------


def test_the_index_lists_every_machine_and_suite_with_its_latest_run(site):
    index = (site / "index.html").read_text()
    rows = index.split("<tbody>")[1].split("<tr")[1:]
    listed = {(re.search(r'html">([^<]+)</a></td>', r).group(1), re.findall(r"<td>([^<]*)</td>", r)[0]) for r in rows}
    assert listed == {("gpu-box", "smoke"), ("cpu-box", "smoke"), ("cpu-box", "optim"), ("cpu-box", "train-digits")}
    gpu_row = next(r for r in rows if "gpu-box" in r)
    assert H100 in gpu_row and UUID in gpu_row and "sat-smoke-gpu-box" in gpu_row
    # Saturday against Thursday (Friday stopped early, so it is no baseline): resnet20/adam ran
    # again after running out of memory, an improvement of time and memory.
    assert ">1 better<" in gpu_row and "slower" not in gpu_row
    assert 'href="../sat-smoke-gpu-box/report.html"' in gpu_row
    assert 'href="gpus-' in index


def test_nights_carry_their_status_counts_and_report_links(site):
    data, _ = series_page(site, "smoke", "gpu-box")
    nights = data["nights"]
    assert nights["id"] == [f"{day}-smoke-gpu-box" for day in DAYS]
    assert nights["status"] == ["complete", "complete", "complete", "complete", "incomplete", "complete"]
    assert nights["done"] == [4, 4, 4, 4, 2, 4] and nights["total"] == [4] * 6
    assert nights["failed"] == [0, 0, 0, 1, 0, 0]
    assert nights["loaded"] == [0, 0, 0, 0, 0, 1]
    assert nights["report"][1] is None  # Tuesday's folder has no report.html
    assert nights["report"][0] == "../mon-smoke-gpu-box/report.html"
    # Each run against the complete run before it; Saturday skips Friday, which stopped early.
    assert nights["baseline"] == [[], [0], [1], [2], [3], [3]]


def test_flagged_points_are_the_nights_that_changed(site, results):
    data, points = series_page(site, "smoke", "gpu-box")
    flagged = {
        (data["nights"]["id"][night][:3], case["id"], aspect, verdict)
        for case, table in zip(data["cases"], points, strict=True)
        for aspect in ("time", "memory")
        for night, verdict in zip(table["night"], table[aspect], strict=True)
        if verdict in ("r", "i")
    }
    cnn_adam, resnet20_adam = case_id("cnn", "adam"), case_id("resnet20", "adam")
    assert flagged == {
        ("wed", cnn_adam, "time", "r"),  # 20% slower than Tuesday
        ("thu", cnn_adam, "time", "i"),  # back to Tuesday's speed, against Wednesday
        ("thu", resnet20_adam, "time", "r"),  # out of memory
        ("thu", resnet20_adam, "memory", "r"),
        ("sat", resnet20_adam, "time", "i"),  # ran again, against Thursday
        ("sat", resnet20_adam, "memory", "i"),
    }
    # The same verdicts as trend's, from every whole record.
    records = history.records(results / "history.sqlite")
    trend = flag_history(records[(records["machine"] == "gpu-box") & (records["suite"] == "smoke")])
    by_trend = {
        (run[:3], case, aspect, verdict[0])
        for run, case, time, memory in trend[["run_id", "case_id", "time", "memory"]].itertuples(index=False)
        for aspect, verdict in (("time", time), ("memory", memory))
        if verdict in ("regression", "improvement")
    }
    assert by_trend == flagged


def test_points_hold_the_records_figures_failures_and_load(site, results):
    data, points = series_page(site, "smoke", "gpu-box")
    assert [m["key"] for m in data["metrics"]] == ["throughput", "step_time", "peak_memory"]
    by_case = {case["id"]: table for case, table in zip(data["cases"], points, strict=True)}
    cnn_adam = by_case[case_id("cnn", "adam")]
    wednesday = cnn_adam["night"].index(2)
    step = samples(48.0, seed=20)
    medians = np.median(np.reshape(step, (3, 10)), axis=1)
    median = float(np.median(step))
    assert cnn_adam["step_time"][wednesday] == pytest.approx(median, rel=1e-4)
    assert cnn_adam["throughput"][wednesday] == pytest.approx(32 / median * 1000, rel=1e-4)
    assert cnn_adam["step_time_low"][wednesday] == pytest.approx(medians.min(), rel=1e-4)
    assert cnn_adam["step_time_high"][wednesday] == pytest.approx(medians.max(), rel=1e-4)
    assert cnn_adam["throughput_low"][wednesday] == pytest.approx(32 / medians.max() * 1000, rel=1e-4)
    assert cnn_adam["peak_memory"][wednesday] == 600  # MiB
    oom = by_case[case_id("resnet20", "adam")]
    thursday = oom["night"].index(3)
    assert oom["status"][thursday] == "oom" and oom["throughput"][thursday] is None
    assert oom["error"][thursday] == "CUDA out of memory"
    loaded = by_case[case_id("cnn", "sgdm")]
    assert loaded["loaded"][loaded["night"].index(5)] == 0.6 and loaded["loaded"][0] is None
    # Friday stopped after two cases: the other two have no point that night.
    assert 4 not in by_case[case_id("resnet20", "sgdm")]["night"]


def test_optimizer_step_and_training_runs_get_their_own_figures(site):
    data, points = series_page(site, "optim", "cpu-box")
    assert data["kind"] == "optimizer-step"
    assert [m["key"] for m in data["metrics"]] == ["step_time", "bandwidth", "achieved"]
    assert sorted(table["bandwidth"][0] for table in points) == [50.0, 75.0]  # % of measured bandwidth
    data, points = series_page(site, "train-digits", "cpu-box")
    assert data["kind"] == "training"
    assert points[0]["time_to_target"] == [30.0, 31.0] and points[0]["accuracy"] == [98.5, 98.5]


def test_the_gpu_page_puts_the_machines_latest_runs_side_by_side(site):
    page = next(site.glob("gpus-*.html"))
    data = page_data(site / "data" / f"{page.stem}.js")
    # In the order of the machines' first runs (the same minute: by run id), the first the reference.
    assert data["devices"] == ["AMD EPYC", H100] and data["runs"] == ["tue-smoke-cpu-box", "sat-smoke-gpu-box"]
    smoke_pages = [f"{series_page(site, 'smoke', machine)[0]['page']}.html" for machine in ("cpu-box", "gpu-box")]
    assert data["pages"] == smoke_pages  # each device links to its page of this suite
    cases = [case["id"] for case in data["cases"]]
    for case, (model, optimizer) in zip(cases, SMOKE, strict=True):
        assert case == case_id(model, optimizer)
    # Throughput is batch / median step time: the GPU box's cases ran at 10 ms, the CPU's at 40 ms.
    gpu, cpu = data["values"][H100], data["values"]["AMD EPYC"]
    index = cases.index(case_id("cnn", "adam"))
    tuesday_cpu = float(np.median(samples(40.0, seed=10)))
    saturday_gpu = float(np.median(samples(10.0, seed=50)))
    assert cpu[index] == pytest.approx(32 / tuesday_cpu * 1000, rel=1e-4)
    assert data["speedup"]["AMD EPYC"][H100][index] == pytest.approx(tuesday_cpu / saturday_gpu, rel=1e-4)
    assert data["speedup"][H100]["AMD EPYC"][index] == pytest.approx(saturday_gpu / tuesday_cpu, rel=1e-4)
    assert gpu[index] is not None


# --- atomic update, and what is refused ----------------------------------------------------


def test_an_update_swaps_the_whole_site_at_once_and_keeps_the_version_before(results, capsys):
    output = results / "updated"
    arguments = ["dashboard", "--history", str(results / "history.sqlite"), "--output", str(output)]
    versions = []
    for _ in range(3):
        assert main(arguments) == 0
        assert output.is_symlink() and (output / "index.html").is_file()
        versions.append(output.parent / os.readlink(output))
    assert len(set(versions)) == 3
    kept = sorted(p.name for p in results.glob(".updated-*") if p.is_dir())
    assert kept == sorted(v.name for v in versions[1:])  # the version before stays for readers mid-load
    assert f"{output / 'index.html'}: 12 runs, 4 series pages, 1 GPU pages" in capsys.readouterr().out
    shutil.rmtree(versions[-1])  # removed by hand: the link dangles, and is still the dashboard's
    assert main(arguments) == 0 and (output / "index.html").is_file()


def test_an_output_that_is_no_dashboard_is_refused_before_any_work(tmp_path, results, capsys):
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    code = main(["dashboard", "--history", str(results / "history.sqlite"), "--output", str(precious)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "is not a dashboard written by convbench dashboard" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"] and (precious / "notes.txt").exists()


def test_without_plotly_the_command_says_what_to_install(tmp_path, results, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "plotly", None)  # import plotly now raises ImportError
    code = main(["dashboard", "--history", str(results / "history.sqlite"), "--output", str(tmp_path / "site")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "pip install 'convbench[dashboard]'" in err
    assert not (tmp_path / "site").exists()


def test_a_missing_history_is_named(tmp_path, capsys):
    code = main(["dashboard", "--history", str(tmp_path / "none.sqlite"), "--output", str(tmp_path / "site")])
    assert code == 2 and "there is no history at" in capsys.readouterr().err


# --- the site in a real browser --------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium through Debian's chromedriver, as test_report's."""
    assert CHROMIUM.is_file() and CHROMEDRIVER.is_file(), "apt-get install chromium chromium-driver (.ci/run does)"
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_window_size(1400, 1600)
    yield driver
    driver.quit()


def open_page(driver, page: Path, ready: str) -> list[str]:
    """Open ``page`` and wait until the script ``ready`` is true; return the problems: console
    errors, and anything loaded from outside the site's folder tree."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(page.absolute().as_uri())
    WebDriverWait(driver, 20).until(lambda d: d.execute_script(f"return {ready}"))
    problems = [f"console: {e['message']}" for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    loaded = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    return problems + [f"loaded {name}" for name in loaded if not name.startswith(page.parent.parent.as_uri())]


def test_the_pages_render_their_plots_in_chromium_without_an_error(site, browser, tmp_path):
    assert open_page(browser, site / "index.html", "document.readyState === 'complete'") == []
    assert len(browser.find_elements("css selector", "table.index tbody tr")) == 4
    browser.save_screenshot(str(tmp_path / "index.png"))
    data, _ = series_page(site, "smoke", "gpu-box")
    page = site / f"{data['page']}.html"
    # The night strip and the cases in view are drawn; the regressions are on top, marked.
    drawn = "document.querySelectorAll('#cases .js-plotly-plot').length >= 2"
    assert open_page(browser, page, drawn) == []
    first = browser.execute_script("return document.querySelector('#cases .case h3').firstChild.textContent")
    assert first in (case_id("cnn", "adam"), case_id("resnet20", "adam"))
    assert browser.execute_script("return document.querySelectorAll('#nights .bars .point path').length") > 0
    markers = browser.execute_script(
        "return document.querySelectorAll('#cases .js-plotly-plot .scatter .points path').length"
    )
    assert markers > 10
    browser.save_screenshot(str(tmp_path / "series.png"))
    gpus = next(site.glob("gpus-*.html"))
    assert open_page(browser, gpus, "document.querySelectorAll('#speedup .bars .point path').length > 0") == []
    assert len(browser.find_elements("css selector", "#table tr")) == 1 + len(SMOKE)
    browser.save_screenshot(str(tmp_path / "gpus.png"))
    assert all((tmp_path / f"{name}.png").stat().st_size > 10_000 for name in ("index", "series", "gpus"))


def test_a_point_opens_its_runs_report(site, browser):
    data, _ = series_page(site, "smoke", "gpu-box")
    open_page(browser, site / f"{data['page']}.html", "document.querySelectorAll('#nights .bars .point').length > 0")
    browser.execute_script(
        "const plot = document.getElementById('nights');plot.emit('plotly_click', {points: [{customdata: 0}]});"
    )
    assert browser.current_url.endswith("/mon-smoke-gpu-box/report.html")


def test_a_long_series_judged_in_parts_gets_the_verdicts_it_gets_whole(results, monkeypatch):
    """The parts, each in a forked process, look back across their first run for baselines."""
    from bench.analyse import compare
    from bench.dashboard import series

    database = results / "history.sqlite"
    suite, machine, nights = next(key for key in series.series_keys(database) if key[:2] == ("smoke", "gpu-box"))
    whole = series.read_series(database, suite, machine, nights, baseline_runs=3).verdicts
    real = compare.flag_series

    def parts_only(runs, baseline_runs=1, judge=None, **options):
        assert judge is not None, "the series was judged whole, not in parts"
        return real(runs, baseline_runs, judge, **options)

    monkeypatch.setattr(series, "flag_series", parts_only)
    monkeypatch.setattr(series, "RUNS_PER_PROCESS", 2)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    in_parts = series.read_series(database, suite, machine, nights, baseline_runs=3).verdicts
    assert in_parts == whole
    assert [len(v.baseline) for v in whole] == [0, 1, 2, 3, 3, 3]


def test_the_memory_panel_shows_a_cpu_steps_tracked_peak():
    """On the CPU a record's peak_memory_bytes is the whole process's resident set; the panel
    draws the step's tracked peak, as the reports and trend do."""
    from bench.dashboard import content

    (panel,) = [m for m in content.METRICS["training-step"] if m.verdict == "memory"]
    cpu = {"peak_memory_bytes": 900 * 2**20, "peak_memory_source": "process_rss_max", "tracked_peak_bytes": 12 * 2**20}
    assert panel.value(cpu) == 12.0
    assert panel.value({**cpu, "tracked_peak_bytes": None}) == 900.0  # no memory pass: the resident set
    cuda = {"peak_memory_bytes": 3 * 2**30, "peak_memory_source": "cuda_max_allocated", "tracked_peak_bytes": 2**30}
    assert panel.value(cuda) == 3 * 1024.0  # the allocator's peak over the timed steps

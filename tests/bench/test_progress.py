"""The progress bar: redrawn in place on a terminal, one line per case in a log."""

import io

from bench.reporting.progress import ProgressBar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_one_line_is_redrawn():
    stream = Terminal()
    bar = ProgressBar(total=4, stream=stream, width=8)
    bar.start("case-a")
    bar.finish("case-a", "ok")
    bar.close()
    frames = stream.getvalue().split("\r")[1:]
    assert frames[0].startswith("[........] 0/4 0:00 case-a")
    assert frames[1].startswith("[##......] 1/4 0:00 eta 0:00 case-a ok")
    assert stream.getvalue().endswith("\n") and stream.getvalue().count("\n") == 1


def test_in_a_log_each_finished_case_is_a_line():
    stream = io.StringIO()
    bar = ProgressBar(total=2, stream=stream)
    for label, status in (("a", "ok"), ("b", "oom")):
        bar.start(label)
        bar.finish(label, status)
    bar.close()
    assert stream.getvalue().splitlines() == ["[1/2] 0:00 eta 0:00 a ok", "[2/2] 0:00 b oom"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_eta_is_the_mean_time_per_finished_case_times_the_cases_left():
    stream, clock = io.StringIO(), FakeClock()
    bar = ProgressBar(total=4, stream=stream, clock=clock)
    for label, seconds in (("a", 30.0), ("b", 90.0), ("c", 3600.0), ("d", 1.0)):
        bar.start(label)
        clock.now += seconds
        bar.finish(label, "ok")
    # after a: 30 s each, 3 left; after b: 60 s each, 2 left; after c: 1240 s each, 1 left; done: none
    assert stream.getvalue().splitlines() == [
        "[1/4] 0:30 eta 1:30 a ok",
        "[2/4] 2:00 eta 2:00 b ok",
        "[3/4] 1:02:00 eta 20:40 c ok",
        "[4/4] 1:02:01 d ok",
    ]


def test_on_a_terminal_the_eta_follows_the_count():
    stream, clock = Terminal(), FakeClock()
    bar = ProgressBar(total=3, stream=stream, width=3, clock=clock)
    bar.start("a")
    clock.now = 10.0
    bar.finish("a", "ok")
    assert stream.getvalue().split("\r")[-1].startswith("[#..] 1/3 0:10 eta 0:20 a ok")

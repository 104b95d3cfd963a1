"""The progress bar: redrawn in place on a terminal, one line per case in a log."""

import io

from bench.progress import ProgressBar


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
    assert frames[1].startswith("[##......] 1/4 0:00 case-a ok")
    assert stream.getvalue().endswith("\n") and stream.getvalue().count("\n") == 1


def test_in_a_log_each_finished_case_is_a_line():
    stream = io.StringIO()
    bar = ProgressBar(total=2, stream=stream)
    for label, status in (("a", "ok"), ("b", "oom")):
        bar.start(label)
        bar.finish(label, status)
    bar.close()
    assert stream.getvalue().splitlines() == ["[1/2] 0:00 a ok", "[2/2] 0:00 b oom"]

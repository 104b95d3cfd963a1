"""Every output goes through one helper, ``write_atomic``, which never replaces what is not a
regular file: a symbolic link keeps pointing where it did (its target is written), a FIFO and
a character device are written to and stay what they were, a socket is refused, and inside a
run folder a link is refused rather than followed."""

import errno
import os
import select
import socket
import stat
import tempfile
import threading
from pathlib import Path

import pytest

from bench.reporting.report import write_figures
from bench.storage.store import RunFolderError, load_run, write_atomic
from tests.bench.runs import smoke_run


def _fifo_reader(path, received: list[bytes]) -> threading.Thread:
    """A reader of the FIFO ``path`` that never blocks in open (O_NONBLOCK), collecting what
    arrives until the writer closes or two seconds pass."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)

    def read() -> None:
        data, opened = b"", False
        while select.select([descriptor], [], [], 2.0)[0]:
            chunk = os.read(descriptor, 65536)
            if not chunk and opened:
                break
            opened = opened or bool(chunk)
            data += chunk
        received.append(data)
        os.close(descriptor)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def test_a_symbolic_link_is_followed_and_stays_a_link(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "out.json"
    link.symlink_to(target)
    write_atomic(link, "new")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == "new"


def test_a_dangling_link_gets_its_target_written(tmp_path):
    link = tmp_path / "out.json"
    link.symlink_to(tmp_path / "made" / "here.json")
    write_atomic(link, "data")
    assert link.is_symlink() and (tmp_path / "made" / "here.json").read_text() == "data"


def test_a_fifo_is_written_into_and_stays_a_fifo(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = _fifo_reader(fifo, received)
    write_atomic(fifo, "x" * 200_000)  # more than a pipe's buffer: the write waits for the reader
    reader.join(10)
    assert received == [b"x" * 200_000]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_fifo_nobody_reads_is_refused_at_once_not_waited_on(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OSError) as raised:
        write_atomic(fifo, "data")
    assert raised.value.errno == errno.ENXIO and "no process reads" in str(raised.value)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_character_device_is_written_to_not_replaced(tmp_path):
    """A copy of /dev/null's device node in tmp_path: replacing it harms nothing, so the old
    rename-over-everything shows here as a regular file where the device was."""
    node = tmp_path / "null"
    try:
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a device node needs CAP_MKNOD")
    before = os.lstat(node)
    write_atomic(node, "discarded")
    after = os.lstat(node)
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)


def test_dev_null_is_never_renamed_over_or_unlinked(monkeypatch):
    """Run as root, a rename over /dev/null would break the machine; here any rename, unlink
    or temporary file fails the test before it could happen."""

    def forbidden(*args, **kwargs):
        raise AssertionError(f"write_atomic tried to replace /dev/null: {args}")

    before = os.stat("/dev/null")
    for name in ("replace", "rename", "unlink"):
        monkeypatch.setattr(os, name, forbidden)
    monkeypatch.setattr(tempfile, "mkstemp", forbidden)
    write_atomic(Path("/dev/null"), "discarded")
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)


def test_a_socket_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    try:
        with pytest.raises(OSError, match="a socket: convbench writes regular files, FIFOs and character devices"):
            write_atomic(path, "data")
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
    finally:
        server.close()


def test_inside_a_run_folder_a_link_is_refused_not_followed(tmp_path):
    run_dir = tmp_path / "r1"
    run_dir.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run_dir / "figures").symlink_to(elsewhere)
    with pytest.raises(RunFolderError, match="figures: a symbolic link"):
        write_atomic(run_dir / "figures" / "x.png", b"png", inside=run_dir)
    (run_dir / "report.md").symlink_to(elsewhere / "report.md")
    with pytest.raises(RunFolderError, match="report.md: a symbolic link in a run folder"):
        write_atomic(run_dir / "report.md", "page", inside=run_dir)
    assert list(elsewhere.iterdir()) == []


def test_report_never_writes_through_a_figures_link(tmp_path, capsys):
    from bench.cli import main

    run_dir = smoke_run(tmp_path, "r1")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run_dir / "figures").symlink_to(elsewhere)
    assert main(["report", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "figures: a symbolic link in a run folder" in err and len(err.splitlines()) == 1
    # A link made after the folder was read is refused when the figures are written.
    (run_dir / "figures").unlink()
    run = load_run(run_dir)
    (run_dir / "figures").symlink_to(elsewhere)
    with pytest.raises(RunFolderError, match="figures: a symbolic link"):
        write_figures(run)
    assert list(elsewhere.iterdir()) == []


def test_the_figure_of_trend_follows_a_link_to_its_target(tmp_path, capsys):
    from bench.cli import main
    from bench.storage.history import ingest

    for index in range(2):
        ingest([smoke_run(tmp_path / "runs", f"r{index}", started=f"2026-11-2{index}T00:00:00+00:00")], tmp_path / "h")
    target = tmp_path / "kept.png"
    (tmp_path / "trend.png").symlink_to(target)
    assert main(["trend", "--history", str(tmp_path / "h"), "--figure", str(tmp_path / "trend")]) == 0, capsys
    assert (tmp_path / "trend.png").is_symlink() and target.read_bytes().startswith(b"\x89PNG")


def test_a_link_to_a_fifo_is_written_through_as_dev_stdout_to_a_pipe_is(tmp_path):
    """/dev/stdout is a link to /proc/self/fd/1, which is a pipe under `| head`: the write
    goes into the pipe, and neither the link nor the pipe is replaced."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "stdout"
    link.symlink_to(fifo)
    received: list[bytes] = []
    reader = _fifo_reader(fifo, received)
    write_atomic(link, "table\n")
    reader.join(10)
    assert received == [b"table\n"]
    assert link.is_symlink() and stat.S_ISFIFO(os.lstat(fifo).st_mode)

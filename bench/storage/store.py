"""A run's folder on disk: records appended and flushed per case, whole files written atomically.

    results/<run-id>/
        run.json        the manifest: id, suite, machine, status, case counts, sections, start
                        and end times, and the process that writes the run (host, pid)
        env.json        the machine and software (``convbench env``)
        suite.toml      the suite as resolved (defaults and command-line overrides applied)
        records.jsonl   one Record per line, appended as each case finishes

A run's ``status`` is ``running`` while it goes, then ``complete`` when every case and every
section (the suite's ``[rf]``) has its result, ``incomplete`` when it stopped early (Ctrl-C,
SIGTERM, a full disk; ``stopped_by`` says which). A run whose process died without closing
it (SIGKILL, the out-of-memory killer, a CI timeout) still says ``running`` on disk; reading
it on the machine that ran it finds the process gone and reports it ``killed``. Nothing a user
measured is lost to a later failure and nothing missing goes unnoticed.

The run folder is created with one ``os.mkdir``, which is atomic: of two processes starting
the same run id, exactly one gets the folder and the other stops before doing any work.
Every file is created with the permissions the umask allows, as ``open`` would.
"""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import re
import secrets
import socket
import stat
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import psutil

from bench.measure.load import load_average
from bench.record import BLOCKS, KINDS, SCHEMA, SLOTS, Record, flatten, read_flat, utc_now

MANIFEST = "run.json"
ENV = "env.json"
SUITE = "suite.toml"
RECORDS = "records.jsonl"

#: A run id is one path component: a letter or digit, then letters, digits, ``.``, ``_``
#: or ``-``, at most ``RUN_ID_MAX`` characters in all (it names a folder on every filesystem).
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
RUN_ID_MAX = 100
#: The statuses a run can have (see the module docstring); ``killed`` is only ever read.
RUN_STATUSES = ("running", "complete", "incomplete", "killed")
#: A process start time read twice differs by rounding; a reused pid differs by more.
_START_TIME_TOLERANCE_S = 1.0


class RunFolderError(ValueError):
    """A run folder that cannot be made or read as asked: a bad run id, a folder that exists
    already, a results root that is not a folder, a damaged ``run.json`` or record."""


def new_run_id() -> str:
    """A sortable, unique run id: UTC time plus a random suffix, e.g. ``20261127T043012Z-5f3a``."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


def check_results_root(root: Path | str) -> None:
    """RunFolderError if ``root`` exists and is not a folder (checked before the history
    that defaults to a file inside it, so the message names the real problem)."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise RunFolderError(f"results root {root} is not a folder")


def check_run_id(run_id: str) -> str:
    """``run_id`` if it is a valid run id (``RUN_ID_PATTERN``, at most ``RUN_ID_MAX``
    characters), else RunFolderError: a run id names one folder inside the results root,
    never a path out of it (``../x``, ``/abs``) nor the root itself (``.``)."""
    if len(run_id) > RUN_ID_MAX or not RUN_ID_PATTERN.fullmatch(run_id):
        raise RunFolderError(
            f"run id {run_id[:40] + '...' if len(run_id) > 40 else run_id!r} is not valid: use 1 to {RUN_ID_MAX} "
            "letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return run_id


def _file_mode() -> int:
    """The mode ``open`` gives a new file: 0666 less the process's umask (read by setting it
    and putting it back, the only way POSIX offers)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _mode(path: Path | str) -> int | None:
    """``path``'s own mode (a link is not followed), or None where nothing is there."""
    try:
        return os.lstat(path).st_mode
    except FileNotFoundError:
        return None


def _target_mode(path: Path | str) -> int | None:
    """The mode of what ``path`` names, links followed, or None where nothing is there (a
    dangling link included)."""
    try:
        return os.stat(path).st_mode
    except FileNotFoundError:
        return None


def _own_path(path: Path, inside: Path) -> None:
    """Refuse a write to ``path`` in the run folder ``inside`` that would go through a
    symbolic link, or replace what is not a regular file: every folder from ``inside`` down
    must be a real folder (missing ones are made) and ``path`` a regular file or nothing.
    Raises RunFolderError naming the link or the file."""
    current = inside
    for part in path.relative_to(inside).parts[:-1]:
        current = current / part
        mode = _mode(current)
        if mode is None:
            os.mkdir(current)
        elif not stat.S_ISDIR(mode):
            raise RunFolderError(f"{current}: {_kind(mode)} where the run folder keeps a folder; {_OWN_FILES}")
    mode = _mode(path)
    if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise RunFolderError(f"{path}: {_kind(mode)} in a run folder; {_OWN_FILES}")


#: Why a run folder's links and special files are refused, said with each refusal.
_OWN_FILES = "convbench reads and writes a run folder's own regular files only, never through a link (remove it)"


def _kind(mode: int) -> str:
    """What a file of ``mode`` is, in words."""
    kinds = (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
    )
    return next((name for test, name in kinds if test(mode)), "a regular file")


def write_atomic(path: Path, content: str | bytes, *, inside: Path | None = None) -> None:
    """Write ``content`` to ``path`` without ever replacing what is not ours to replace.

    - nothing there, or a regular file: a temporary file in the same folder and a rename, so
      readers see the old file or the new one, never half of one. The file gets the umask's
      permissions (a temporary file alone would be 0600, unreadable to the team the run
      folder is shared with).
    - a symbolic link: the file it points to is written as above; the link stays.
    - a FIFO or a character device (``/dev/null``, ``/dev/stdout``, a pipe someone reads):
      written to directly, never replaced; a FIFO that no process reads is refused
      (OSError ENXIO) rather than waited on for ever.
    - a socket or a block device: refused (OSError EINVAL).

    ``inside``: the run folder ``path`` belongs to; there a symbolic link (at ``path`` or on
    the way to it) or a special file is refused with RunFolderError instead: a run folder
    holds its own files, and a link in it must not send a report elsewhere. Raises
    IsADirectoryError naming ``path`` where it is a folder."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    if inside is not None:
        _own_path(path, inside)
        mode = _mode(path)
    else:
        mode = _target_mode(path)
        if mode is None or stat.S_ISREG(mode):
            # The file a link points to is replaced beside itself; the link stays. A link to
            # a FIFO or a device (/dev/stdout -> a pipe) is opened through, as open() would.
            path = Path(os.path.realpath(path))
    if mode is not None and stat.S_ISDIR(mode):  # checked first: the rename would name the temporary file
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if mode is None or stat.S_ISREG(mode):
        _replace(path, data)
    elif stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
        _write_through(path, data, fifo=stat.S_ISFIFO(mode))
    else:
        raise OSError(
            errno.EINVAL, f"{_kind(mode)}: convbench writes regular files, FIFOs and character devices", str(path)
        )


def _replace(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), _file_mode())
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        error.filename = error.filename or str(path)  # a failed write names no file by itself
        raise
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _write_through(path: Path, data: bytes, fifo: bool) -> None:
    """Write ``data`` into the FIFO or character device ``path`` itself. A FIFO is opened
    without waiting: with no reader the open fails at once (ENXIO) instead of blocking."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC | (os.O_NONBLOCK if fifo else 0))
    except OSError as error:
        if fifo and error.errno == errno.ENXIO:
            raise OSError(errno.ENXIO, "a FIFO that no process reads; start its reader first", str(path)) from None
        raise
    try:
        os.set_blocking(descriptor, True)
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
    except OSError as error:
        error.filename = error.filename or str(path)
        raise
    finally:
        os.close(descriptor)


def write_json(path: Path, data: object, *, inside: Path | None = None) -> None:
    """``data`` as indented JSON, written by ``write_atomic``."""
    write_atomic(path, json.dumps(data, indent=2) + "\n", inside=inside)


def open_for_append(path: Path) -> int:
    """A descriptor appending to the run-folder file ``path`` (made if missing), refusing a
    symbolic link or anything but a regular file (``_open_own``), so appends never leave the folder."""
    return _open_own(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)


def _open_own(path: Path, flags: int) -> int:
    """A descriptor on the run folder's file ``path`` opened with ``flags``, which must be a
    regular file: a symbolic link is not followed (``O_NOFOLLOW``) and a FIFO is not waited on
    (``O_NONBLOCK``); RunFolderError naming what it is otherwise."""
    try:
        descriptor = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENXIO):  # a link, or a FIFO nobody reads
            raise RunFolderError(f"{path}: {_kind(os.lstat(path).st_mode)} in a run folder; {_OWN_FILES}") from None
        raise
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        raise RunFolderError(f"{path}: {_kind(mode)} in a run folder; {_OWN_FILES}")
    os.set_blocking(descriptor, True)
    return descriptor


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or None if there is none."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def writer_alive(manifest: dict) -> bool | None:
    """Whether the process that writes a run is still running: None where this cannot be
    told (another host, or a run folder written before runs recorded their process)."""
    pid, started = manifest.get("pid"), manifest.get("process_started")
    if pid is None or started is None or manifest.get("hostname") != socket.gethostname():
        return None
    now = _process_start(int(pid))
    return now is not None and abs(now - float(started)) <= _START_TIME_TOLERANCE_S


def effective_status(manifest: dict) -> str:
    """A run's status as it is now: ``killed`` for a run that says ``running`` but whose
    process is gone (SIGKILL, the out-of-memory killer), else the status it records."""
    status = manifest.get("status", "running")
    if status == "running" and writer_alive(manifest) is False:
        return "killed"
    return status


class RunWriter:
    """Creates a run folder and keeps it consistent while cases finish one by one.

    Raises RunFolderError before anything is written if ``run_id`` is not valid, ``root`` is
    not a folder that can be made, or the run folder exists already (also when another
    process made it a moment ago: the folder is made with one atomic ``os.mkdir``)."""

    def __init__(
        self,
        root: Path,
        run_id: str,
        suite_name: str,
        suite_toml: str,
        env: dict,
        cases_total: int,
        *,
        machine: str | None = None,
        sections: Sequence[str] = (),
        tags: Sequence[str] = (),
    ) -> None:
        check_run_id(run_id)
        root = Path(root)
        self.path = root / run_id
        try:
            root.mkdir(parents=True, exist_ok=True)
            os.mkdir(self.path)
        except FileExistsError:
            check_results_root(root)
            raise RunFolderError(f"run folder {self.path} already exists; choose another --run-id") from None
        except OSError as error:
            raise RunFolderError(f"cannot create the run folder {self.path}: {error.strerror}") from None
        self.started = time.monotonic()
        self.manifest = {
            "run_id": run_id,
            "suite": suite_name,
            "machine": machine,
            "tags": list(tags),
            "status": "running",
            "started": utc_now(),
            "finished": None,
            "cases_total": cases_total,
            "cases_done": 0,
            "failures": 0,
            "sections": {name: "not run" for name in sections},
            "stopped_by": None,
            # seconds inside the cases' warm-up and timed steps, and of the run's wall clock
            # (set when it closes): how much of the run was spent measuring
            "steps_s": 0.0,
            "wall_s": None,
            "load_average_start": load_average(),
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "process_started": _process_start(os.getpid()),
        }
        write_json(self.path / ENV, env, inside=self.path)
        self.write(SUITE, suite_toml)
        os.close(open_for_append(self.path / RECORDS))
        self._write_manifest()

    def write(self, name: str, content: str | bytes) -> None:
        """Write the run folder's file ``name`` (a path relative to it) whole, atomically,
        never through a symbolic link (``write_atomic`` with ``inside``)."""
        write_atomic(self.path / name, content, inside=self.path)

    def _write_manifest(self) -> None:
        write_json(self.path / MANIFEST, self.manifest, inside=self.path)

    def append(self, record: Record) -> None:
        """Add one finished case; it is on disk when this returns. A write that fails (a full
        disk) leaves no partial line behind and raises the OSError."""
        data = (json.dumps(record.to_json()) + "\n").encode("utf-8")
        descriptor = open_for_append(self.path / RECORDS)
        try:
            size = os.fstat(descriptor).st_size
            try:
                written = 0
                while written < len(data):
                    written += os.write(descriptor, data[written:])
                os.fsync(descriptor)
            except OSError as error:
                os.ftruncate(descriptor, size)
                error.filename = error.filename or str(self.path / RECORDS)  # say which file
                raise
        finally:
            os.close(descriptor)
        self.manifest["cases_done"] += 1
        self.manifest["failures"] += record.status != "ok"
        self.manifest["steps_s"] += (record.timing and record.timing.steps_s) or 0.0
        self._write_manifest()

    def section_done(self, name: str, outcome: str) -> None:
        """Record how section ``name`` (e.g. ``rf``) ended: ``ok`` or ``error``."""
        self.manifest["sections"][name] = outcome
        self._write_manifest()

    def finish(self, stopped_by: str | None = None) -> str:
        """Close the run: ``complete`` if every case has a record and every section ran, else
        ``incomplete``; ``stopped_by`` names what ended it early (SIGINT, SIGTERM, an error)."""
        done = self.manifest["cases_done"] == self.manifest["cases_total"]
        done = done and "not run" not in self.manifest["sections"].values()
        self.manifest["status"] = "complete" if done else "incomplete"
        self.manifest["stopped_by"] = stopped_by
        self.manifest["finished"] = utc_now()
        self.manifest["wall_s"] = time.monotonic() - self.started
        self._write_manifest()
        return self.manifest["status"]


@dataclass
class RecordCounts:
    """What a run's records add up to, counted as they stream past: how many, how many did
    not end ``ok``, the devices they ran on, and the first host and commit they name."""

    records: int = 0
    failures: int = 0
    device_names: set[str] = field(default_factory=set)
    hostname: str | None = None
    git_commit: str | None = None

    def add(self, record: dict) -> None:
        self.records += 1
        self.failures += record["status"] != "ok"
        if record.get("device_name"):
            self.device_names.add(record["device_name"])
        self.hostname = self.hostname or record.get("hostname") or None
        self.git_commit = self.git_commit or record.get("git_commit") or None


@dataclass
class Run:
    """A run folder read back: its manifest, environment, suite text and records (``records``
    empty where it was read without them, ``load_run(..., records=False)``; ``counts`` holds
    what they add up to either way)."""

    path: Path
    manifest: dict
    env: dict
    suite_toml: str
    records: list[dict]
    counts: RecordCounts = field(default_factory=RecordCounts)

    @property
    def run_id(self) -> str:
        return self.manifest["run_id"]

    def frame(self) -> pd.DataFrame:
        """The records as a DataFrame, one row per case, columns in Record order."""
        return pd.DataFrame(self.records)


def _read_text(path: Path) -> str:
    with os.fdopen(_open_own(path, os.O_RDONLY), "rb") as handle:
        content = handle.read()
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RunFolderError(f"{path}: damaged (not UTF-8: {error})") from None


def decode_json(text: str | bytes, where: object, damaged: str = "damaged") -> object:
    """``text`` as JSON, or RunFolderError naming ``where`` (``where: damaged (why)``): not
    JSON, not UTF-8, nested too deeply for Python's parser, or an integer of more digits than
    Python converts."""
    try:
        return json.loads(text)
    except RecursionError:
        raise RunFolderError(f"{where}: {damaged} (JSON nested too deeply)") from None
    except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError, or an integer of > 4300 digits
        raise RunFolderError(f"{where}: {damaged} ({error})") from None


def decode_json_object(text: str | bytes, where: object) -> dict:
    """``decode_json`` that must give a JSON object."""
    data = decode_json(text, where)
    if not isinstance(data, dict):
        raise RunFolderError(f"{where}: damaged (expected a JSON object, got {_json_name(data)})")
    return data


def _json_name(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(type(value), "a number")


#: run.json's fields that readers rely on, and the JSON types each may hold.
MANIFEST_TYPES: dict[str, tuple[type, ...]] = {
    "run_id": (str,),
    "suite": (str, type(None)),
    "machine": (str, type(None)),
    "status": (str,),
    "started": (str, type(None)),
    "finished": (str, type(None)),
    "cases_total": (int, type(None)),
    "tags": (list,),
    "sections": (dict,),
    "stopped_by": (str, type(None)),
    "hostname": (str, type(None)),
    "pid": (int, type(None)),
    "process_started": (int, float, type(None)),
    "steps_s": (int, float, type(None)),
    "wall_s": (int, float, type(None)),
}
#: The fields every reader relies on in a schema-1 (flat) record, those of the first record
#: format, which every version wrote: a flat record without one is damaged. Of them only
#: ``REQUIRED_NULLABLE`` may be null.
REQUIRED_RECORD_FIELDS = (
    *("run_id", "case_id", "timestamp", "suite", "model", "optimizer", "batch_size", "precision", "channels_last"),
    *("compile", "dataset", "input_shape", "steps", "warmup", "repeats", "device", "device_name", "hostname"),
    *("torch_version", "git_commit", "status", "step_time_samples_ms"),
)
REQUIRED_NULLABLE = ("batch_size", "git_commit")
#: What a schema-2 record must hold: the envelope's fields, and the configuration and
#: provenance every kind has (key paths); none of them may be null.
REQUIRED_SCHEMA2 = (
    *(("kind",), ("run_id",), ("case_id",), ("timestamp",), ("suite",), ("status",), ("case",), ("provenance",)),
    *(("case", name) for name in ("model", "optimizer", "precision", "steps", "warmup", "repeats")),
    *(("provenance", name) for name in ("device", "device_name", "hostname", "torch_version")),
)
#: Measurements that can only be finite and zero or more (durations, rates, sizes, counts):
#: a NaN, an infinity or a negative number there is damage, not a result.
NON_NEGATIVE_FIELDS = (
    *("batch_size", "steps", "warmup", "repeats", "params", "throughput", "global_throughput"),
    *("step_time_ms", "step_time_iqr_ms", "step_time_min_ms", "step_time_samples_ms", "rank_step_time_ms"),
    *("forward_ms", "backward_ms", "optimizer_ms"),
    *("param_bytes", "grad_bytes", "optimizer_state_bytes", "peak_memory_bytes", "tracked_peak_bytes"),
)
_NON_NEGATIVE = frozenset(NON_NEGATIVE_FIELDS)
#: Integers beyond what a 64-bit column holds (SQLite, pandas, numpy) are damage.
_INT64 = 2**63


def _json_types(annotation: object) -> tuple[type, ...]:
    """The JSON value types a Record field annotated ``annotation`` may hold. Deliberately
    loose where a reader cannot go wrong: any number where a number is expected, 0/1 for a
    bool, null for every field bar the identity and configuration ones readers rely on
    (``REQUIRED_RECORD_FIELDS``, unless the field is optional); never a string for a number,
    a number for a string, or a scalar for a list or an object."""
    import types
    import typing

    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    allowed: list[type] = [type(None)]
    for option in options:
        origin = typing.get_origin(option) or option
        allowed += {float: [float, int], int: [int, float], bool: [bool, int]}.get(origin, [origin])
    return tuple(dict.fromkeys(allowed))


@functools.cache
def _record_types() -> dict[str, tuple[type, ...]]:
    """The JSON types each flat field may hold, read from its block's annotation."""
    return {name: _json_types(slot.annotation) for name, slot in SLOTS.items()}


@functools.cache
def _required_types(schema: int) -> dict[str, tuple[type, ...]]:
    """``_record_types`` with null taken away from the fields a ``schema`` record must hold."""
    if schema == 1:
        required = {name for name in REQUIRED_RECORD_FIELDS if name not in REQUIRED_NULLABLE}
    else:
        required = {name for name, slot in SLOTS.items() if slot.path in REQUIRED_SCHEMA2}
    types = dict(_record_types())
    for name in required:
        types[name] = tuple(t for t in types[name] if t is not type(None))
    return types


@functools.cache
def _not_null(schema: int) -> frozenset[str]:
    """The fields a ``schema`` record may not hold as null (``_required_types``)."""
    return frozenset(name for name, allowed in _required_types(schema).items() if type(None) not in allowed)


def _type_error(value: object, allowed: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in allowed:
        return True  # JSON true is not a number
    return not isinstance(value, allowed)


def _expected(allowed: tuple[type, ...]) -> str:
    names = [t.__name__ for t in allowed if t is not type(None)]
    return " or ".join(names) + (" or null" if type(None) in allowed else "")


def quoted(value: object) -> str:
    """``value`` as a message shows it: at most 60 characters."""
    if isinstance(value, int) and abs(value) >= 10**40:
        return f"an integer of {len(str(abs(value)))} digits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bad_number(value: object, measurement: bool) -> str | None:
    """Why ``value`` (a number, or a list) cannot be read, or None: an integer beyond 64 bits
    anywhere; in a ``measurement`` (``NON_NEGATIVE_FIELDS``), a NaN, an infinity or a number
    below zero (elsewhere a NaN is what a figure that could not be worked out has always been
    written as). Written for speed, since every field of every record passes here: a list of
    numbers is summed and bounded in C, and only looked at item by item when that finds
    something."""
    kind = value.__class__
    if kind is float:
        if measurement and value - value != 0.0:  # NaN and the infinities alone give NaN here
            return "not finite"
        return "negative" if measurement and value < 0 else None
    if kind is int:
        if not -_INT64 < value < _INT64:
            return "out of range"
        return "negative" if measurement and value < 0 else None
    if kind is not list or not value:
        return None
    try:
        finite = math.isfinite(math.fsum(value))
        lowest, highest = min(value), max(value)
    except (TypeError, OverflowError, ValueError):  # not all numbers (names, pairs), or huge
        return _bad_items(value, measurement)
    if (finite or not measurement) and -_INT64 < lowest and highest < _INT64 and not (measurement and lowest < 0):
        return None
    return _bad_items(value, measurement)


def _bad_items(values: list, measurement: bool) -> str | None:
    """``_bad_number`` of each number in ``values``, the first problem found."""
    for item in values:
        if item.__class__ in (int, float):
            problem = _bad_number(item, measurement)
            if problem is not None:
                return problem
    return None


def check_record(data: object, where: object) -> dict:
    """``data`` read as a flat record (``bench.record.flatten``: every field of
    ``RECORD_FIELDS`` under its own name, the kind decided), if it is a record as ``Record``
    writes it now (schema 2: an envelope and blocks) or wrote it before (schema 1: one flat
    object, upgraded here); else RunFolderError naming ``where`` and the field: every field
    readers rely on present (``REQUIRED_RECORD_FIELDS``, ``REQUIRED_SCHEMA2``), every known
    field of its type, a known kind, no integer beyond 64 bits, and finite, non-negative
    measurements (``NON_NEGATIVE_FIELDS``). A ``case_id`` may not hold control characters
    (it reaches terminals and file names)."""
    if not isinstance(data, dict):
        raise RunFolderError(f"{where}: damaged record (expected a JSON object, got {_json_name(data)})")
    schema = data.get("schema", 1)
    if schema == 1:
        _check_fields(data, 1, where)
        flat = read_flat(data)
    elif schema == SCHEMA:
        flat = _flatten_checked(data, where)
    else:
        raise RunFolderError(
            f"{where}: damaged record (schema {quoted(schema)}: this convbench reads record schemas 1 to {SCHEMA}; "
            "a newer one needs a newer convbench)"
        )
    if flat["kind"] not in KINDS:
        raise RunFolderError(f"{where}: damaged record (kind is {quoted(flat['kind'])}, not one of {', '.join(KINDS)})")
    if not flat["case_id"].isprintable():
        raise RunFolderError(f"{where}: damaged record (case_id {quoted(flat['case_id'])} holds control characters)")
    return flat


def _flatten_checked(data: dict, where: object) -> dict:
    """A schema-2 record flattened, once its envelope and blocks are where they belong and
    its fields check out (``_check_fields``)."""
    for name, value in data.items():
        if name in SLOTS and SLOTS[name].path != (name,):
            raise RunFolderError(f"{where}: damaged record ({name} is outside its block, {SLOTS[name].path[0]})")
        if name in BLOCKS and not isinstance(value, dict):
            raise RunFolderError(f"{where}: damaged record ({name} is {quoted(value)}, expected an object)")
    memory_pass = data.get("memory_pass") or {}
    for name in ("tracked", "predicted"):
        if not isinstance(memory_pass.get(name, {}), dict):
            raise RunFolderError(f"{where}: damaged record (memory_pass.{name} is not an object)")
    for path in REQUIRED_SCHEMA2:
        place = data
        for key in path[:-1]:
            place = place[key]
        if path[-1] not in place:
            raise RunFolderError(f"{where}: damaged record ({'.'.join(path)} is missing)")
    flat = flatten(data)
    _check_fields(flat, SCHEMA, where)
    return flat


def _check_fields(data: dict, schema: int, where: object) -> None:
    """RunFolderError naming the first field of the flat ``data`` that a ``schema`` record
    must hold and lacks, or that holds what its field cannot."""
    types, not_null = _required_types(schema), _not_null(schema)
    if schema == 1:
        for name in REQUIRED_RECORD_FIELDS:
            if name not in data:
                raise RunFolderError(f"{where}: damaged record ({name} is missing)")
    for name, value in data.items():
        if value is None and name not in not_null:  # most fields of most records: nothing to check
            continue
        allowed = types.get(name)
        if allowed is not None and (
            not isinstance(value, allowed) or (value.__class__ is bool and bool not in allowed)
        ):
            raise RunFolderError(f"{where}: damaged record ({name} is {quoted(value)}, expected {_expected(allowed)})")
        problem = _bad_number(value, name in _NON_NEGATIVE)
        if problem is not None:
            raise RunFolderError(f"{where}: damaged record ({name} is {problem}: {quoted(value)})")


def check_manifest(manifest: dict, where: object) -> dict:
    """``manifest`` if its fields have the types run.json holds and its run id names one
    folder, else RunFolderError naming ``where``. Ids that ``check_run_id`` refuses today but
    older versions wrote (``pr#12``, a timestamp with ``:``) stay readable; only an id that is
    a path (``../x``, ``a/b``), empty, or holds a control character is refused."""
    for name, allowed in MANIFEST_TYPES.items():
        if name == "run_id" and name not in manifest:
            raise RunFolderError(f"{where}: damaged (no run_id)")
        if name in manifest and _type_error(manifest[name], allowed):
            raise RunFolderError(f"{where}: damaged ({name} is {quoted(manifest[name])})")
    run_id = manifest["run_id"]
    if run_id in ("", ".", "..") or "/" in run_id or "\\" in run_id or not run_id.isprintable():
        raise RunFolderError(f"{where}: damaged (run id {run_id[:40]!r} is not one folder name)")
    pid = manifest.get("pid")
    if pid is not None and not 0 < pid < 2**31:
        raise RunFolderError(f"{where}: damaged (pid is {quoted(pid)})")
    for name in ("started", "finished"):
        if not is_time(manifest.get(name)):
            raise RunFolderError(f"{where}: damaged ({name} is {quoted(manifest[name])}, not an ISO 8601 time)")
    return manifest


def is_time(value: object) -> bool:
    """Whether ``value`` is None or an ISO 8601 time (as ``utc_now`` writes), which readers
    sort and plot by."""
    if value is None:
        return True
    try:
        datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return False
    return True


#: env.json's fields that readers rely on, and the JSON types each may hold; the lists named
#: in ``_ENV_LISTS`` hold objects.
ENV_TYPES: dict[str, tuple[type, ...]] = {
    "hostname": (str, type(None)),
    "git_commit": (str, type(None)),
    "git_dirty": (bool, type(None)),
    "python": (str, type(None)),
    "platform": (str, type(None)),
    "torch": (str, type(None)),
    "cuda": (str, type(None)),
    "cudnn": (int, str, type(None)),
    "cpu": (dict, type(None)),
    "gpus": (list, type(None)),
    "gpu_telemetry": (dict, type(None)),
}


def check_env(env: dict, where: object) -> dict:
    """``env`` (env.json) if the fields readers use have their types (``ENV_TYPES``; the GPU
    lists hold objects, the CPU's model is text), else RunFolderError naming ``where``."""
    for name, allowed in ENV_TYPES.items():
        if name in env and _type_error(env[name], allowed):
            raise RunFolderError(f"{where}: damaged ({name} is {quoted(env[name])})")
    telemetry = env.get("gpu_telemetry") or {}
    for name, items in (("gpus", env.get("gpus")), ("gpu_telemetry.gpus", telemetry.get("gpus"))):
        if items is not None and (not isinstance(items, list) or not all(isinstance(i, dict) for i in items)):
            raise RunFolderError(f"{where}: damaged ({name} is {quoted(items)}, expected a list of objects)")
    model = (env.get("cpu") or {}).get("model")
    if model is not None and not isinstance(model, str):
        raise RunFolderError(f"{where}: damaged (cpu.model is {quoted(model)})")
    return env


def _check_entries(path: Path) -> None:
    """RunFolderError naming the first symbolic link or special file (FIFO, socket, device)
    in the run folder or its ``figures/``: convbench never reads or writes through one."""
    for folder in (path, path / "figures"):
        if folder != path and not stat.S_ISDIR(_mode(folder) or 0):
            continue
        with os.scandir(folder) as entries:
            for entry in entries:
                mode = entry.stat(follow_symlinks=False).st_mode
                if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                    raise RunFolderError(f"{entry.path}: {_kind(mode)} in a run folder; {_OWN_FILES}")


def record_lines(path: Path, counts: RecordCounts | None = None, unique: bool = True) -> Iterator[tuple[dict, str]]:
    """(record, its line of JSON text) for each record of the run folder ``path``, one at a
    time as they are read (memory stays flat however long ``records.jsonl`` is), each checked
    by ``check_record``; ``counts``, if given, adds each up. A truncated last line (a run
    killed mid-write) is skipped; a damaged line anywhere else is a RunFolderError naming the
    file and line, and so is a case id that appears twice (``unique``; where the ids are not
    kept, the history's key catches it). A missing ``records.jsonl`` holds no records."""
    records_path = path / RECORDS
    if _mode(records_path) is None:
        return
    seen: dict[str, int] = {}
    pending: RunFolderError | None = None  # a damaged line: the end of the file if nothing follows
    with os.fdopen(_open_own(records_path, os.O_RDONLY), "r", encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            if pending is not None:
                raise pending
            try:
                data = decode_json(line, f"{records_path}:{number}", "damaged record")
            except RunFolderError as error:
                pending = error
                continue
            record = check_record(data, f"{records_path}:{number}")
            if unique:
                first = seen.setdefault(record["case_id"], number)
                if first != number:
                    raise RunFolderError(
                        f"{records_path}:{number}: damaged (case {quoted(record['case_id'])} appears twice, first on "
                        f"line {first})"
                    )
            if counts is not None:
                counts.add(record)
            yield record, line.strip()


def read_records(path: Path, counts: RecordCounts | None = None) -> Iterator[dict]:
    """The records of the run folder ``path`` as ``record_lines`` reads them, without their text."""
    for record, _ in record_lines(path, counts):
        yield record


def settle(run: Run) -> None:
    """Take the manifest's case and failure counts from the records counted (``run.counts``):
    they are the truth about what ran. A complete run that has lost records since it
    finished (a truncated or deleted line) reads as ``incomplete``, ``stopped_by`` saying
    how many are left."""
    manifest, counts = run.manifest, run.counts
    total = manifest.get("cases_total")
    if manifest["status"] == "complete" and isinstance(total, int) and counts.records < total:
        manifest["status"] = "incomplete"
        manifest["stopped_by"] = f"{run.path / RECORDS} holds {counts.records} of the {total} records the run wrote"
    manifest["cases_done"] = counts.records
    manifest["failures"] = counts.failures


def load_run(path: Path | str, records: bool = True) -> Run:
    """Read a run folder. A truncated last record (a run killed mid-write) is skipped; a
    damaged record anywhere else, or a damaged ``run.json`` or ``env.json``, a symbolic link
    or a special file in the folder is a RunFolderError naming the file. The records are the
    truth about what ran (``settle``); a run whose process is gone reads as ``killed``
    (``effective_status``). ``records`` False: the folder without its records (``records``
    empty, ``counts`` zero, the manifest as written), for a reader that streams them itself
    (``record_lines``) and settles the run after."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if _mode(manifest_path) is None:
        raise FileNotFoundError(f"{path} is not a convbench run folder: it has no {MANIFEST}")
    _check_entries(path)
    manifest = check_manifest(decode_json_object(_read_text(manifest_path), manifest_path), manifest_path)
    manifest["status"] = effective_status(manifest)
    env_path, suite_path = path / ENV, path / SUITE
    run = Run(
        path=path,
        manifest=manifest,
        env=check_env(decode_json_object(_read_text(env_path), env_path), env_path) if _mode(env_path) else {},
        suite_toml=_read_text(suite_path) if _mode(suite_path) is not None else "",
        records=[],
    )
    if records:
        run.records = list(read_records(path, run.counts))
        settle(run)
    return run


def last_run_died(root: Path | str, suite: str, case_ids: Sequence[str]) -> str | None:
    """A warning when the latest run of ``suite`` in the results ``root`` (by start time) is
    ``killed``: its process died without closing it, which a case that crashes the process
    (a segfault in a library, ``os._exit``, the out-of-memory killer) does. It names the run
    and the case it was on: the first of ``case_ids`` (this run's cases, in order) it has no
    record of. None when there is nothing to say (or nothing readable to say it from)."""
    latest: tuple[str, Path] | None = None
    root = Path(root)
    if not root.is_dir():
        return None
    for folder in root.iterdir():
        try:
            manifest = decode_json_object(_read_text(folder / MANIFEST), folder / MANIFEST)
        except (OSError, RunFolderError):
            continue  # not a run folder, or not one this can read: nothing to warn about
        started = manifest.get("started")
        if manifest.get("suite") == suite and isinstance(started, str) and (latest is None or started > latest[0]):
            latest = (started, folder)
    if latest is None:
        return None
    try:
        run = load_run(latest[1])
    except (OSError, RunFolderError):
        return None
    if run.manifest["status"] != "killed":
        return None
    recorded = {record["case_id"] for record in run.records}
    in_flight = next((case for case in case_ids if case not in recorded), None)
    where = f" while measuring {in_flight}" if in_flight and recorded <= set(case_ids) else ""
    return (
        f"the last run of suite {suite!r} here, {run.run_id}, died{where} after {len(recorded)} of "
        f"{run.manifest.get('cases_total')} cases: its process ended without closing the run (a crash, SIGKILL, "
        "the out-of-memory killer). If a case crashes the process, --isolate runs each case in a process of its "
        "own, so the crash costs only that case"
    )

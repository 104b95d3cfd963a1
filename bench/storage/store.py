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
import os
import re
import secrets
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import psutil

from bench.measure.load import load_average
from bench.record import Record, utc_now

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


def write_atomic(path: Path, content: str | bytes) -> None:
    """Write ``content`` to ``path`` through a temporary file and a rename: readers see the old
    file or the new one, never half of one. The file gets the umask's permissions (a temporary
    file alone would be 0600, unreadable to the team the run folder is shared with). Raises
    IsADirectoryError naming ``path`` where it is a folder."""
    if path.is_dir():  # checked first: the rename would fail naming the temporary file
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), _file_mode())
            handle.write(content.encode("utf-8") if isinstance(content, str) else content)
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


def write_json(path: Path, data: object) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


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
        write_json(self.path / ENV, env)
        write_atomic(self.path / SUITE, suite_toml)
        (self.path / RECORDS).touch()
        write_json(self.path / MANIFEST, self.manifest)

    def append(self, record: Record) -> None:
        """Add one finished case; it is on disk when this returns. A write that fails (a full
        disk) leaves no partial line behind and raises the OSError."""
        data = (json.dumps(record.to_dict()) + "\n").encode("utf-8")
        descriptor = os.open(self.path / RECORDS, os.O_WRONLY | os.O_APPEND)
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
        self.manifest["steps_s"] += getattr(record, "steps_s", None) or 0.0
        write_json(self.path / MANIFEST, self.manifest)

    def section_done(self, name: str, outcome: str) -> None:
        """Record how section ``name`` (e.g. ``rf``) ended: ``ok`` or ``error``."""
        self.manifest["sections"][name] = outcome
        write_json(self.path / MANIFEST, self.manifest)

    def finish(self, stopped_by: str | None = None) -> str:
        """Close the run: ``complete`` if every case has a record and every section ran, else
        ``incomplete``; ``stopped_by`` names what ended it early (SIGINT, SIGTERM, an error)."""
        done = self.manifest["cases_done"] == self.manifest["cases_total"]
        done = done and "not run" not in self.manifest["sections"].values()
        self.manifest["status"] = "complete" if done else "incomplete"
        self.manifest["stopped_by"] = stopped_by
        self.manifest["finished"] = utc_now()
        self.manifest["wall_s"] = time.monotonic() - self.started
        write_json(self.path / MANIFEST, self.manifest)
        return self.manifest["status"]


@dataclass
class Run:
    """A run folder read back: its manifest, environment, suite text and records."""

    path: Path
    manifest: dict
    env: dict
    suite_toml: str
    records: list[dict]

    @property
    def run_id(self) -> str:
        return self.manifest["run_id"]

    def frame(self) -> pd.DataFrame:
        """The records as a DataFrame, one row per case, columns in Record order."""
        return pd.DataFrame(self.records)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise RunFolderError(f"{path}: damaged (not UTF-8: {error})") from None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunFolderError(f"{path}: damaged ({error})") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{path}: damaged (expected a JSON object)")
    return data


#: run.json's fields that readers rely on, and the JSON types each may hold.
MANIFEST_TYPES: dict[str, tuple[type, ...]] = {
    "run_id": (str,),
    "suite": (str, type(None)),
    "machine": (str, type(None)),
    "status": (str,),
    "started": (str, type(None)),
    "finished": (str, type(None)),
    "cases_total": (int, type(None)),
    "sections": (dict,),
    "stopped_by": (str, type(None)),
    "hostname": (str, type(None)),
    "pid": (int, type(None)),
    "process_started": (int, float, type(None)),
    "steps_s": (int, float, type(None)),
    "wall_s": (int, float, type(None)),
}


def _json_types(annotation: object) -> tuple[type, ...]:
    """The JSON value types a Record field annotated ``annotation`` may hold. Deliberately
    loose where a reader cannot go wrong: any number where a number is expected, 0/1 for a
    bool, null anywhere (a figure that does not apply); never a string for a number, a
    number for a string, or a scalar for a list or an object."""
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
    import typing

    return {name: _json_types(annotation) for name, annotation in typing.get_type_hints(Record).items()}


def _type_error(value: object, allowed: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in allowed:
        return True  # JSON true is not a number
    return not isinstance(value, allowed)


def _expected(allowed: tuple[type, ...]) -> str:
    names = [t.__name__ for t in allowed if t is not type(None)]
    return " or ".join(names) + " or null"


def _check_record(data: object, where: str, types: dict[str, tuple[type, ...]]) -> dict:
    """``data`` if it is a record as ``Record`` writes it (an object whose known fields have
    their types; ``case_id`` and ``status`` present), else RunFolderError naming ``where``."""
    if not isinstance(data, dict):
        raise RunFolderError(f"{where}: damaged record (expected a JSON object, got {type(data).__name__})")
    for name in ("case_id", "status"):
        if not isinstance(data.get(name), str):
            raise RunFolderError(f"{where}: damaged record ({name} is missing or not a string)")
    for name, value in data.items():
        allowed = types.get(name)
        if allowed is not None and _type_error(value, allowed):
            raise RunFolderError(f"{where}: damaged record ({name} is {value!r}, expected {_expected(allowed)})")
    return data


def _check_manifest(manifest: dict, where: Path) -> dict:
    """``manifest`` if its fields have the types run.json holds and its run id names one
    folder, else RunFolderError naming ``where``. Ids that ``check_run_id`` refuses today but
    older versions wrote (``pr#12``, a timestamp with ``:``) stay readable; only an id that is
    a path (``../x``, ``a/b``), empty, or holds a control character is refused."""
    for name, allowed in MANIFEST_TYPES.items():
        if name == "run_id" and name not in manifest:
            raise RunFolderError(f"{where}: damaged (no run_id)")
        if name in manifest and _type_error(manifest[name], allowed):
            raise RunFolderError(f"{where}: damaged ({name} is {manifest[name]!r})")
    run_id = manifest["run_id"]
    if run_id in ("", ".", "..") or "/" in run_id or "\\" in run_id or not run_id.isprintable():
        raise RunFolderError(f"{where}: damaged (run id {run_id[:40]!r} is not one folder name)")
    return manifest


def load_run(path: Path | str) -> Run:
    """Read a run folder. A truncated last record (a run killed mid-write) is skipped; a
    damaged record anywhere else, or a damaged ``run.json`` or ``env.json``, is a
    RunFolderError naming the file. The records are the truth about what ran: the manifest's
    case and failure counts are taken from them, a run whose process is gone reads as
    ``killed`` (``effective_status``), and a complete run that has lost records since it
    finished reads as ``incomplete``, ``stopped_by`` saying how many are left."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{path} is not a convbench run folder: it has no {MANIFEST}")
    records = []
    records_path = path / RECORDS
    if records_path.exists():
        lines = records_path.read_text(encoding="utf-8", errors="replace").splitlines()
        types = _record_types()
        for number, line in enumerate(lines, start=1):
            try:
                data = json.loads(line)
            except json.JSONDecodeError as error:
                if number < len(lines):
                    raise RunFolderError(f"{records_path}:{number}: damaged record ({error})") from None
                continue
            records.append(_check_record(data, f"{records_path}:{number}", types))
    manifest = _check_manifest(_read_json(manifest_path), manifest_path)
    manifest["status"] = effective_status(manifest)
    total = manifest.get("cases_total")
    if manifest["status"] == "complete" and isinstance(total, int) and len(records) < total:
        # Records lost after the run finished (a truncated or deleted line): not the whole run.
        manifest["status"] = "incomplete"
        manifest["stopped_by"] = f"{records_path} holds {len(records)} of the {total} records the run wrote"
    manifest["cases_done"] = len(records)
    manifest["failures"] = sum(r.get("status") != "ok" for r in records)
    env_path, suite_path = path / ENV, path / SUITE
    return Run(
        path=path,
        manifest=manifest,
        env=_read_json(env_path) if env_path.exists() else {},
        suite_toml=_read_text(suite_path) if suite_path.exists() else "",
        records=records,
    )

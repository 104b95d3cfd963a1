"""A run's folder on disk: records appended and flushed per case, whole files written atomically.

    results/<run-id>/
        run.json        the manifest: id, suite, status, case counts, start and end times
        env.json        the machine and software (``convbench env``)
        suite.toml      the suite as resolved (defaults and command-line overrides applied)
        records.jsonl   one Record per line, appended as each case finishes

A run's ``status`` is ``running`` while it goes, then ``complete`` when every case has a
record, ``incomplete`` when it stopped early (Ctrl-C, SIGTERM, a crash), so nothing a user
measured is lost to a later failure and nothing missing goes unnoticed.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from bench.record import Record

MANIFEST = "run.json"
ENV = "env.json"
SUITE = "suite.toml"
RECORDS = "records.jsonl"


def utc_now() -> str:
    """The current time as ISO 8601 in UTC, to the second."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def new_run_id() -> str:
    """A sortable, unique run id: UTC time plus a random suffix, e.g. ``20261127T043012Z-5f3a``."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: readers see the old
    file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: object) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


class RunWriter:
    """Creates a run folder and keeps it consistent while cases finish one by one."""

    def __init__(self, root: Path, run_id: str, suite_name: str, suite_toml: str, env: dict, cases_total: int) -> None:
        self.path = Path(root) / run_id
        if self.path.exists() and any(self.path.iterdir()):
            raise FileExistsError(f"run folder {self.path} already exists; choose another --run-id")
        self.path.mkdir(parents=True, exist_ok=True)
        self.manifest = {
            "run_id": run_id,
            "suite": suite_name,
            "status": "running",
            "started": utc_now(),
            "finished": None,
            "cases_total": cases_total,
            "cases_done": 0,
            "failures": 0,
        }
        write_json(self.path / ENV, env)
        write_atomic(self.path / SUITE, suite_toml)
        (self.path / RECORDS).touch()
        write_json(self.path / MANIFEST, self.manifest)

    def append(self, record: Record) -> None:
        """Add one finished case; it is on disk when this returns."""
        with open(self.path / RECORDS, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record.to_dict()) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.manifest["cases_done"] += 1
        self.manifest["failures"] += record.status != "ok"
        write_json(self.path / MANIFEST, self.manifest)

    def finish(self) -> str:
        """Close the run: ``complete`` if every case has a record, else ``incomplete``."""
        done = self.manifest["cases_done"] == self.manifest["cases_total"]
        self.manifest["status"] = "complete" if done else "incomplete"
        self.manifest["finished"] = utc_now()
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


def load_run(path: Path | str) -> Run:
    """Read a run folder. A truncated last record (a run killed mid-write) is skipped; a
    damaged record anywhere else is an error naming the line."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{path} is not a convbench run folder: it has no {MANIFEST}")
    records = []
    records_path = path / RECORDS
    if records_path.exists():
        lines = records_path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                if number < len(lines):
                    raise ValueError(f"{records_path}:{number}: damaged record ({error})") from None
    env_path, suite_path = path / ENV, path / SUITE
    return Run(
        path=path,
        manifest=json.loads(manifest_path.read_text(encoding="utf-8")),
        env=json.loads(env_path.read_text(encoding="utf-8")) if env_path.exists() else {},
        suite_toml=suite_path.read_text(encoding="utf-8") if suite_path.exists() else "",
        records=records,
    )

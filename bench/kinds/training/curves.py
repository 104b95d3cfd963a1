"""Learning curves of a training-to-accuracy run.

Its run folder is a benchmark run's (``bench.storage.store``: run.json, env.json, suite.toml,
records.jsonl with one Record per (model, recipe, seed)) plus ``curves.jsonl``, one line per
evaluation of every training run, appended and flushed as each run finishes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

CURVES = "curves.jsonl"


def append_curve(run_dir: Path, rows: list[dict]) -> None:
    """Add one training run's curve to ``curves.jsonl``; it is on disk when this returns
    (never written through a symbolic link: ``bench.storage.store.open_for_append``)."""
    from bench.storage.store import open_for_append

    with os.fdopen(open_for_append(run_dir / CURVES), "a", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
        handle.flush()
        os.fsync(handle.fileno())

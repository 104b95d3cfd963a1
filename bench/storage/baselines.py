"""Which earlier runs can be a run's baseline: those that measured the same thing.

A nightly job compares tonight's run with the runs before it of the same suite on the same
machine. A run with the suite's name but other settings (an ad-hoc ``--steps 10`` or
``--models mlp`` between two nights) measured something else: as a baseline it would make the
comparison refuse ("steps differs") or judge other cases. So a baseline must have the same
*suite content*: the run's resolved ``suite.toml`` (what ``run`` wrote after its flags: the
grid, hence the cases, and the protocol: steps, warm-up, repeats, precision, threads, device,
dataset, ...) without what only names or files it:

- ``[suite] name``, ``description`` and ``tags`` (the name is matched apart; tags label runs,
  they change nothing measured);
- the ``[rf]`` section: receptive fields are not among the cases compared.

Tags (``convbench run --tag nightly``, ``[suite] tags``) are kept in run.json; ``compare`` and
``trend`` given ``--baseline-tag TAG`` take only runs carrying TAG as baselines, so ad-hoc runs
can be kept out of them altogether.
"""

from __future__ import annotations

import hashlib
import json
import tomllib

#: [suite] keys that name or label a run without changing what it measured.
LABEL_KEYS = ("name", "description", "tags")
#: Top-level sections that measure nothing the verdicts compare.
UNCOMPARED_SECTIONS = ("rf",)


def _measured(suite_toml: str) -> dict | str:
    """The suite document less its labels; the text itself where it is not TOML (a run
    folder written by hand), which then matches only the same text."""
    try:
        document = tomllib.loads(suite_toml)
    except tomllib.TOMLDecodeError:
        return suite_toml
    settings = {k: v for k, v in document.get("suite", {}).items() if k not in LABEL_KEYS}
    rest = {k: v for k, v in document.items() if k not in ("suite", *UNCOMPARED_SECTIONS)}
    return {"suite": settings, **rest}


def suite_content(suite_toml: str) -> str:
    """A 12-hex-digit key of what a run measured (its suite content, see the module's
    docstring): two runs measured the same thing if and only if their keys are equal
    (SHA-256 of the document as canonical JSON)."""
    canonical = json.dumps(_measured(suite_toml), sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def content_difference(baseline_toml: str, candidate_toml: str) -> str:
    """What differs between two runs' suite contents, shortly, e.g. ``steps 10, not 5`` or
    ``the grid (cases)``; empty where they measured the same thing. ``baseline_toml`` is the
    skipped run's, ``candidate_toml`` the run it would have been the baseline of."""
    skipped, wanted = _measured(baseline_toml), _measured(candidate_toml)
    if skipped == wanted:
        return ""
    if isinstance(skipped, str) or isinstance(wanted, str):
        return "its suite.toml"
    parts = []
    ours, theirs = skipped["suite"], wanted["suite"]
    for key in sorted(ours.keys() | theirs.keys()):
        if ours.get(key) != theirs.get(key):
            parts.append(f"{key} {_shown(ours.get(key))}, not {_shown(theirs.get(key))}")
    for key in sorted((skipped.keys() | wanted.keys()) - {"suite"}):
        if skipped.get(key) != wanted.get(key):
            parts.append("the grid (cases)" if key == "grid" else f"[{key}]")
    return "; ".join(parts)


def _shown(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def run_tags(manifest: dict) -> tuple[str, ...]:
    """The tags a run's manifest (run.json) carries; none for runs from before tags."""
    tags = manifest.get("tags")
    return tuple(str(tag) for tag in tags) if isinstance(tags, list) else ()

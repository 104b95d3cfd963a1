"""What ``compare`` and ``trend`` say about the baselines they chose: the runs they passed
over (another suite content, not the asked-for tag; ``bench.storage.baselines``) and how many
baseline runs they used against how many were asked for. A nightly job's log must show when
an ad-hoc run was left out, and when ``--baseline-runs 5`` could only find three."""

from __future__ import annotations

from collections.abc import Sequence


def skipped_note(skipped: Sequence[tuple[str, str]]) -> str | None:
    """``skipped N earlier runs as baselines: RUN (why), ...``; None where none was."""
    if not skipped:
        return None
    runs = ", ".join(f"{run_id} ({reason})" for run_id, reason in skipped)
    return f"skipped {len(skipped)} earlier run{'s' if len(skipped) != 1 else ''} as baselines: {runs}"


def used_note(used: int, asked: int, tag: str | None = None) -> str | None:
    """``baseline runs: U of the N asked for ...`` where fewer runs than asked for could be
    used; None where all were (the heading line names them)."""
    if used >= asked:
        return None
    which = "complete runs of the same suite on the same machine that measured the same thing"
    which += f" and are tagged {tag}" if tag else ""
    return f"baseline runs: {used} of the {asked} asked for (the history holds no more {which})"


def baseline_notes(skipped: Sequence[tuple[str, str]], used: int, asked: int, tag: str | None = None) -> list[str]:
    """The notes ``compare`` prints about its baselines (``skipped_note``, ``used_note``)."""
    return [note for note in (skipped_note(skipped), used_note(used, asked, tag)) if note]

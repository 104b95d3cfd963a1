"""Judging runs: per-case verdicts between two runs or a window of runs (``compare``) on the
statistics of their samples (``stats``)."""

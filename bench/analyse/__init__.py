"""Judging runs: per-case verdicts between two runs or a window of runs (``compare``) on the
statistics of their samples (``stats``), and what differs between two runs' GPU set-ups
(``fairness``: what ``compare`` notes or refuses, what ``run`` warns about before it starts)."""

"""What a run leaves behind: the run folder (``store``), the SQLite history of runs
(``history``) and exports of both for other benchmark dashboards (``export``)."""

"""What a person reads: tables (``tables``), figures (``figures``, ``memory_figures``), the
run report (``report``), command output formats (``output``) and the progress line
(``progress``)."""

"""convbench's harness: suites, runner, timing, memory, environment, receptive fields,
storage and history, comparison and reports, behind the ``convbench`` command."""

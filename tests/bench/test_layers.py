"""The code's layers as the README draws them: no import cycles anywhere, imports inside
functions counted (grimp reads every import statement, as import-linter does), and the
import-linter contracts of pyproject.toml kept."""

from __future__ import annotations

import graphlib
import os
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bench", "models", "optimizers")
#: ``lint-imports`` (import-linter), reading the contracts from pyproject.toml.
LINT_IMPORTS = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"


def import_graph() -> dict[str, set[str]]:
    """Every module of the packages -> the modules of the packages it imports."""
    graph = grimp.build_graph(*PACKAGES)
    return {module: graph.find_modules_directly_imported_by(module) for module in graph.modules}


def test_no_module_takes_part_in_an_import_cycle():
    try:
        graphlib.TopologicalSorter(import_graph()).prepare()
    except graphlib.CycleError as error:
        raise AssertionError(f"import cycle: {' -> '.join(error.args[1])}") from None


def test_the_cycle_check_finds_a_cycle():
    """The check above can fail: a graph with a cycle through an import inside a function."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as error:
        assert set(error.args[1]) == {"a", "b", "c"}
    else:
        raise AssertionError("no cycle found")


def test_the_layer_contracts_hold():
    done = subprocess.run(
        [sys.executable, "-c", LINT_IMPORTS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stdout + done.stderr

"""Build hook: the package records the commit it was built from.

A non-editable install copies the code away from its checkout, so asking git at run time
would describe whatever the checkout holds then, not the code that runs. Building writes
``bench/_build.json`` (commit and whether tracked files differed from it) into the built
package instead, and into an sdist, so that a wheel built from the sdist keeps it.
Everything else about the package is in pyproject.toml.
"""

import json
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
BUILD_INFO = Path("bench") / "_build.json"


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def build_info() -> dict:
    """The commit of the checkout being built, or what an sdist being built recorded."""
    if _git("rev-parse", "--show-toplevel") == str(HERE):
        dirty = _git("status", "--porcelain", "--untracked-files=no")
        return {"git_commit": _git("rev-parse", "HEAD"), "git_dirty": bool(dirty)}
    recorded = HERE / BUILD_INFO
    return json.loads(recorded.read_text()) if recorded.exists() else {"git_commit": None, "git_dirty": None}


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / BUILD_INFO
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(build_info()) + "\n")


class Sdist(sdist):
    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        (Path(base_dir) / BUILD_INFO).write_text(json.dumps(build_info()) + "\n")


setup(cmdclass={"build_py": BuildPy, "sdist": Sdist})

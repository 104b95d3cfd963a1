"""Writing the site: its assets, and publishing a new version of it at once.

``--output DIR`` is a symbolic link to the version being served, a folder beside it named
``.DIR-<time>-<random>``. A new version is written whole into a new such folder, then the
link is swapped for one to it with a single ``rename`` (atomic on POSIX): a reader, a browser
or a web server following the link, sees the old site or the new one, never a mix and never
a half-written file. The version before stays until the next update (a reader in the middle
of loading it keeps finding its files); older ones are removed. Two updates at once queue on
a lock file beside the link, so neither removes the folder the other is writing.

Relative links inside the site (to its assets and data, and up to each run's report) are
resolved by the browser against DIR's own path, which the link keeps, so they work the same
through the link, from a copy of the folder, or from a web server.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

#: The file that marks a folder as a version of a dashboard (so nothing else is ever removed).
MARKER = ".convbench-dashboard"
PLOTLY_INSTALL = "pip install 'convbench[dashboard]' (or pip install plotly)"


class DashboardError(ValueError):
    """A dashboard that cannot be written as asked: plotly missing, or an ``--output`` that
    is something other than a dashboard this command wrote."""


def plotly_js() -> Path:
    """The plotly.js bundle that the ``plotly`` package ships (``package_data/plotly.min.js``):
    the site carries its own copy, so its pages need no network. Raises DashboardError
    saying what to install where the package is missing."""
    try:
        import plotly
    except ImportError:
        raise DashboardError(f"the dashboard draws with plotly.js, which is not installed: {PLOTLY_INSTALL}") from None
    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise DashboardError(f"plotly {plotly.__version__} has no package_data/plotly.min.js: {PLOTLY_INSTALL}")
    return path


def copy_assets(site: Path, plotly: Path) -> None:
    """The site's stylesheet, script and plotly.js into ``site/assets``."""
    assets = site / "assets"
    assets.mkdir()
    for name in ("dashboard.css", "dashboard.js"):
        (assets / name).write_bytes(resources.files("bench.dashboard").joinpath("assets", name).read_bytes())
    shutil.copyfile(plotly, assets / "plotly.min.js")


def check_output(output: Path) -> None:
    """DashboardError unless ``output`` is free or a link to a version of a dashboard."""
    if output.is_symlink():
        target = output.parent / os.readlink(output)
        if _is_version(target, output) or (_named_as_version(target, output) and not target.exists()):
            return  # ours (or ours once: a version removed by hand leaves the link dangling)
    elif not output.exists():
        return
    raise DashboardError(
        f"--output {output} exists and is not a dashboard written by convbench dashboard (which makes it a link "
        "to the current version); choose another --output, or remove it"
    )


def _named_as_version(folder: Path, output: Path) -> bool:
    return folder.parent == output.parent and folder.name.startswith(f".{output.name}-")


def _is_version(folder: Path, output: Path) -> bool:
    return _named_as_version(folder, output) and (folder / MARKER).exists()


def publish(output: Path, write: Callable[[Path], None]) -> Path:
    """Write a new version of the site with ``write(folder)`` and make ``output`` point to it
    atomically; returns the version's folder. Raises DashboardError (``check_output``)."""
    output = Path(os.path.abspath(output))
    check_output(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with _locked(output):
        check_output(output)  # again, under the lock: another update may have made it since
        previous = output.parent / os.readlink(output) if output.is_symlink() else None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        version = output.parent / f".{output.name}-{stamp}-{secrets.token_hex(3)}"
        version.mkdir()
        try:
            (version / MARKER).touch()
            write(version)
            link = output.parent / f".{output.name}.link-{secrets.token_hex(3)}"
            link.symlink_to(version.name)  # relative: the site moves with its folder
            os.replace(link, output)
        except BaseException:
            shutil.rmtree(version, ignore_errors=True)
            raise
        for old in _versions(output):
            if old not in (version, previous):
                shutil.rmtree(old, ignore_errors=True)
    return version


def _versions(output: Path) -> Iterator[Path]:
    for folder in output.parent.glob(f".{output.name}-*"):
        if folder.is_dir() and not folder.is_symlink() and _is_version(folder, output):
            yield folder


@contextmanager
def _locked(output: Path) -> Iterator[None]:
    with open(output.parent / f".{output.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

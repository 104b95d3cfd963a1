"""The commit that ran: recorded when the package is built, not read from a checkout at run time."""

import json
import subprocess
import sys
import zipfile

import pytest

from bench.measure import env


def _head() -> str | None:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=env.SOURCE_DIR, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def test_an_installed_package_reports_the_commit_it_was_built_from(tmp_path):
    build_info = tmp_path / "_build.json"
    build_info.write_text(json.dumps({"git_commit": "feedface" * 5, "git_dirty": False}))
    # Installed: the build's commit, whatever checkout surrounds the package.
    assert env.code_state(build_info, env.SOURCE_DIR) == {
        "code_source": "installed",
        "git_commit": "feedface" * 5,
        "git_dirty": False,
    }


def test_only_a_checkout_s_own_top_level_counts_as_the_code(tmp_path):
    # bench/ inside a checkout (as site-packages inside a .venv inside a checkout) is not one.
    assert env.git_state(env.SOURCE_DIR / "bench") == (None, None)
    state = env.code_state(tmp_path / "absent.json", env.SOURCE_DIR)
    assert state["git_commit"] == _head() and state["code_source"] == ("checkout" if _head() else None)


def test_a_copy_without_its_git_takes_the_commit_declared_in_the_environment(tmp_path, monkeypatch):
    """The GPU machines run a copy of the code without .git: its commit comes from
    $CONVBENCH_GIT_COMMIT, said to be declared; a checkout's own commit wins over it."""
    copy = tmp_path / "copy"
    copy.mkdir()
    monkeypatch.delenv(env.COMMIT_VARIABLE, raising=False)
    assert env.code_state(tmp_path / "absent.json", copy)["git_commit"] is None
    monkeypatch.setenv(env.COMMIT_VARIABLE, "8eb1791")
    assert env.code_state(tmp_path / "absent.json", copy) == {
        "code_source": "declared",
        "git_commit": "8eb1791",
        "git_dirty": None,
    }
    if _head() is not None:
        assert env.code_state(tmp_path / "absent.json", env.SOURCE_DIR)["git_commit"] == _head()
    monkeypatch.setenv(env.COMMIT_VARIABLE, "not a commit")
    with pytest.raises(env.CommitVariableError, match="CONVBENCH_GIT_COMMIT='not a commit' is not a commit"):
        env.code_state(tmp_path / "absent.json", copy)


@pytest.mark.slow
@pytest.mark.skipif(_head() is None, reason="the source is not a git checkout, so a build has no commit to record")
def test_a_built_wheel_carries_the_checkout_s_commit(tmp_path):
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path, "."]
    subprocess.run([str(c) for c in command], cwd=env.SOURCE_DIR, check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("convbench-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        recorded = json.loads(archive.read("bench/_build.json"))
    assert recorded["git_commit"] == _head()

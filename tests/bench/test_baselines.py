"""What makes an earlier run a baseline: the same suite content, whatever its name and tags."""

import pytest

from bench.kinds.step.suite import load_suite
from bench.storage.baselines import content_difference, run_tags, suite_content

SUITE = {
    "suite": {"name": "smoke", "device": "cpu", "steps": 10, "warmup": 3, "repeats": 3},
    "grid": [{"models": ["cnn"], "optimizers": ["adam", "sgdm"], "batch_sizes": [16]}],
}


def written(**settings) -> str:
    """The suite.toml a run of SUITE with ``settings`` in [suite] writes (as ``run`` does)."""
    document = {**SUITE, "suite": {**SUITE["suite"], **settings}}
    return load_suite(document).to_toml()


def test_labels_do_not_change_what_was_measured():
    nightly = written()
    assert suite_content(written(name="renamed", description="x", tags=["nightly", "gpu"])) == suite_content(nightly)
    with_rf = nightly + '\n[rf]\nmodels = ["cnn"]\n'
    assert suite_content(with_rf) == suite_content(nightly)


@pytest.mark.parametrize(
    ("change", "said"),
    [({"steps": 5}, "steps 5, not 10"), ({"threads": 2}, "threads 2, not unset"), ({"repeats": 7}, "repeats 7, not 3")],
)
def test_the_protocol_changes_what_was_measured(change, said):
    nightly, other = written(), written(**change)
    assert suite_content(other) != suite_content(nightly)
    assert content_difference(other, nightly) == said


def test_other_cases_change_what_was_measured():
    other = {**SUITE, "grid": [{**SUITE["grid"][0], "models": ["mlp"]}]}
    assert content_difference(load_suite(other).to_toml(), written()) == "the grid (cases)"
    assert content_difference("not [toml", written()) == "its suite.toml"
    assert content_difference(written(), written(tags=["x"])) == ""


def test_tags_of_runs_from_before_tags_are_none():
    assert run_tags({"run_id": "x"}) == () and run_tags({"tags": ["nightly"]}) == ("nightly",)

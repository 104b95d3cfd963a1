"""The ``[rf]`` suite section: validation before work starts, and the files of a run folder."""

import ast

import numpy as np
import pandas as pd
import pytest

from bench.receptive import COLUMNS
from bench.receptive.section import RfSection, rf_section_from_toml, run_rf_section

# Effective fields use torch's thread setting: pin one thread (conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


def test_defaults_pick_the_last_local_convolution():
    section = rf_section_from_toml({"models": ["cnn", "resnet20"]})
    assert section == RfSection(
        models=("cnn", "resnet20"),
        input_size=None,
        heatmap_layers={"cnn": ("6",), "resnet20": ("layer3.2.conv2",)},  # cnn's "9" is global
        erf_samples=8,
    )


@pytest.mark.parametrize(
    "table,key",
    [
        ({}, "rf.models"),
        ({"models": []}, "rf.models"),
        ({"models": "cnn"}, "rf.models"),
        ({"models": ["resnet19"]}, "rf.models"),
        ({"models": ["mlp"]}, "rf.models"),
        ({"models": ["mlp"], "input_size": 28}, "rf.models"),
        ({"models": ["cnn"], "input_size": 0}, "rf.input_size"),
        ({"models": ["cnn"], "input_size": "32"}, "rf.input_size"),
        ({"models": ["vgg16"], "input_size": 16}, "rf.input_size"),
        ({"models": ["cnn"], "erf_samples": -1}, "rf.erf_samples"),
        ({"models": ["cnn"], "erf_samples": True}, "rf.erf_samples"),
        ({"models": ["cnn"], "heatmap_layers": ["6"]}, "rf.heatmap_layers"),
        ({"models": ["cnn"], "heatmap_layers": {"resnet20": ["conv1"]}}, "rf.heatmap_layers.resnet20"),
        ({"models": ["cnn"], "heatmap_layers": {"cnn": ["7"]}}, "rf.heatmap_layers.cnn"),
        ({"models": ["cnn"], "heatmap_layers": {"cnn": []}}, "rf.heatmap_layers.cnn"),
        ({"models": ["cnn"], "figures": True}, "rf.figures"),
    ],
)
def test_bad_sections_name_the_key(table, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        rf_section_from_toml(table)


def test_run_writes_rf_csv_and_the_heat_maps(tmp_path):
    section = rf_section_from_toml(
        {"models": ["cnn", "resnet20"], "erf_samples": 2, "heatmap_layers": {"resnet20": ["layer2.2.conv2", "fc"]}}
    )
    table = run_rf_section(section, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rf.csv", "rf_maps.npz"]
    written = pd.read_csv(tmp_path / "rf.csv")
    assert list(written.columns) == ["model", "input_size", *COLUMNS]
    assert len(written) == len(table) == 6 + 23
    row = written[(written.model == "resnet20") & (written.layer == "layer2.2.conv2")].iloc[0]
    assert ast.literal_eval(row.rf) == [37, 37] and ast.literal_eval(row.input_size) == [32, 32]
    assert bool(row.match)

    maps = np.load(tmp_path / "rf_maps.npz")
    assert sorted(maps.files) == sorted(
        f"{model}/{layer}/{array}"
        for model, layer in [("cnn", "6"), ("resnet20", "layer2.2.conv2"), ("resnet20", "fc")]
        for array in ("mask", "field", "erf", "erf_field")
    )
    # resnet20's layer2.2.conv2 has field 37, jump 2, start -18 (3x3 convs: stem, six at
    # jump 1, one strided, five at jump 2 / 2 + ... see test_receptive_analytic).
    mask, box = maps["resnet20/layer2.2.conv2/mask"], maps["resnet20/layer2.2.conv2/field"]
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    assert [[rows[0], rows[-1]], [cols[0], cols[-1]]] == box.tolist()
    assert box[0, 1] - box[0, 0] + 1 == 37
    # The erf is at the 32x32 input: the 16x16 map's centre unit 7 covers [7*2 - 18, 7*2 + 18].
    assert maps["resnet20/layer2.2.conv2/erf"].shape == (32, 32)
    assert maps["resnet20/layer2.2.conv2/erf_field"].tolist() == [[-4, 32], [-4, 32]]
    assert maps["resnet20/fc/mask"].all() and maps["resnet20/fc/field"].tolist() == [[0, 31], [0, 31]]
    assert maps["cnn/6/mask"].dtype == bool and maps["cnn/6/erf"].dtype == np.float64


def test_without_erf_samples_there_are_no_erf_maps(tmp_path):
    section = rf_section_from_toml({"models": ["cnn"], "erf_samples": 0, "input_size": 40})
    table = run_rf_section(section, tmp_path)
    assert sorted(np.load(tmp_path / "rf_maps.npz").files) == ["cnn/6/field", "cnn/6/mask"]
    assert table.erf95.isna().all() and (table.input_size.map(tuple) == (40, 40)).all()


def test_a_run_of_only_the_cnn_fields_gets_its_report(tmp_path, capsys):
    # cnn's layers are named "0", "2", ...: read back from rf.csv, they are names, not numbers.
    from bench.cli import main

    suite = tmp_path / "rf-only.toml"
    suite.write_text('[suite]\nname = "rf-only"\ndevice = "cpu"\n\n[rf]\nmodels = ["cnn"]\nerf_samples = 0\n')
    assert main(["run", "--suite", str(suite), "--results", str(tmp_path), "--run-id", "r"]) == 0, capsys.readouterr()
    page = (tmp_path / "r" / "report.html").read_text()
    assert "Traceback" not in capsys.readouterr().err
    assert (tmp_path / "r" / "figures" / "receptive_field.png").is_file() and "<h2 id=receptive-fields>" in page

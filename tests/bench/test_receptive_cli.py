"""``convbench rf``: the table a user sees, checked against hand-derived fields."""

import csv
import io
import json

import pytest

from bench.cli import main
from bench.receptive import COLUMNS

# Effective fields use torch's thread setting: pin one thread (conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


def rf(capsys, *args):
    code = main(["rf", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_rows_for_the_lab_cnn(capsys):
    code, out, err = rf(capsys, "cnn", "--format", "json", "--erf-samples", "2")
    assert code == 0
    rows = {row["layer"]: row for row in json.loads(out)}
    assert list(rows) == ["0", "2", "4", "6", "8", "9"]
    assert list(rows["6"]) == COLUMNS
    # 5x5 convolutions, strides 1, 2, 1, 2, padding 2: 5, 9, 17, 25 with jumps 1, 2, 2, 4.
    last = rows["6"]
    assert (last["kind"], last["kernel"], last["stride"], last["padding"], last["dilation"]) == (
        "Conv2d",
        [5, 5],
        [2, 2],
        [2, 2],
        [1, 1],
    )
    assert (last["rf"], last["jump"], last["start"]) == ([25, 25], [4, 4], [-12, -12])
    assert (last["rf_empirical"], last["jump_empirical"], last["start_empirical"]) == ([25, 25], [4, 4], [-12, -12])
    assert last["match"] is True and last["clipped"] is False and last["fill"] == 1.0
    assert last["probe_size"] > 28  # at 28x28 the neighbour's field is cut by the border
    assert 1 <= last["erf95"] <= 25 and last["erf_ratio"] == [last["erf95"] / 25] * 2
    assert rows["8"]["rf"] == rows["9"]["rf"] == "global"
    assert rows["8"]["kernel"] == "global" and rows["8"]["rf_empirical"] == [28, 28]
    assert "probing" in err and "effective field" in err


def test_resnet18_last_convolution_through_the_command(capsys):
    code, out, _ = rf(capsys, "resnet18", "--layers", "layer4.1.conv2", "--format", "json", "--erf-samples", "0")
    assert code == 0
    (row,) = json.loads(out)
    assert (row["rf"], row["jump"], row["start"]) == ([435, 435], [32, 32], [-217, -217])
    assert row["rf_empirical"] == [435, 435] and row["match"] is True
    assert row["erf95"] is None


def test_csv_and_table_formats(capsys):
    code, out, _ = rf(capsys, "resnet20", "--layers", "conv1,layer3.2.conv2", "--format", "csv", "--erf-samples", "0")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == COLUMNS
    assert [(r["layer"], r["rf"], r["jump"], r["start"]) for r in rows] == [
        ("conv1", "[3, 3]", "[1, 1]", "[-1, -1]"),
        ("layer3.2.conv2", "[81, 81]", "[4, 4]", "[-40, -40]"),
    ]
    code, out, _ = rf(capsys, "resnet20", "--layers", "conv1", "--erf-samples", "0", "--input-size", "40")
    header, rule, row = out.splitlines()
    assert header.split() == COLUMNS and row.startswith("conv1")


@pytest.mark.parametrize(
    "args,message",
    [
        (["resnet19"], "unknown model 'resnet19'"),
        (["mlp"], "model 'mlp': Sequential has no convolution or pooling layer"),
        (["resnet20", "--layers", "layer9"], "no convolution, pooling or linear layer named 'layer9'"),
        (["vgg16", "--input-size", "20"], "input 20x20 is too small"),
    ],
)
def test_bad_input_exits_2_with_a_message_naming_it(capsys, args, message):
    code, out, err = rf(capsys, *args, "--erf-samples", "0")
    assert code == 2 and out == ""
    assert message in err


def test_nonpositive_input_size_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["rf", "cnn", "--input-size", "0"])
    assert exit_info.value.code == 2
    assert "must be a positive integer" in capsys.readouterr().err


def test_a_model_reference_that_cannot_take_its_input_is_one_line_and_status_2(tmp_path, monkeypatch, capsys):
    (tmp_path / "flat_nets.py").write_text(
        "import torch.nn as nn\n\n\ndef linear():\n    return nn.Linear(10, 10)\n\n\nlinear.input_shape = (3, 8, 8)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["rf", "flat_nets:linear", "--erf-samples", "0"]) == 2
    err = capsys.readouterr().err
    assert "error: model 'flat_nets:linear' fails on input (3, 8, 8): RuntimeError:" in err
    assert "Traceback" not in err

"""Models by reference (``module:function``, ``torchvision:``, ``timm:``, entry points), the run
switches, case ids, and FLOPs against independent counts."""

import json
import sys
from importlib import metadata

import pytest
import torch
import torchvision
from torch import nn

import models
from bench.checks import SuiteError
from bench.cli import main
from bench.kinds.step.suite import load_suite
from bench.measure import flops, peaks
from bench.record import case_id
from bench.storage import history
from bench.storage.store import load_run
from models import references

FUNCTION = "tests.bench.test_model_references:small_net"


def small_net(in_channels: int = 3, num_classes: int = 10, width: int = 4) -> nn.Module:
    """A two-convolution net for 3x32x32 inputs, as a user would write one."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, stride=2, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, num_classes),
    )


small_net.input_shape = (3, 32, 32)

SUITE = f"""
[suite]
name = "refs"
device = "cpu"
steps = 1
warmup = 1
repeats = 1

[[grid]]
models = ["{FUNCTION}", "torchvision:squeezenet1_1", "timm:test_resnet"]
optimizers = ["sgdm"]
batch_sizes = [2]

[models."{FUNCTION}"]
width = 6
"""


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_each_kind_of_reference_runs_and_lands_in_report_and_history(tmp_path, capsys):
    suite = tmp_path / "refs.toml"
    suite.write_text(SUITE)
    results = tmp_path / "results"
    code, out, err = cli(
        capsys, "run", "--suite", str(suite), "--results", str(results), "--run-id", "r", "--input-size", "3,32,32"
    )
    assert code == 0, err
    frame = load_run(results / "r").frame()
    assert list(frame["status"]) == ["ok"] * 3
    assert frame["model"].tolist() == [FUNCTION, "torchvision:squeezenet1_1", "timm:test_resnet"]
    assert frame["model_kwargs"].tolist() == [{"width": 6}, None, None]
    # the width reached the builder: parameters of the width-6 net, counted by hand
    width6 = (3 * 9 + 1) * 6 + (6 * 9 + 1) * 6 + (6 + 1) * 10
    assert frame["params"].iloc[0] == width6
    assert (frame["flops_per_sample"] > 0).all()
    report = (results / "r" / "report.md").read_text()
    recorded = history.records(results / "history.sqlite")
    for model in frame["model"]:
        assert model in report
    assert set(recorded["case_id"]) == set(frame["case_id"])
    assert frame["case_id"].iloc[0] == f"{FUNCTION}[width=6]/sgdm/b2/fp32/cl0/eager/synthetic/3x32x32"

    for model in frame["model"]:
        code, out, err = cli(capsys, "rf", model, "--input-size", "32", "--erf-samples", "0", "--format", "json")
        assert code == 0, err
        layers = json.loads(out)
        assert layers and all(row["rf"] for row in layers)


@pytest.mark.parametrize(
    "reference,message",
    [
        ("nosuch.module:build", "cannot import module 'nosuch.module'"),
        ("tests.bench.test_model_references:missing", "module 'tests.bench.test_model_references' has no attribute"),
        ("torchvision:resnet9000", "not a torchvision classification model"),
        ("timm:resnet9000", "not a timm model"),
        ("a b:c", "expected package.module:function"),
    ],
)
def test_a_bad_reference_fails_before_any_work_naming_it(tmp_path, capsys, reference, message):
    results = tmp_path / "results"
    code, _, err = cli(capsys, "run", "--models", reference, "--device", "cpu", "--results", str(results))
    assert code == 2
    assert f"model {reference!r}: {message}" in err
    assert not results.exists()


def test_timm_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(models.ModelReferenceError, match="timm is not installed"):
        references.resolve("timm:resnet18")


def test_shapes_come_from_torchvision_weights_and_timm_config():
    squeezenet = models.spec("torchvision:squeezenet1_1")
    weights = torchvision.models.SqueezeNet1_1_Weights.IMAGENET1K_V1
    assert squeezenet.input_shape == (3, weights.transforms().crop_size[0], weights.transforms().crop_size[0])
    assert squeezenet.num_classes == len(weights.meta["categories"])
    assert models.spec("torchvision:inception_v3").input_shape == (3, 299, 299)
    import timm

    config = timm.get_pretrained_cfg("test_resnet")
    assert models.spec("timm:test_resnet").input_shape == tuple(config.input_size)
    built = models.build("timm:test_resnet", in_channels=1, num_classes=7)
    assert built(torch.zeros(2, 1, 32, 32)).shape == (2, 7)


def test_a_function_without_input_shape_needs_input_size(tmp_path):
    suite = load_suite("smoke").override(models=["models.lab:cnn"], optimizers=["sgdm"], batch_sizes=[2])
    with pytest.raises(SuiteError, match="does not say its input shape: give --input-size"):
        suite.cases()
    (case,) = suite.override(input_size=[1, 28, 28]).cases()
    assert (case.input_shape, case.num_classes) == ((1, 28, 28), 10)  # classes from the default


def test_unknown_model_kwargs_fail_naming_the_model(tmp_path, capsys):
    code, _, err = cli(capsys, "run", "--models", FUNCTION, "--model-kwargs", "depth=3", "--device", "cpu")
    assert code == 2
    assert f"model {FUNCTION!r} cannot take the keyword arguments {{'depth': 3}}" in err


def test_installed_packages_add_models_through_the_entry_point_group(monkeypatch):
    point = metadata.EntryPoint("their-net", FUNCTION, references.ENTRY_POINT_GROUP)
    real = metadata.entry_points

    def entry_points(**selection):
        return [point] if selection.get("group") == references.ENTRY_POINT_GROUP else real(**selection)

    monkeypatch.setattr(metadata, "entry_points", entry_points)
    assert "their-net" in models.available()
    assert models.spec("their-net").input_shape == (3, 32, 32)
    assert isinstance(models.build("their-net"), nn.Sequential)


def test_case_ids_stay_unambiguous_whatever_a_reference_holds():
    base = dict(
        model="m", optimizer="sgdm", batch_size=2, precision="fp32", channels_last=False, compile=False,
        dataset="synthetic", input_shape=[3, 8, 8],
    )  # fmt: skip
    configs = [
        {**base, "model_kwargs": {"x": "1,y=2"}},
        {**base, "model_kwargs": {"x": "1", "y": 2}},
        {**base, "model_kwargs": {"x": "a/b"}},
        {**base, "model": "m[x=1]"},
        {**base, "model_kwargs": {"x": 1}},
        {**base, "hyperparameter_overrides": {"lr": 0.1}},
        {**base, "compile": True, "compile_mode": "max-autotune"},
        {**base, "compile": True},
    ]
    ids = [case_id(config) for config in configs]
    assert len(set(ids)) == len(ids)
    assert all(len(identifier.split("/")) == 8 for identifier in ids)
    assert case_id(base) == "m/sgdm/b2/fp32/cl0/eager/synthetic/3x8x8"  # plain ids never change


@pytest.mark.slow
def test_hyperparameters_per_grid_make_distinct_cases_and_reach_the_optimizer(tmp_path):
    suite = load_suite("smoke").override(
        models=["cnn"],
        optimizers=["sgdm", "torch-adam"],
        batch_sizes=[2],
        lr=[0.01, 0.5],
        momentum=[0.5],
        weight_decay=[0.1],
    )
    ids = [case.case_id.split("/")[1] for case in suite.cases()]
    # sgdm's default lr is 0.01; torch-adam takes no momentum; both take weight decay
    assert ids == [
        "sgdm[momentum=0.5,weight_decay=0.1]",
        "sgdm[lr=0.5,momentum=0.5,weight_decay=0.1]",
        "torch-adam[lr=0.01,weight_decay=0.1]",
        "torch-adam[lr=0.5,weight_decay=0.1]",
    ]
    from bench.kinds.step import runner

    case = suite.override(steps=1, warmup=1, repeats=1).cases()[3]
    record = runner.run_case(case, runner.RunContext("t", "smoke", torch.device("cpu")))
    assert record.status == "ok", record.error
    assert record.hyperparameters == {"lr": 0.5, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.1}


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--amp", "--precision", "fp32"], "give --amp or --precision, not both"),
        (["--optimizers", "adam", "--momentum", "0.5"], "--momentum: none of the optimizers adam takes"),
        (["--optimizers", "sgdm", "--momentum", "1.5"], "optimizer 'sgdm': momentum must be in (0, 1)"),
        (["--input-size", "3,0,8"], "--input-size[1]: expected a positive integer"),
    ],
)
def test_bad_switches_fail_naming_the_flag(capsys, flags, message):
    code, _, err = cli(capsys, "run", "--models", "cnn", "--device", "cpu", *flags)
    assert code == 2
    assert message in err


def test_switches_override_every_grid(monkeypatch):
    from bench.api.measuring import apply_switches
    from bench.api.options import RunOptions, from_namespace
    from bench.cli import build_parser

    args = build_parser().parse_args(
        ["run", "--channels-last", "--compile-mode", "max-autotune", "--amp", "--model-kwargs", "width=8"]
    )
    options = from_namespace(RunOptions, args)
    suite = apply_switches(load_suite("smoke").override(models=[FUNCTION, "resnet20"]), options, torch.device("cpu"))
    cases = suite.cases()
    assert {(c.channels_last, c.compile, c.compile_mode, c.precision) for c in cases} == {
        (True, True, "max-autotune", "bf16")
    }
    assert {c.model: c.model_kwargs["width"] for c in cases} == {FUNCTION: 8, "resnet20": 8}
    assert build_parser().parse_args(["run", "--model-kwargs", "a=1,b=0.5,c=true,d=x"]).model_kwargs == {
        "a": 1,
        "b": 0.5,
        "c": True,
        "d": "x",
    }


def test_resnet18_flops_match_torchvision_published_count():
    with torch.device("meta"):
        model = models.build("resnet18")
    counted = flops.training_flops(model, (3, 224, 224), 1000)
    # torchvision's _ops is GFLOPS counted as multiply-adds; the counter counts 2 FLOPs each
    published = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["_ops"]
    assert counted.forward / 2 / 1e9 == pytest.approx(published, abs=5e-4)
    # backward: a weight and an input gradient per layer, each the forward's FLOPs, except
    # the stem's input gradient (the images need none): 64 x 112 x 112 outputs, 3 x 7 x 7 MACs each
    stem = 2 * 64 * 112 * 112 * 3 * 7 * 7
    assert counted.backward == 2 * counted.forward - stem


def test_lab_cnn_flops_match_a_hand_count():
    # (out channels, output side, in channels x 5 x 5) of the four 5x5 convolutions on 28x28
    layers = [(32, 28, 1 * 25), (64, 14, 32 * 25), (64, 14, 64 * 25), (128, 7, 64 * 25), (10, 1, 128)]
    forward = sum(2 * out * side * side * fan_in for out, side, fan_in in layers)
    with torch.device("meta"):
        model = models.build("cnn")
    counted = flops.training_flops(model, (1, 28, 28), 10)
    assert counted.forward == forward == 81_538_560
    assert counted.backward == 2 * forward - 2 * 32 * 28 * 28 * 25


def test_mfu_is_achieved_over_the_dense_peak_of_the_right_gpu():
    assert flops.utilisation(2e9, 500.0, 4.0) == (1.0, 0.25)
    assert flops.utilisation(None, 500.0, 4.0) == (None, None)
    assert flops.utilisation(2e9, 500.0, None) == (1.0, None)
    # A100's datasheet gives TF32 156 dense / 312 sparse; A10 and A10G are other GPUs
    assert peaks.dense_peak("NVIDIA A100-SXM4-80GB", "tf32")[0] == 156.0
    assert peaks.dense_peak("NVIDIA A10G", "bf16") is None
    assert peaks.dense_peak("Tesla V100-SXM2-16GB", "bf16") is None  # Volta has no bf16
    assert peaks.dense_peak("AMD EPYC 7B13", "fp32") is None
    assert peaks.peak_for("AMD EPYC 7B13", "fp32", 1.5) == (1.5, "--peak-tflops")


@pytest.mark.parametrize("bf16, expected", [(True, "bf16"), (False, "fp16")])
def test_amp_picks_bf16_only_where_the_gpu_has_it(monkeypatch, bf16, expected):
    from bench.api.measuring import amp_precision

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
    assert amp_precision(torch.device("cuda", 0)) == expected
    assert amp_precision(torch.device("cpu")) == "bf16"

"""Suites: the shipped ones, a user's own file, and every kind of mistake named by key and file."""

import tomllib

import pytest

import models
import optimizers
from bench.checks import SuiteError
from bench.kinds.step import suite as suite_module
from bench.kinds.step.suite import load_suite, shipped

TINY = """
[suite]
name = "tiny"
steps = 2
warmup = 1
repeats = 2

[[grid]]
models = ["cnn"]
optimizers = ["adam", "sgdm"]
batch_sizes = [4]
"""


def write(tmp_path, text: str, name: str = "mine.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_shipped_suites():
    assert shipped() == ["full", "nightly", "smoke"]
    smoke = load_suite("smoke")
    assert [case.case_id for case in smoke.cases()] == [
        f"{model}/{optimizer}/b{batch}/fp32/cl0/eager/synthetic/{shape}"
        for model, shape in (("cnn", "1x28x28"), ("resnet20", "3x32x32"))
        for optimizer in ("adam", "sgdm")
        for batch in (16, 32)
    ]
    assert smoke.sections["rf"].models == ("cnn", "resnet20")
    nightly = load_suite("nightly").cases()
    assert {c.model for c in nightly} >= {"resnet20", "resnet18", "resnet50"}
    assert {c.input_shape for c in nightly if c.model == "resnet50"} == {(3, 224, 224)}
    assert {c.precision for c in nightly} == {"fp32", "tf32", "bf16", "fp16"}
    assert {c.optimizer for c in nightly} >= {"adam", "sgdm", "torch-adam-fused", "torch-sgdm-fused"}
    assert len({c.batch_size for c in nightly if c.model == "resnet50"}) > 1
    full = load_suite("full").cases()
    assert {c.model for c in full} == set(models.available())
    assert {c.optimizer for c in full} == set(optimizers.available())
    assert any(c.compile for c in full) and any(c.channels_last for c in full)


def test_the_nightly_compares_precisions_like_for_like():
    # Every precision of a (model, optimizer, batch) runs in the same memory layouts, so a
    # precision comparison does not measure a change of layout as well.
    nightly = load_suite("nightly").cases()
    layouts: dict[tuple, dict[str, set[bool]]] = {}
    for c in nightly:
        layouts.setdefault((c.model, c.optimizer, c.batch_size), {}).setdefault(c.precision, set()).add(c.channels_last)
    for key, by_precision in layouts.items():
        assert set(by_precision) == {"fp32", "tf32", "bf16", "fp16"}, key
        assert len({frozenset(layout) for layout in by_precision.values()}) == 1, (key, by_precision)
    assert len(nightly) == 224  # as the README says


def test_a_users_file_with_defaults_filled_in(tmp_path):
    suite = load_suite(write(tmp_path, TINY))
    assert (suite.name, suite.device, suite.dataset, suite.detailed) == ("tiny", "auto", "synthetic", False)
    cases = suite.cases()
    assert [(c.optimizer, c.batch_size, c.precision, c.steps, c.warmup, c.repeats) for c in cases] == [
        ("adam", 4, "fp32", 2, 1, 2),
        ("sgdm", 4, "fp32", 2, 1, 2),
    ]


def test_the_name_defaults_to_the_file_name(tmp_path):
    assert load_suite(write(tmp_path, TINY.replace('name = "tiny"', ""), "sweep.toml")).name == "sweep"


def test_several_blocks_and_a_case_named_twice_runs_once(tmp_path):
    text = TINY + '\n[[grid]]\nmodels = ["cnn", "resnet20"]\noptimizers = ["adam"]\nbatch_sizes = [4, 8]\n'
    ids = [c.case_id.split("/synthetic")[0] for c in load_suite(write(tmp_path, text)).cases()]
    assert ids == [
        "cnn/adam/b4/fp32/cl0/eager",
        "cnn/sgdm/b4/fp32/cl0/eager",
        "cnn/adam/b8/fp32/cl0/eager",
        "resnet20/adam/b4/fp32/cl0/eager",
        "resnet20/adam/b8/fp32/cl0/eager",
    ]


def test_all_means_the_whole_registry(tmp_path):
    suite = load_suite(write(tmp_path, TINY.replace('["cnn"]', '"all"')))
    assert suite.grids[0].models == tuple(models.available())


@pytest.mark.parametrize(
    "old,new,key,message",
    [
        ("steps = 2", "step = 2", "[suite].step", "unknown key"),
        ("steps = 2", 'steps = "ten"', "[suite].steps", "positive integer, got 'ten' (str)"),
        ("warmup = 1", "warmup = 0", "[suite].warmup", "positive integer, got 0"),
        ("repeats = 2", "repeats = true", "[suite].repeats", "positive integer, got True (bool)"),
        ('name = "tiny"', 'name = "tiny"\ndevice = "gpu"', "[suite].device", "'gpu' is not a device"),
        ('name = "tiny"', 'name = "tiny"\ndataset = "imagenet"', "[suite].dataset", "'imagenet' is not one of"),
        ('name = "tiny"', "name = 3", "[suite].name", "expected a string"),
        ("batch_sizes = [4]", "batch_sizes = 4", "#1.batch_sizes", "non-empty list, got 4 (int)"),
        ("batch_sizes = [4]", "batch_sizes = [4, -1]", "#1.batch_sizes[1]", "positive integer, got -1"),
        ('models = ["cnn"]', 'models = ["cnn", "resnet19"]', "#1.models[1]", "unknown model 'resnet19'; valid"),
        ('optimizers = ["adam", "sgdm"]', 'optimizers = ["adamw"]', "#1.optimizers[0]", "unknown optimizer"),
        ("batch_sizes = [4]", 'batch_sizes = [4]\nprecision = ["fp64"]', "#1.precision[0]", "'fp64' is not one of"),
        ("batch_sizes = [4]", "batch_sizes = [4]\ncompile = [1]", "#1.compile[0]", "expected true or false"),
        ("batch_sizes = [4]", "batch_sizes = [4]\nsteps = 3", "#1.steps", "unknown key"),
        ("batch_sizes = [4]", "", "[[grid]] #1", "missing batch_sizes"),
        ("[suite]", "[suit]", "suit", "unknown top-level key"),
        ("[[grid]]", "[grid]", "grid", "expected [[grid]] blocks"),
        ("steps = 2", "steps = ", "", "not valid TOML"),
    ],
)
def test_a_mistake_names_the_key_and_the_file(tmp_path, old, new, key, message):
    path = write(tmp_path, TINY.replace(old, new, 1))
    with pytest.raises(SuiteError) as caught:
        load_suite(path)
    text = str(caught.value)
    assert text.startswith(str(path)) and key in text and message in text, text


def test_a_suite_without_blocks_has_nothing_to_run(tmp_path):
    with pytest.raises(SuiteError, match="nothing to run"):
        load_suite(write(tmp_path, '[suite]\nname = "empty"\n'))


def test_missing_files_and_unknown_suite_names(tmp_path):
    with pytest.raises(SuiteError, match="no such suite file"):
        load_suite(tmp_path / "nope.toml")
    with pytest.raises(SuiteError, match="no such suite; shipped suites: full, nightly, smoke"):
        load_suite("nightlly")


def test_overrides_replace_settings_and_every_blocks_lists(tmp_path):
    text = TINY + '\n[[grid]]\nmodels = ["resnet20"]\noptimizers = ["adam"]\nbatch_sizes = [8]\n'
    suite = load_suite(write(tmp_path, text)).override(optimizers=["torch-sgdm"], batch_sizes=[2, 3], steps=7)
    assert {(c.optimizer, c.batch_size, c.steps) for c in suite.cases()} == {
        ("torch-sgdm", 2, 7),
        ("torch-sgdm", 3, 7),
    }
    assert {c.model for c in suite.cases()} == {"cnn", "resnet20"}


@pytest.mark.parametrize(
    "override,message",
    [
        ({"models": ["resnet19"]}, "--models[0]: unknown model 'resnet19'"),
        ({"batch_sizes": [0]}, "--batch-sizes[0]: expected a positive integer"),
        ({"precision": ["fp8"]}, "--precision[0]: 'fp8' is not one of"),
        ({"steps": 0}, "--steps: expected a positive integer"),
        ({"device": "tpu"}, "--device: 'tpu' is not a device"),
    ],
)
def test_bad_overrides_name_their_flag(override, message):
    with pytest.raises(SuiteError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_suite("smoke").override(**override)


def test_the_resolved_suite_written_back_reads_as_the_same_suite(tmp_path):
    suite = load_suite(write(tmp_path, TINY.replace('["cnn"]', '"all"'))).override(device="cpu", batch_sizes=[2])
    text = suite.to_toml()
    document = tomllib.loads(text)
    assert document["suite"] == {
        "name": "tiny",
        "description": "",
        "device": "cpu",
        "dataset": "synthetic",
        "steps": 2,
        "warmup": 1,
        "repeats": 2,
        "detailed": False,
        "isolate": False,
    }
    assert document["grid"] == [
        {
            "models": models.available(),
            "optimizers": ["adam", "sgdm"],
            "batch_sizes": [2],
            "precision": ["fp32"],
            "channels_last": [False],
            "compile": [False],
            "compile_mode": ["default"],
        }
    ]
    again = load_suite(write(tmp_path, text, "again.toml"))
    assert again.cases() == suite.cases()


def test_another_section_plugs_in_with_one_entry(tmp_path, monkeypatch):
    def parse_extra(table: dict) -> tuple:
        if set(table) != {"layers"}:
            raise ValueError(f"unknown key {sorted(set(table) - {'layers'})[0]!r}")
        return tuple(table["layers"])

    monkeypatch.setitem(suite_module.SECTIONS, "extra", parse_extra)
    suite = load_suite(write(tmp_path, TINY + '\n[extra]\nlayers = ["conv1", "fc"]\n'))
    assert suite.sections == {"extra": ("conv1", "fc")}
    assert tomllib.loads(suite.to_toml())["extra"] == {"layers": ["conv1", "fc"]}
    path = write(tmp_path, TINY + "\n[extra]\nlayer = 1\n", "bad.toml")
    with pytest.raises(SuiteError, match=r"bad.toml: \[extra\]: unknown key 'layer'"):
        load_suite(path)
    # A section alone is something to run.
    assert load_suite(write(tmp_path, '[extra]\nlayers = ["x"]\n', "only.toml")).cases() == []


# --- bounds on the work a suite asks for --------------------------------------------------------


def grid_of(batch_sizes: int, lrs: int = 1) -> dict:
    grid = {"models": ["cnn"], "optimizers": ["sgdm"], "batch_sizes": list(range(1, batch_sizes + 1))}
    if lrs > 1:
        grid["lr"] = [round(0.001 * n, 6) for n in range(1, lrs + 1)]
    return {"suite": {"name": "big", "device": "cpu"}, "grid": [grid]}


def test_a_grid_past_the_case_limit_is_refused_before_any_case_is_made(monkeypatch):
    made = []
    monkeypatch.setattr(suite_module, "Case", lambda *args, **kwargs: made.append(args))
    with pytest.raises(SuiteError, match="multiplies out to is 1,000,000, more than the limit of 10,000"):
        load_suite(grid_of(1000, lrs=1000)).cases()
    assert made == []


def test_no_limits_lifts_them_and_a_long_expansion_reports_its_progress(monkeypatch):
    monkeypatch.setattr(suite_module, "PROGRESS_EVERY_S", 0.0)
    suite = load_suite(grid_of(10_001))
    assert suite.size() == 10_001
    reports = []
    cases = suite.cases(limits=False, progress=lambda made, total: reports.append((made, total)))
    assert len(cases) == 10_001 and [c.batch_size for c in cases[:3]] == [1, 2, 3]
    assert reports[0] == (1, 10_001) and reports[-1] == (10_001, 10_001)


@pytest.mark.parametrize(
    "change,message",
    [
        (
            {"steps": 1_000_001, "repeats": 1},
            "steps x repeats (1,000,001 x 1), the timed steps of a case, is 1,000,001",
        ),
        ({"steps": 500_000, "repeats": 3}, "is 1,500,000, more than the limit of 1,000,000"),
        ({"warmup": 10_001}, "warmup is 10,001, more than the limit of 10,000"),
    ],
)
def test_a_protocol_past_the_limits_is_refused_and_lifted_on_request(change, message):
    suite = load_suite(grid_of(1)).override(**change)
    with pytest.raises(SuiteError, match=message.replace("(", r"\(").replace(")", r"\)")):
        suite.cases()
    assert len(suite.cases(limits=False)) == 1


def test_the_grid_size_counts_every_list_of_every_block():
    document = {
        "suite": {"name": "s"},
        "grid": [
            {"models": ["cnn", "mlp"], "optimizers": ["adam", "sgdm"], "batch_sizes": [2, 4, 8], "lr": [0.1, 0.2]},
            {"models": ["cnn"], "optimizers": ["sgdm"], "batch_sizes": [2], "precision": ["fp32", "bf16"]},
        ],
    }
    suite = load_suite(document)
    assert suite.size() == 2 * 2 * 3 * 2 + 2 == len(suite.cases())


def test_deeply_nested_toml_is_one_line(tmp_path):
    path = write(tmp_path, "x = " + "[" * 5000 + "]" * 5000 + "\n" + TINY)
    with pytest.raises(SuiteError, match="not valid TOML: values nested too deeply to read"):
        load_suite(path)

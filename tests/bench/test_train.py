"""Training to accuracy: data on the device, augmentation, schedules, suites, the loop's clock,
seeds, and the summary and verdicts over seeds."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision.transforms.v2.functional as TF

import optimizers
from bench.checks import SuiteError
from bench.kinds.training import compare as training_compare
from bench.kinds.training import datasets, loop
from bench.kinds.training.report import summary_frame
from bench.kinds.training.schedule import Schedule
from bench.kinds.training.suite import parse_train_suite
from tests.bench.ondisk import write_cifar10, write_mnist

CPU = torch.device("cpu")


def test_crop_flip_is_torchvisions_pad_crop_and_flip_per_image():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=generator)
    tops, lefts = torch.tensor([0, 8, 3, 4, 8, 1]), torch.tensor([8, 0, 5, 4, 8, 2])
    flips = torch.tensor([False, True, True, False, True, False])
    got = datasets.crop_flip(images, tops, lefts, flips, padding=4)
    for i in range(6):
        expected = TF.crop(TF.pad(images[i], [4]), int(tops[i]), int(lefts[i]), 32, 32)
        if flips[i]:
            expected = TF.horizontal_flip(expected)
        assert torch.equal(got[i], expected), i


def test_random_crop_flip_draws_every_offset_and_both_orientations():
    generator = torch.Generator().manual_seed(0)
    # One bright pixel in the centre: where it lands tells the offset and the flip.
    images = torch.zeros(4000, 1, 9, 9, dtype=torch.uint8)
    images[:, 0, 4, 3] = 255
    out = datasets.random_crop_flip(images, generator, padding=2)
    where = (out[:, 0] == 255).flatten(1).float().argmax(1)
    rows, columns = where // 9, where % 9
    assert sorted(set(rows.tolist())) == [2, 3, 4, 5, 6]  # 4 - top + 2 for top in 0..4
    # Unflipped column 3 - left + 2 is 1..5, flipped 8 - that is 3..7: all of 1..7 appear.
    assert sorted(set(columns.tolist())) == [1, 2, 3, 4, 5, 6, 7]


def _write_tiny_mnist(root, count=40, test=20, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=count, dtype=np.uint8)
    write_mnist(root, "MNIST", (images[test:], labels[test:]), (images[:test], labels[:test]))
    return images, labels


def test_both_splits_load_onto_the_device_with_the_training_splits_statistics(tmp_path):
    images, labels = _write_tiny_mnist(tmp_path)
    loaded = datasets.load("mnist", tmp_path, CPU)
    assert torch.equal(loaded.train.images[:, 0], torch.from_numpy(images[20:]))
    assert torch.equal(loaded.test.labels, torch.from_numpy(labels[:20]).long())
    pixels = images[20:].astype(np.float64) / 255
    assert loaded.mean.item() == pytest.approx(pixels.mean(), rel=1e-5)
    assert loaded.std.item() == pytest.approx(pixels.std(ddof=1), rel=1e-5)


def test_cifar10_loads_channels_first_from_its_pickles(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(10, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, size=10).tolist()
    write_cifar10(tmp_path, (images, labels), (images[:2], labels[:2]), monkeypatch)
    loaded = datasets.load("cifar10", tmp_path, CPU)
    assert torch.equal(loaded.train.images, torch.from_numpy(images))
    assert loaded.train.labels.tolist() == labels and len(loaded.test) == 2
    assert torch.allclose(loaded.mean.double(), torch.from_numpy(images / 255).mean(dim=(0, 2, 3)))


def test_step_and_onecycle_factors_by_hand():
    step = Schedule("step", milestones=(0.5, 0.75), gamma=0.1).factor(total_steps=8)
    assert [step(k) for k in range(8)] == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01])
    # warmup 0.25 of 8 steps: rise over 2 steps (1/2, 1), then fall over 6 (6/6 .. 1/6).
    onecycle = Schedule("onecycle", warmup=0.25).factor(total_steps=8)
    assert [onecycle(k) for k in range(8)] == pytest.approx([0.5, 1, 1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])


def test_a_schedule_scales_the_textbook_optimizers_lr_and_nothing_else():
    weight = torch.zeros(1, requires_grad=True)
    optimizer = optimizers.build("sgdm", [weight], lr=0.1, momentum=0.9)
    scheduler = Schedule("step", milestones=(0.5,), gamma=0.1).scheduler(optimizer, total_steps=4)
    seen = []
    for _ in range(4):
        weight.grad = torch.ones(1)
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([0.1, 0.1, 0.01, 0.01])
    assert optimizer.param_groups[0]["momentum"] == 0.9
    # m: 1, 1.9, 2.71, 3.439; w = -(0.1 * 1 + 0.1 * 1.9 + 0.01 * 2.71 + 0.01 * 3.439)
    assert weight.item() == pytest.approx(-(0.1 + 0.19 + 0.0271 + 0.03439))


SUITE = {
    "train": {"dataset": "mnist", "target_accuracy": 0.5, "steps": 4, "batch_size": 8, "seeds": [0, 1]},
    "recipe": [
        {"name": "adam0", "optimizer": "adam", "lr": 0.0},
        {"name": "sgdm0", "optimizer": "sgdm", "lr": 0.0, "momentum": 0.9},
        {"name": "adam", "optimizer": "adam", "lr": 1e-3, "schedule": "onecycle", "warmup": 0.5},
    ],
    "grid": [{"models": ["cnn"], "recipes": ["adam0", "sgdm0"]}],
}


def _suite(**train):
    document = {**SUITE, "train": {**SUITE["train"], **train}}
    return parse_train_suite(document, "test.toml", "test")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"train": {"dataset": "mnist", "target_accuracy": 0.5}}, "exactly one of epochs or steps"),
        ({"train": {"dataset": "mnist", "steps": 3}}, "missing target_accuracy"),
        ({"train": {**SUITE["train"], "target_accuracy": 95}}, r"target_accuracy: expected a fraction"),
        ({"grid": [{"models": ["cnn"], "recipes": ["nope"]}]}, r"\[\[grid\]\] #1.recipes\[0\]: unknown recipe 'nope'"),
        ({"recipe": [{"name": "a", "optimizer": "sgdm", "momentum": 1.5}]}, r"#1: optimizer 'sgdm': momentum"),
        ({"recipe": [{"name": "a", "optimizer": "adam", "schedule": "cosine"}]}, r"#1.schedule: 'cosine'"),
        (
            {"recipe": [{"name": "a", "optimizer": "adam", "lr": 1e-3, "schedule": "step", "milestones": [82]}]},
            "fractions",
        ),
    ],
)
def test_bad_training_suites_fail_by_name(change, message):
    with pytest.raises(SuiteError, match=message):
        parse_train_suite({**SUITE, **change}, "test.toml", "test")


def test_seeds_default_by_device_and_cases_differ_only_by_the_grid():
    suite = parse_train_suite({**SUITE, "train": {k: v for k, v in SUITE["train"].items() if k != "seeds"}}, "t", "t")
    assert suite.resolve("cuda").seeds == (0, 1, 2) and suite.resolve("cpu").seeds == (0,)
    cases = _suite().resolve("cpu").cases()
    assert [c.case_id for c in cases] == [
        "cnn/adam0/b8/fp32/mnist/seed0",
        "cnn/adam0/b8/fp32/mnist/seed1",
        "cnn/sgdm0/b8/fp32/mnist/seed0",
        "cnn/sgdm0/b8/fp32/mnist/seed1",
    ]
    assert not cases[0].augment  # digits are not flipped; CIFAR-10 is (AUGMENTED_BY_DEFAULT)


@pytest.fixture
def tiny(tmp_path, one_thread):
    _write_tiny_mnist(tmp_path, count=48, test=16)
    return datasets.load("mnist", tmp_path, CPU)


def _train(case, dataset):
    record, curve = loop.run_training_case(case, dataset, run_id="r", suite="test", device=CPU, env={})
    assert record.status == "ok", record.error
    return record, curve


def test_the_same_seed_starts_every_recipe_from_the_same_weights(tiny):
    """With lr 0 nothing moves, so each evaluation shows the initial weights: equal across
    Adam and SGDM for one seed, different for another seed."""
    cases = _suite(steps=2, eval_every=1).resolve("cpu").cases()
    losses = {(c.recipe.name, c.seed): [row["test_loss"] for row in _train(c, tiny)[1]] for c in cases}
    assert losses[("adam0", 0)] == losses[("sgdm0", 0)]
    assert losses[("adam0", 1)] == losses[("sgdm0", 1)]
    assert losses[("adam0", 0)] != losses[("adam0", 1)]


def test_training_is_reproducible_for_a_seed_on_the_cpu(tiny):
    suite = _suite(steps=6, eval_every=3, augment=True, seeds=[3])
    case = suite.override(recipes=["adam"]).resolve("cpu").cases()[0]
    first, second = _train(case, tiny)[1], _train(case, tiny)[1]
    strip = [{k: v for k, v in row.items() if not k.endswith("_s")} for row in first]
    assert strip == [{k: v for k, v in row.items() if not k.endswith("_s")} for row in second]
    assert first[0]["train_loss"] != first[1]["train_loss"]  # it did train


def test_evaluation_time_stays_off_the_training_clock(tiny, monkeypatch):
    real = loop.evaluate

    def slow(*args):
        time.sleep(0.3)
        return real(*args)

    monkeypatch.setattr(loop, "evaluate", slow)
    case = _suite(steps=4, eval_every=1, seeds=[0]).resolve("cpu").cases()[0]
    started = time.perf_counter()
    record, curve = _train(case, tiny)
    wall = time.perf_counter() - started
    assert record.eval_time_s >= 4 * 0.3
    assert record.train_time_s <= wall - 4 * 0.3
    assert [row["step"] for row in curve] == [1, 2, 3, 4]
    assert [row["samples_seen"] for row in curve] == [8, 16, 24, 32]
    assert record.epochs_trained == pytest.approx(32 / 32)


def test_a_target_never_reached_is_none_not_zero(tiny):
    case = _suite(steps=2, target_accuracy=1.0, seeds=[0]).resolve("cpu").cases()[0]  # lr 0
    record, _ = _train(case, tiny)
    assert record.time_to_target_s is None and record.samples_to_target is None and record.epochs_to_target is None
    assert record.final_test_accuracy < 1.0
    assert record.optimizer_state_bytes == 2 * record.param_bytes  # Adam: m and v per parameter


def _record(model="cnn", recipe="adam", seed=0, accuracy=0.9, time_s=10.0, status="ok", device="cpu", **more):
    return {
        "model": model,
        "recipe": recipe,
        "optimizer": recipe,
        "batch_size": 64,
        "precision": "fp32",
        "dataset": "mnist",
        "target_accuracy": 0.8,
        "seed": seed,
        "status": status,
        "final_test_accuracy": accuracy,
        "time_to_target_s": time_s,
        "epochs_to_target": 1.0 if time_s is not None else None,
        "epochs_trained": 2.0,
        "train_time_s": 20.0,
        "eval_time_s": 1.0,
        "input_epoch_s": 0.1,
        "train_throughput": 100.0,
        "hyperparameters": {"lr": 1e-3},
        "device": device,
        "device_name": "CPU",
        **more,
    }


def test_summary_counts_a_missed_target_as_infinitely_slow():
    records = pd.DataFrame([_record(seed=0, time_s=4.0), _record(seed=1, time_s=None), _record(seed=2, time_s=2.0)])
    row = summary_frame(records).iloc[0]
    assert row["reached"] == 2 and row["seeds"] == 3
    assert row["time to target median (s)"] == 4.0  # of 2, 4 and infinity
    assert row["time to target min (s)"] == 2.0 and pd.isna(row["time to target max (s)"])
    records.loc[0, "time_to_target_s"] = None
    assert pd.isna(summary_frame(records).iloc[0]["time to target median (s)"])


def test_verdicts_weigh_the_change_against_the_spread_over_seeds():
    base = pd.DataFrame(
        [_record(seed=s, accuracy=a, time_s=t) for s, a, t in [(0, 0.90, 10), (1, 0.91, 11), (2, 0.905, 10.5)]]
    )
    worse = pd.DataFrame(
        [_record(seed=s, accuracy=a, time_s=t) for s, a, t in [(0, 0.80, 20), (1, 0.81, 21), (2, 0.805, 20.5)]]
    )
    verdicts = training_compare.compare_training(base, worse)
    assert verdicts.loc[0, ["accuracy", "time"]].tolist() == ["regression", "regression"]
    assert training_compare.has_regression(verdicts)
    # The same means with seeds spread wider than the change: no verdict.
    noisy = pd.DataFrame(
        [_record(seed=s, accuracy=a, time_s=t) for s, a, t in [(0, 0.6, 5), (1, 0.99, 40), (2, 0.75, 12)]]
    )
    assert training_compare.compare_training(base, noisy).loc[0, "accuracy"] == "unchanged"
    assert training_compare.compare_training(base, base).loc[0, ["accuracy", "time"]].tolist() == ["unchanged"] * 2


def test_fewer_seeds_reaching_the_target_is_a_time_regression_and_one_seed_is_no_verdict():
    base = pd.DataFrame([_record(seed=s) for s in range(3)])
    missed = pd.DataFrame([_record(seed=0), _record(seed=1, time_s=None), _record(seed=2)])
    verdicts = training_compare.compare_training(base, missed)
    assert verdicts.loc[0, "time"] == "regression" and "fewer seeds" in verdicts.loc[0, "note"]
    single = training_compare.compare_training(base.iloc[:1], pd.DataFrame([_record(accuracy=0.5)]))
    assert single.loc[0, "accuracy"] == "unchanged" and "one seed" in single.loc[0, "note"]


def test_trained_differently_is_refused():
    from bench.analyse.compare import IncomparableError

    base = pd.DataFrame([_record()])
    with pytest.raises(IncomparableError, match="hyperparameters"):
        training_compare.compare_training(base, pd.DataFrame([_record(hyperparameters={"lr": 0.1})]))


def _curve_rows(model, recipe, seed, accuracies):
    return [
        {
            "model": model,
            "recipe": recipe,
            "seed": seed,
            "evaluation": i + 1,
            "epoch": i + 1.0,
            "train_time_s": 2.0 * (i + 1) + seed,
            "test_accuracy": a,
            "train_accuracy": a + 0.05,
        }
        for i, a in enumerate(accuracies)
    ]


def test_seed_bands_are_the_median_and_the_full_range_over_seeds():
    from bench.kinds.training.figures import seed_bands

    curves = pd.DataFrame(
        _curve_rows("cnn", "adam", 0, [0.5, 0.8])
        + _curve_rows("cnn", "adam", 1, [0.7, 0.9])
        + _curve_rows("cnn", "adam", 2, [0.6, 0.7])
    )
    bands = seed_bands(curves, "test_accuracy")
    assert bands["median"].tolist() == pytest.approx([0.6, 0.8])
    assert bands["low"].tolist() == pytest.approx([0.5, 0.7]) and bands["high"].tolist() == pytest.approx([0.7, 0.9])
    assert bands["train_time_s"].tolist() == [3.0, 5.0] and bands["seeds"].tolist() == [3, 3]


def test_the_degradation_figure_needs_plain_and_residual_nets():
    from bench.kinds.training import figures as train_figures
    from bench.kinds.training.report import _families

    rows = []
    for model in ("plain20", "plain56", "resnet20", "resnet56"):
        rows += _curve_rows(model, "sgdm", 0, [0.3, 0.5, 0.6])
    curves = pd.DataFrame(rows)
    chosen = train_figures.degradation_frame(curves, _families(curves))
    assert sorted(chosen["depth"].unique()) == [20, 56]
    figure = train_figures.degradation_figure(chosen)
    assert [axes.get_title() for axes in figure.axes] == ["plain (sgdm)", "residual (sgdm)"]
    # Training error is 1 - training accuracy: 0.65, 0.45, 0.35 for every model here.
    assert figure.axes[0].lines[0].get_ydata().tolist() == pytest.approx([0.65, 0.45, 0.35])
    only_cnn = pd.DataFrame(_curve_rows("cnn", "sgdm", 0, [0.5]))
    assert train_figures.degradation_frame(only_cnn, _families(only_cnn)) is None

"""Receptive-field speed on torchvision's ResNet-50 (a benchmark, not a test: nothing is asserted).

    pytest benchmarks/test_receptive_speed.py --benchmark-only

pytest-benchmark prints min, median and IQR over the rounds; the README quotes the median
with the machine it ran on. Budgets from issue 4: analytic fields of every layer under 1 s,
the probe of every convolution and pooling layer under 30 s, on 2 CPU cores.
"""

import pytest
import torch

import models
from bench.receptive import analyse, effective_fields, gradient_masks


@pytest.fixture(scope="module")
def resnet50():
    with torch.device("meta"):  # neither the trace nor the probe reads the weights
        return models.build("resnet50")


def test_analytic_fields_resnet50(benchmark, resnet50):
    analysis = benchmark.pedantic(analyse, (resnet50, (3, 224, 224)), rounds=9, warmup_rounds=1)
    assert len(analysis.layers) == 56


def test_probe_every_convolution_and_pooling_resnet50(benchmark, resnet50):
    analysis = analyse(resnet50, (3, 224, 224))
    spatial = [layer for layer in analysis.layers if layer.kind != "Linear"]
    masks = benchmark.pedantic(gradient_masks, (resnet50, analysis, spatial), rounds=5, warmup_rounds=1)
    assert all(mask.matches() for mask in masks.values())


@pytest.mark.parametrize("threads", [1, 2])
def test_effective_fields_resnet50_8_samples(benchmark, threads):
    """Every layer's effective field uses torch's own thread setting; both are measured."""
    model = models.build("resnet50")
    analysis = analyse(model, (3, 224, 224))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        benchmark.pedantic(effective_fields, (model, analysis), {"samples": 8}, rounds=3)
    finally:
        torch.set_num_threads(before)

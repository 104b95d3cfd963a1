"""The optimizer step alone, for every implementation, on ResNet-18's 11.7 M parameters.

Gradients are fixed random tensors and the optimizer state already exists (one untimed
step), so the timed function is exactly ``optimizer.step()`` plus, on a GPU, a synchronise.
``extra_info`` carries the sizes and the median throughput in parameters updated per second.
"""

import pytest
import torch

import models
import optimizers

MODEL = "resnet18"


@pytest.fixture(scope="module")
def parameters(device: torch.device) -> list[torch.nn.Parameter]:
    torch.manual_seed(0)
    model = models.build(MODEL).to(device)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    return list(model.parameters())


@pytest.mark.parametrize("name", optimizers.available())
def test_optimizer_step(benchmark, parameters, synchronize, name):
    benchmark.group = f"optimizer step ({MODEL})"
    optimizer = optimizers.build(name, parameters)
    optimizer.step()  # creates the state; not what we time

    def step() -> None:
        optimizer.step()
        synchronize()

    benchmark(step)
    params = sum(p.numel() for p in parameters)
    state_bytes = sum(t.nbytes for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t))
    benchmark.extra_info.update(
        model=MODEL,
        params=params,
        param_bytes=sum(p.nbytes for p in parameters),
        optimizer_state_bytes=state_bytes,
        state_bytes_per_param=state_bytes / params,
    )
    if benchmark.stats:  # None under --benchmark-disable
        benchmark.extra_info["params_per_s"] = params / benchmark.stats.stats.median

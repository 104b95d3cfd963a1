"""One full training step (forward, loss, backward, optimizer step) for each case of the
smoke suite, written out by hand (nanoGPT-style) so that it checks the harness rather than
repeating it.

Synthetic data already on the device, as in the harness; optimizer state created by an
untimed step; on CUDA, the harness's cuDNN autotuning and TF32 settings for the case's
precision (``bench.measure.precision.cuda_backend_settings``). ``extra_info`` carries samples per
second (batch / median step time) and the parameter, gradient and optimizer-state bytes.
"""

import pytest
import torch
import torch.nn.functional as F

import models
import optimizers
from bench.kinds.step.suite import load_suite
from bench.measure.precision import cuda_backend_settings

# The smoke suite's cases (fp32, eager, synthetic data), read from the shipped suite so the
# two never drift apart.
SMOKE = load_suite("smoke").cases()
CASES = [(case.model, case.optimizer, case.batch_size) for case in SMOKE]
PRECISION = {(case.model, case.optimizer, case.batch_size): case.precision for case in SMOKE}


def tensor_bytes(tensors) -> int:
    return sum(t.nbytes for t in tensors if torch.is_tensor(t))


@pytest.mark.parametrize("model_name,optimizer_name,batch_size", CASES, ids=["/".join(map(str, c)) for c in CASES])
def test_training_step(benchmark, device, synchronize, model_name, optimizer_name, batch_size):
    benchmark.group = "training step (smoke suite)"
    torch.manual_seed(0)
    entry = models.spec(model_name)
    model = models.build(model_name).to(device)
    optimizer = optimizers.build(optimizer_name, model.parameters())
    images = torch.randn(batch_size, *entry.input_shape, device=device)
    labels = torch.randint(0, entry.num_classes, (batch_size,), device=device)

    def step() -> None:
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
        synchronize()

    with cuda_backend_settings(PRECISION[model_name, optimizer_name, batch_size], device):
        step()  # creates the optimizer state and the gradients; not what we time
        benchmark(step)
    params = list(model.parameters())
    benchmark.extra_info.update(
        model=model_name,
        optimizer=optimizer_name,
        batch_size=batch_size,
        param_bytes=tensor_bytes(params),
        grad_bytes=tensor_bytes(p.grad for p in params),
        optimizer_state_bytes=tensor_bytes(t for state in optimizer.state.values() for t in state.values()),
    )
    if benchmark.stats:  # None under --benchmark-disable
        benchmark.extra_info["samples_per_s"] = batch_size / benchmark.stats.stats.median

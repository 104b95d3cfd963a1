"""An epoch of input pipeline against an epoch of training, on CIFAR-sized data on the device.

    python -m benchmarks.input_pipeline [--model resnet20] [--optimizer sgdm] [--images 50000]
                                        [--batch-size 128] [--steps 30] [--repeats 3] [--device auto]

Builds a CIFAR-10-sized training split of random uint8 images (``--images`` x 3 x 32 x 32,
random labels) on the device, as ``bench.kinds.training.datasets.load`` keeps a real one, then:

- input epoch: one epoch of ``epoch_batches`` (permutation, gather, crop-and-flip,
  normalise) without training, between two synchronisations, median of ``--repeats``;
- training epoch: the median time of a training step over ``--steps`` steps (each between
  two synchronisations, after 5 untimed ones) on batches from that pipeline, times the steps
  in an epoch, so the projection includes the pipeline's share of each step.

It prints both and their ratio: how much of an epoch the input pipeline could take at most.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F

import models
import optimizers
from bench.kinds.training.datasets import DeviceDataset, Split, epoch_batches
from bench.kinds.training.loop import _synchronise
from bench.measure.setup import resolve_device


def synthetic_cifar(images: int, device: torch.device) -> DeviceDataset:
    """A CIFAR-10-sized dataset of random bytes on ``device`` (the test split: 1,000 images)."""
    generator = torch.Generator().manual_seed(0)

    def split(count: int) -> Split:
        pixels = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=generator)
        return Split(pixels.to(device), torch.randint(0, 10, (count,), generator=generator).to(device))

    mean, std = torch.full((3,), 0.5, device=device), torch.full((3,), 0.29, device=device)
    return DeviceDataset("synthetic-cifar10", split(images), split(1000), mean, std, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--optimizer", default="sgdm")
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    dataset = synthetic_cifar(args.images, device)
    generator = torch.Generator(device=device).manual_seed(0)

    input_epochs = []
    for _ in range(args.repeats):
        _synchronise(device)
        start = time.perf_counter()
        for _ in epoch_batches(dataset, args.batch_size, True, generator):
            pass
        _synchronise(device)
        input_epochs.append(time.perf_counter() - start)

    torch.manual_seed(0)
    model = models.build(args.model).to(device)
    optimizer = optimizers.build(args.optimizer, model.parameters())
    batches = epoch_batches(dataset, args.batch_size, True, generator)
    steps = []
    for index in range(5 + args.steps):
        _synchronise(device)
        start = time.perf_counter()
        images, labels = next(batches)
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _synchronise(device)
        if index >= 5:
            steps.append(time.perf_counter() - start)
    per_epoch = math.ceil(args.images / args.batch_size)
    input_epoch, step = statistics.median(input_epochs), statistics.median(steps)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}, {args.images} images, batch {args.batch_size}, {args.model}")
    print(f"input epoch (gather, crop+flip, normalise): {input_epoch:.3f} s (median of {args.repeats})")
    print(f"training epoch: {step * per_epoch:.2f} s ({per_epoch} steps x median step {step * 1e3:.2f} ms)")
    print(f"input / training epoch: {input_epoch / (step * per_epoch):.3%}")


if __name__ == "__main__":
    main()

"""A whole dataset on the training device, and the batches of an epoch drawn from it there.

``load`` reads both splits of MNIST, FashionMNIST or CIFAR-10 through torchvision's own
dataset classes (``bench.measure.data.open_dataset``: torchvision's on-disk formats, nothing
downloaded unless asked) and keeps the raw bytes, uint8 (N, C, H, W), on the device: 47 MB
for MNIST, 184 MB for CIFAR-10. Every batch is then gathered, augmented and normalised on
the device by tensor operations, so no host-side loader, worker or copy sits between two
training steps and the input pipeline cannot be the bottleneck. The same code runs on the
CPU, where "the device" is host memory.

Augmentation (``random_crop_flip``) is the standard CIFAR one (He et al. 2016, section 4.2,
as ``torchvision.transforms.RandomCrop(32, padding=4)`` then ``RandomHorizontalFlip()``):
zero-pad 4 pixels on every side, take a random 32 x 32 window, flip it left to right with
probability 1/2, independently per image. Normalisation uses the training split's own
per-channel mean and standard deviation of the [0, 1]-scaled pixels.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bench.measure import data

#: Datasets that get the crop-and-flip augmentation unless a suite says otherwise; flipping
#: a digit makes another glyph, so MNIST-style data trains without it.
AUGMENTED_BY_DEFAULT = ("cifar10",)
CROP_PADDING = 4


@dataclass(frozen=True)
class Split:
    """One split on the device: ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,)."""

    images: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class DeviceDataset:
    """Both splits of a dataset on one device, the training split's per-channel ``mean`` and
    ``std`` (float32, shape (C,), of pixels scaled to [0, 1]) and ``load_s``: seconds taken
    to read both splits from disk and copy them to the device."""

    name: str
    train: Split
    test: Split
    mean: Tensor
    std: Tensor
    load_s: float

    def normalise(self, images: Tensor) -> Tensor:
        """uint8 (N, C, H, W) -> float32 (x / 255 - mean) / std, per channel."""
        return (images.float() / 255 - self.mean[:, None, None]) / self.std[:, None, None]


def _split(source: object, device: torch.device) -> Split:
    """A torchvision dataset's ``data`` and ``targets`` (MNIST: uint8 tensor (N, H, W);
    CIFAR-10: uint8 array (N, H, W, C) and a list) as a Split on ``device``."""
    images = torch.as_tensor(np.asarray(source.data))
    images = images[:, None] if images.dim() == 3 else images.permute(0, 3, 1, 2)
    labels = torch.as_tensor(np.asarray(source.targets), dtype=torch.int64)
    return Split(images.contiguous().to(device), labels.to(device))


def load(name: str, root: Path | str, device: torch.device, download: bool = False) -> DeviceDataset:
    """Both splits of dataset ``name`` (a ``bench.measure.data.DATASETS`` key) from ``root`` on
    ``device``. Raises DatasetNotFoundError naming the folder when a split is missing."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    train = _split(data.open_dataset(name, root, download, train=True), device)
    test = _split(data.open_dataset(name, root, download, train=False), device)
    pixels = train.images.float().div_(255).transpose(0, 1).flatten(1)
    mean, std = pixels.mean(dim=1), pixels.std(dim=1)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return DeviceDataset(name, train, test, mean, std, time.perf_counter() - start)


def crop_flip(images: Tensor, tops: Tensor, lefts: Tensor, flips: Tensor, padding: int = CROP_PADDING) -> Tensor:
    """Per image i of ``images`` (N, C, H, W): zero-pad ``padding`` pixels on every side,
    take the H x W window whose top-left corner is (``tops[i]``, ``lefts[i]``) in the
    padded image (each in [0, 2 * padding]), and mirror it left to right where ``flips[i]``.
    One gather for the whole batch; returns (N, C, H, W) of the input's dtype."""
    n, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    device = images.device
    rows = tops[:, None] + torch.arange(h, device=device)  # (N, H)
    columns = lefts[:, None] + torch.arange(w, device=device)  # (N, W)
    columns = torch.where(flips[:, None], columns.flip(1), columns)
    batch = torch.arange(n, device=device)[:, None, None, None]
    channel = torch.arange(c, device=device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], columns[:, None, None, :]]


def random_crop_flip(images: Tensor, generator: torch.Generator, padding: int = CROP_PADDING) -> Tensor:
    """``crop_flip`` with corners uniform on [0, 2 * padding]^2 and flips with probability
    1/2, drawn from ``generator`` (which must live on the images' device)."""
    n, device = len(images), images.device
    tops = torch.randint(0, 2 * padding + 1, (n,), device=device, generator=generator)
    lefts = torch.randint(0, 2 * padding + 1, (n,), device=device, generator=generator)
    flips = torch.rand(n, device=device, generator=generator) < 0.5
    return crop_flip(images, tops, lefts, flips, padding)


def epoch_batches(
    dataset: DeviceDataset, batch_size: int, augment: bool, generator: torch.Generator
) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch of training batches: a fresh permutation of the training split cut into
    batches of ``batch_size`` (the last one smaller if the split does not divide), each
    gathered, augmented if asked and normalised on the device when it is asked for, as
    (float32 images, int64 labels). Nothing is synchronised: on CUDA the work is queued
    and overlaps the training step before it."""
    train = dataset.train
    order = torch.randperm(len(train), device=train.images.device, generator=generator)
    for indices in order.split(batch_size):
        images = train.images[indices]
        if augment:
            images = random_crop_flip(images, generator)
        yield dataset.normalise(images), train.labels[indices]


def steps_per_epoch(dataset: DeviceDataset, batch_size: int) -> int:
    """Batches in one epoch of ``epoch_batches`` (the last one may be smaller)."""
    return math.ceil(len(dataset.train) / batch_size)

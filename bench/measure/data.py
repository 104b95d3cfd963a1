"""The batches a case trains on, made once and kept on the device.

``synthetic`` (the default) is one batch of standard-normal images with uniform random
labels, drawn on the device itself, so nothing about data loading sits in the timed loop.
``mnist``, ``fashionmnist`` and ``cifar10`` are read by torchvision's own dataset classes
from ``root`` (in torchvision's layout, e.g. ``root/MNIST/raw/train-images-idx3-ubyte`` or
``root/cifar-10-batches-py/data_batch_1``); a handful of training batches is converted with
``ToTensor`` and moved to the device before timing, then cycled. Nothing is downloaded
unless ``download`` is true.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import Tensor

SYNTHETIC = "synthetic"
DEFAULT_ROOT = "data"

#: The most distinct real-data batches a case keeps on the device; longer runs cycle them.
MAX_REAL_BATCHES = 16


@dataclass(frozen=True)
class DatasetSpec:
    """A torchvision dataset: its class name, one sample's (C, H, W), its classes, and the
    folder under the data root where torchvision looks for its files."""

    torchvision_class: str
    input_shape: tuple[int, int, int]
    num_classes: int
    folder: str


DATASETS = {
    "mnist": DatasetSpec("MNIST", (1, 28, 28), 10, "MNIST/raw"),
    "fashionmnist": DatasetSpec("FashionMNIST", (1, 28, 28), 10, "FashionMNIST/raw"),
    "cifar10": DatasetSpec("CIFAR10", (3, 32, 32), 10, "cifar-10-batches-py"),
}


class DatasetNotFoundError(FileNotFoundError):
    """A real dataset is not where it was looked for (or failed torchvision's checks)."""


def names() -> list[str]:
    return [SYNTHETIC, *DATASETS]


def open_dataset(
    name: str, root: Path | str, download: bool = False, train: bool = True
) -> torchvision.datasets.VisionDataset:
    """The training split (or with ``train=False`` the test split) of dataset ``name`` under
    ``root``, through torchvision; DatasetNotFoundError names the folder if it is missing."""
    spec = DATASETS[name]
    return _open(spec, str(Path(root).expanduser().resolve()), download, train)


@lru_cache(maxsize=4)
def _open(spec: DatasetSpec, root: str, download: bool, train: bool) -> torchvision.datasets.VisionDataset:
    dataset_class = getattr(torchvision.datasets, spec.torchvision_class)
    try:
        dataset = dataset_class(root, train=train, download=download, transform=torchvision.transforms.ToTensor())
    except (RuntimeError, AssertionError, ValueError, OSError, EOFError) as error:
        # Missing files are a RuntimeError and an unreachable download or a permission an
        # OSError; damaged files fail torchvision's readers (MNIST's asserts on its header,
        # CIFAR's unpickling) in the other ways.
        hint = "" if download else "; pass --download to fetch it"
        if isinstance(error, RuntimeError | OSError):  # missing, unreachable, not permitted
            reason = str(error) if isinstance(error, RuntimeError) else f"{type(error).__name__}: {error}"
        else:
            reason = f"damaged: {type(error).__name__} {error}".strip()
        raise DatasetNotFoundError(
            f"{spec.torchvision_class} could not be read from {Path(root) / spec.folder} ({reason}); "
            f"give --data-root the folder that holds {spec.folder}{hint}"
        ) from None
    return _checked(spec, dataset, Path(root) / spec.folder, "training" if train else "test")


def _checked(spec: DatasetSpec, dataset: torchvision.datasets.VisionDataset, folder: Path, split: str) -> object:
    """``dataset`` if its images and labels agree with each other and with ``spec``: as many
    labels as images, every image of the shape the dataset has (MNIST 28 x 28, CIFAR-10
    32 x 32 x 3; torchvision reads whatever an IDX header says), every label one of its
    classes. Raises DatasetNotFoundError naming the folder and the split otherwise: training
    on such files would measure something else than the record says."""
    images, labels = dataset.data, dataset.targets
    channels, height, width = spec.input_shape
    expected = (height, width) if channels == 1 else (height, width, channels)  # MNIST (N, H, W), CIFAR (N, H, W, C)
    problem = None
    if tuple(images.shape[1:]) != expected:
        problem = f"its images are {' x '.join(map(str, images.shape[1:]))}, not {' x '.join(map(str, expected))}"
    elif len(labels) != len(images):
        problem = f"it holds {len(images)} images but {len(labels)} labels"
    elif len(labels) and not 0 <= np.asarray(labels).min() <= np.asarray(labels).max() < spec.num_classes:
        problem = f"a label is outside 0 … {spec.num_classes - 1}"
    if problem is not None:
        raise DatasetNotFoundError(
            f"{spec.torchvision_class} in {folder} is damaged: the {split} split's files disagree ({problem})"
        )
    return dataset


def make_batches(
    dataset: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    batch_size: int,
    count: int,
    device: torch.device,
    root: Path | str = DEFAULT_ROOT,
    download: bool = False,
) -> list[tuple[Tensor, Tensor]]:
    """(images, labels) batches on ``device``: one for synthetic data, else up to
    ``min(count, MAX_REAL_BATCHES)`` consecutive batches of the dataset (wrapping around a
    dataset smaller than that)."""
    if dataset == SYNTHETIC:
        images = torch.randn(batch_size, *input_shape, device=device)
        labels = torch.randint(0, num_classes, (batch_size,), device=device)
        return [(images, labels)]
    source = open_dataset(dataset, root, download)
    batches = []
    for index in range(min(count, MAX_REAL_BATCHES)):
        samples = [source[(index * batch_size + i) % len(source)] for i in range(batch_size)]
        images = torch.stack([image for image, _ in samples]).to(device)
        labels = torch.tensor([label for _, label in samples], device=device)
        batches.append((images, labels))
    return batches

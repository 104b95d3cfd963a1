"""Datasets written to disk in torchvision's own formats, for the real loaders to read.

MNIST and FashionMNIST are idx-ubyte files (big-endian: magic, dimensions, then the bytes).
CIFAR-10 is pickled batches, which torchvision checks against the MD5 sums of the official
release, kept in the class attributes ``train_list``, ``test_list`` and ``meta``; tiny files
cannot have those sums, so ``write_cifar10`` sets the attributes to the sums of the files it
wrote (through pytest's monkeypatch): the real loading code, integrity check included, then
runs unchanged.

``write_digits`` is scikit-learn's real handwritten digits as MNIST (``benchmarks.digits``,
also a command for users).
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import torchvision

from benchmarks.digits import DIGITS_TEST, digits_as_mnist, write_digits, write_idx, write_mnist

__all__ = ["DIGITS_TEST", "digits_as_mnist", "write_cifar10", "write_digits", "write_idx", "write_mnist"]


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_cifar10(
    root: Path, train: tuple[np.ndarray, list[int]], test: tuple[np.ndarray, list[int]], monkeypatch
) -> Path:
    """``root/cifar-10-batches-py``: the training images (N, 3, 32, 32) uint8 split over
    the five ``data_batch_i`` files (N divisible by 5), the test images in ``test_batch``, in
    the release's pickle format; torchvision's expected MD5 sums are set to theirs."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    images, labels = train
    per = len(images) // 5
    batches = {
        f"data_batch_{i}": (images[per * (i - 1) : per * i], labels[per * (i - 1) : per * i]) for i in range(1, 6)
    }
    batches["test_batch"] = test
    for name, (array, batch_labels) in batches.items():
        with open(folder / name, "wb") as handle:
            pickle.dump({"data": array.reshape(len(array), 3 * 32 * 32), "labels": list(batch_labels)}, handle)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, handle)
    cifar = torchvision.datasets.CIFAR10
    monkeypatch.setattr(
        cifar, "train_list", [[f"data_batch_{i}", md5(folder / f"data_batch_{i}")] for i in range(1, 6)]
    )
    monkeypatch.setattr(cifar, "test_list", [["test_batch", md5(folder / "test_batch")]])
    monkeypatch.setattr(cifar, "meta", {**cifar.meta, "md5": md5(folder / "batches.meta")})
    return folder

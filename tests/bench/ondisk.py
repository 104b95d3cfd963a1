"""Datasets written to disk in torchvision's own formats, for the real loaders to read.

MNIST and FashionMNIST are idx-ubyte files (big-endian: magic, dimensions, then the bytes).
CIFAR-10 is pickled batches, which torchvision checks against the MD5 sums of the official
release, kept in the class attributes ``train_list``, ``test_list`` and ``meta``; tiny files
cannot have those sums, so ``write_cifar10`` sets the attributes to the sums of the files it
wrote (through pytest's monkeypatch): the real loading code, integrity check included, then
runs unchanged.

``write_digits`` is scikit-learn's real handwritten digits (1,797 8 x 8 images, 16 grey
levels) as MNIST: each digit is scaled to 20 x 20 (bilinear) and centred in a 28 x 28
frame, as MNIST's digits are, with a fixed held-out split as the t10k files.
"""

from __future__ import annotations

import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import torch
import torchvision

DIGITS_TEST = 360  # held-out digits (20%), the t10k files


def write_idx(path: Path, array: np.ndarray) -> None:
    """An idx-ubyte file: 0x0000 0x08 (unsigned byte) ndim, then each dimension as a big-endian int32."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, folder: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]):
    """``root/folder/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` from (images (N, 28, 28), labels)."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, (images, labels) in (("train", train), ("t10k", test)):
        write_idx(raw / f"{split}-images-idx3-ubyte", images)
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels)


def digits_as_mnist() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """scikit-learn's digits as MNIST-style uint8 (N, 28, 28) images: (train, test) pairs of
    (images, labels), the test split the last ``DIGITS_TEST`` of a fixed shuffle."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = torch.tensor(digits.images, dtype=torch.float32)[:, None] * (255 / 16)
    large = torch.nn.functional.interpolate(small, size=(20, 20), mode="bilinear", align_corners=False)
    images = torch.nn.functional.pad(large, (4, 4, 4, 4)).round().clamp(0, 255).to(torch.uint8)[:, 0].numpy()
    order = np.random.default_rng(0).permutation(len(images))
    train, test = order[:-DIGITS_TEST], order[-DIGITS_TEST:]
    labels = digits.target.astype(np.uint8)
    return (images[train], labels[train]), (images[test], labels[test])


def write_digits(root: Path, folder: str = "MNIST") -> None:
    """scikit-learn's digits under ``root`` in MNIST's files (``digits_as_mnist``)."""
    write_mnist(root, folder, *digits_as_mnist())


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

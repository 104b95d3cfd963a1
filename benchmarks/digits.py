"""scikit-learn's handwritten digits written as MNIST files, for ``convbench train`` without a download.

    python -m benchmarks.digits DIR [--folder MNIST]

scikit-learn ships 1,797 real handwritten digits (8 x 8 pixels, 16 grey levels; the UCI
"Optical Recognition of Handwritten Digits" test set). Each is scaled to 20 x 20 (bilinear)
and centred in a 28 x 28 frame, as MNIST's digits are, and the set is split by a fixed
shuffle into 1,437 training digits and ``DIGITS_TEST`` = 360 held-out ones, written as
``DIR/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``: torchvision's MNIST reads
them as it reads MNIST, so ``convbench train --suite mnist --data-root DIR`` trains on them.
Needs scikit-learn (``pip install scikit-learn``).
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

import numpy as np
import torch

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, metavar="DIR", help="the data root to write into (convbench's --data-root)")
    parser.add_argument(
        "--folder", default="MNIST", choices=("MNIST", "FashionMNIST"), help="dataset folder under DIR (MNIST)"
    )
    args = parser.parse_args(argv)
    try:
        write_digits(args.root, args.folder)
    except ImportError:
        print("benchmarks.digits: error: needs scikit-learn (pip install scikit-learn)", file=sys.stderr)
        return 2
    print(f"wrote 1,437 training and {DIGITS_TEST} test digits to {args.root / args.folder / 'raw'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

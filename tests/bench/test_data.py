"""Real datasets through torchvision's own loaders, from tiny files written in their formats
(tests/bench/ondisk.py); a corrupted file still fails torchvision's integrity check."""

import numpy as np
import pytest
import torch

from bench.measure import data
from bench.measure.data import DatasetNotFoundError, make_batches
from tests.bench.ondisk import write_cifar10, write_mnist

CPU = torch.device("cpu")


def mnist_like(root, folder: str, count: int = 6):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=count, dtype=np.uint8)
    write_mnist(root, folder, (images, labels), (images, labels))
    return images, labels


@pytest.fixture
def cifar10(tmp_path, monkeypatch):
    """A CIFAR-10 folder: five training batches of two images and a test batch of one."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(10, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, size=10).tolist()
    write_cifar10(tmp_path, (images, labels), (images[:1], labels[:1]), monkeypatch)
    return tmp_path, images, labels


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashionmnist", "FashionMNIST")])
def test_mnist_formats_load_through_torchvision(tmp_path, name, folder):
    images, labels = mnist_like(tmp_path, folder)
    batches = make_batches(name, (1, 28, 28), 10, batch_size=4, count=2, device=CPU, root=tmp_path)
    assert len(batches) == 2
    (x0, y0), (x1, y1) = batches
    assert x0.shape == (4, 1, 28, 28) and x0.dtype == torch.float32
    # ToTensor scales bytes to [0, 1]; the second batch wraps around the 6-image dataset.
    assert torch.equal(x0[:, 0], torch.from_numpy(images[:4]).float() / 255)
    assert torch.equal(x1[:, 0], torch.from_numpy(images[[4, 5, 0, 1]]).float() / 255)
    assert y0.tolist() == labels[:4].tolist() and y1.tolist() == labels[[4, 5, 0, 1]].tolist()


def test_cifar10_loads_through_torchvision_with_its_integrity_check(cifar10):
    root, images, labels = cifar10
    batches = make_batches("cifar10", (3, 32, 32), 10, batch_size=4, count=2, device=CPU, root=root)
    # Training batches in file order: images 0-3, then 4-7.
    for index, (x, y) in enumerate(batches):
        assert torch.equal(x, torch.from_numpy(images[4 * index : 4 * index + 4]).float() / 255)
        assert y.tolist() == labels[4 * index : 4 * index + 4]


def test_a_corrupted_cifar_file_fails_the_integrity_check(cifar10):
    root, _, _ = cifar10
    path = root / "cifar-10-batches-py" / "data_batch_1"
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    with pytest.raises(DatasetNotFoundError, match="not found or corrupted"):
        data.open_dataset("cifar10", root)


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST/raw"), ("cifar10", "cifar-10-batches-py")])
def test_a_missing_dataset_names_the_path_and_is_not_downloaded(tmp_path, name, folder):
    with pytest.raises(DatasetNotFoundError) as caught:
        data.open_dataset(name, tmp_path / "nowhere")
    message = str(caught.value)
    assert str(tmp_path / "nowhere" / folder) in message and "--download" in message
    assert not (tmp_path / "nowhere").exists()


def test_synthetic_data_is_one_batch_on_the_device():
    ((x, y),) = make_batches("synthetic", (3, 5, 7), 4, batch_size=6, count=10, device=CPU)
    assert x.shape == (6, 3, 5, 7) and x.device == CPU
    assert y.shape == (6,) and 0 <= int(y.min()) and int(y.max()) < 4

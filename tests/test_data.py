"""Datasets: the embedded subset and its checksum, the full Fashion-MNIST, CIFAR-10's format, own tensors."""

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from smoothviz import data as data_mod
from smoothviz.data import DataChecksumError, augment_batch, from_tensors, load_dataset


def test_mini_is_a_stratified_real_subset():
    d = load_dataset("fashion-mnist-mini")
    assert d.x_train.shape == (10_000, 1, 28, 28) and d.x_test.shape == (2_000, 1, 28, 28)
    assert d.y_train.bincount().tolist() == [1000] * 10
    assert d.y_test.bincount().tolist() == [200] * 10
    assert d.num_classes == 10 and d.in_channels == 1
    # Normalised with Fashion-MNIST's statistics: mean ~0, std ~1 on a real subset.
    assert abs(float(d.x_train.mean())) < 0.05 and abs(float(d.x_train.std()) - 1) < 0.05


def test_corrupted_mini_gives_a_clear_checksum_error(tmp_path, monkeypatch):
    src = Path(data_mod.REPO_DATA_DIR) / data_mod.MINI_FILE
    bad = tmp_path / data_mod.MINI_FILE
    blob = bytearray(src.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    bad.write_bytes(bytes(blob))
    monkeypatch.setenv("SMOOTHVIZ_DATA_DIR", str(tmp_path))
    with pytest.raises(DataChecksumError, match="corrupted"):
        load_dataset("fashion-mnist-mini")


def test_unknown_dataset_names_the_allowed_ones():
    with pytest.raises(ValueError, match="fashion-mnist-mini"):
        load_dataset("mnist")


@pytest.mark.skipif(
    not data_mod.DEBIAN_FASHION_MNIST.is_dir(), reason="dataset-fashion-mnist not installed"
)
def test_full_fashion_mnist_from_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setenv("SMOOTHVIZ_CACHE", str(tmp_path))
    d = load_dataset("fashion-mnist")
    assert d.x_train.shape == (60_000, 1, 28, 28) and d.x_test.shape == (10_000, 1, 28, 28)
    assert d.y_train.bincount().tolist() == [6000] * 10


def test_fashion_mnist_from_a_user_folder_of_gz_files(tmp_path, monkeypatch):
    """The flat .gz layout (as Debian ships it) is read through torchvision after decompression."""
    import gzip

    monkeypatch.setenv("SMOOTHVIZ_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "fmnist"
    root.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 12)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        header_i = np.array([0x0803, n, 28, 28], dtype=">i4").tobytes()
        header_l = np.array([0x0801, n], dtype=">i4").tobytes()
        with gzip.open(root / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(header_i + images.tobytes())
        with gzip.open(root / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(header_l + labels.tobytes())
    d = load_dataset("fashion-mnist", root=root)
    assert d.x_train.shape == (30, 1, 28, 28) and d.y_test.tolist() == [i % 10 for i in range(12)]


def test_missing_fashion_mnist_never_downloads_and_says_how(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_dataset("fashion-mnist", root=tmp_path)


def _write_cifar_batch(path: Path, n: int, seed: int) -> None:
    # The tests write this file themselves, so unpickling it through torchvision is safe.
    rng = np.random.default_rng(seed)
    batch = {
        "data": rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8),
        "labels": [int(i % 10) for i in range(n)],
    }
    with open(path, "wb") as f:
        pickle.dump(batch, f)


def test_cifar10_code_path_on_a_tiny_file_in_cifar_format(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    folder = tmp_path / CIFAR10.base_folder
    folder.mkdir()
    train_list = []
    for i, (name, _) in enumerate(CIFAR10.train_list):
        _write_cifar_batch(folder / name, 4, seed=i)
        train_list.append([name, hashlib.md5((folder / name).read_bytes()).hexdigest()])
    _write_cifar_batch(folder / "test_batch", 6, seed=99)
    test_list = [["test_batch", hashlib.md5((folder / "test_batch").read_bytes()).hexdigest()]]
    with open(folder / CIFAR10.meta["filename"], "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    meta = dict(
        CIFAR10.meta, md5=hashlib.md5((folder / CIFAR10.meta["filename"]).read_bytes()).hexdigest()
    )
    # torchvision checks every file's MD5; register the sums of our tiny files.
    monkeypatch.setattr(CIFAR10, "train_list", train_list)
    monkeypatch.setattr(CIFAR10, "test_list", test_list)
    monkeypatch.setattr(CIFAR10, "meta", meta)
    d = load_dataset("cifar10", root=tmp_path)
    assert d.x_train.shape == (20, 3, 32, 32) and d.x_test.shape == (6, 3, 32, 32)
    assert d.classes[0] == "class0" and d.num_classes == 10
    assert d.y_test.tolist() == [0, 1, 2, 3, 4, 5]


def test_cifar10_missing_files_give_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="CIFAR-10 not found"):
        load_dataset("cifar10", root=tmp_path)


def test_own_tensors_are_accepted_and_checked():
    x = torch.randn(20, 3, 8, 8)
    y = torch.arange(20) % 4
    d = from_tensors(x, y, x[:8], y[:8])
    assert d.num_classes == 4 and d.in_channels == 3 and d.image_size == 8
    with pytest.raises(ValueError, match="y_train"):
        from_tensors(x, y[:5], x, y)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        from_tensors(bad, y, x, y)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        from_tensors(x, y, x, y, classes=("a", "b", "c"))
    with pytest.raises(ValueError, match="x_test images"):
        from_tensors(x, y, torch.randn(20, 1, 8, 8), y)


def test_augmentation_is_batched_reproducible_and_shape_preserving():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    a = augment_batch(x, crop_padding=2, flip=True, generator=torch.Generator().manual_seed(0))
    b = augment_batch(x, crop_padding=2, flip=True, generator=torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    assert torch.equal(augment_batch(x), x)  # nothing asked, nothing changed
    # Every output pixel is either padding (0) or a pixel of the same image.
    for i in range(2):
        assert set(a[i].unique().tolist()) <= set(x[i].unique().tolist()) | {0.0}
    flipped = augment_batch(
        x.repeat(64, 1, 1, 1), flip=True, generator=torch.Generator().manual_seed(1)
    )
    n_flipped = sum(torch.equal(f, x[0].flip(2)) for f in flipped[::2])
    assert 16 < n_flipped < 48  # about half of the 64 copies of x[0]


def test_subset_is_seeded():
    d = load_dataset("fashion-mnist-mini")
    a, b = d.subset(100, 50, seed=3), d.subset(100, 50, seed=3)
    assert torch.equal(a.y_train, b.y_train) and len(a.y_test) == 50
    with pytest.raises(ValueError, match="n_train"):
        d.subset(n_train=0)

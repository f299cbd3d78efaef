"""Datasets as tensors on the training device, and batched on-device augmentation.

Registered names:

``fashion-mnist-mini``
    The default: a stratified subset of the real Fashion-MNIST (10,000 train / 2,000 test images)
    committed in ``data/``, verified against a SHA-256 checksum on every load.
``fashion-mnist``
    The full set (60,000 / 10,000) through torchvision's reader. Found in ``root`` if given, else in
    ``$SMOOTHVIZ_FASHION_MNIST``, else in ``/usr/share/datasets/fashion-mnist`` (Debian package
    ``dataset-fashion-mnist``). Downloaded only with ``download=True``.
``cifar10``
    torchvision's CIFAR-10 reader (which checks the files' MD5 sums); downloaded only with
    ``download=True``.

``folder:PATH``
    A user's own images in ``PATH/train/<class>/`` and ``PATH/test/<class>/``
    (:mod:`smoothviz.image_folder` says how they become tensors).

A user's own tensors go through :func:`from_tensors`.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from smoothviz.image_folder import FOLDER_PREFIX, folder_path, folder_shape, read_image_folder

DATASET_NAMES = ("fashion-mnist-mini", "fashion-mnist", "cifar10")
# (in_channels, num_classes, image_size) of the registered datasets, known without loading them.
DATASET_SHAPES = {
    "fashion-mnist-mini": (1, 10, 28),
    "fashion-mnist": (1, 10, 28),
    "cifar10": (3, 10, 32),
}

REPO_DATA_DIR = Path(__file__).resolve().parent.parent / "data"
MINI_FILE = "fashion-mnist-mini.npz"
# SHA-256 of data/fashion-mnist-mini.npz as written by data/make_fashion_mnist_mini.py.
MINI_SHA256 = "d7c8bfbe194597f09bf002d84af4eba6f02f61fa3c6dbad1d2ee29d789953637"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Per-channel mean and std of the training images (pixel values in [0, 1]).
NORMALISATION = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


class DataChecksumError(RuntimeError):
    """A data file does not match its recorded checksum (corrupted or replaced)."""


@dataclass(frozen=True)
class ImageData:
    """Train and test images as normalised float32 tensors ``(N, C, H, W)`` with int64 labels."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[-1])

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    def to(self, device: str | torch.device) -> ImageData:
        """The same data on ``device`` (a no-op when it is already there)."""
        device = torch.device(device)
        if self.x_train.device == device:
            return self
        return replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )

    def subset(
        self, n_train: int | None = None, n_test: int | None = None, seed: int = 0
    ) -> ImageData:
        """A random subset (``None`` keeps a split whole); the same seed gives the same subset."""
        g = torch.Generator().manual_seed(seed)

        def take(x: torch.Tensor, y: torch.Tensor, n: int | None, what: str):
            if n is None:
                return x, y
            if not 0 < n <= len(y):
                raise ValueError(f"{what} must be in [1, {len(y)}], got {n!r}")
            idx = torch.randperm(len(y), generator=g)[:n].to(y.device)
            return x[idx], y[idx]

        x_tr, y_tr = take(self.x_train, self.y_train, n_train, "n_train")
        x_te, y_te = take(self.x_test, self.y_test, n_test, "n_test")
        return replace(self, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)


def _normalise(
    x_uint8: torch.Tensor, stats: tuple[tuple[float, ...], tuple[float, ...]]
) -> torch.Tensor:
    mean = torch.tensor(stats[0]).view(1, -1, 1, 1)
    std = torch.tensor(stats[1]).view(1, -1, 1, 1)
    return (x_uint8.float().div_(255.0) - mean) / std


def _check_images_labels(
    x: torch.Tensor, y: torch.Tensor, split: str, num_classes: int | None
) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"x_{split} and y_{split} must be torch tensors")
    if x.ndim != 4:
        raise ValueError(f"x_{split} must have shape (N, C, H, W), got {tuple(x.shape)}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(
            f"y_{split} must have shape ({len(x)},) to match x_{split}, got {tuple(y.shape)}"
        )
    if len(y) == 0:
        raise ValueError(f"x_{split} is empty")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise TypeError(f"y_{split} must hold integer class labels, got dtype {y.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError(f"x_{split} contains NaN or infinite values")
    if y.min() < 0 or (num_classes is not None and y.max() >= num_classes):
        raise ValueError(
            f"y_{split} labels must lie in [0, {num_classes}), found range "
            f"[{int(y.min())}, {int(y.max())}]"
        )


def from_tensors(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    *,
    name: str = "custom",
    classes: tuple[str, ...] | None = None,
) -> ImageData:
    """Wrap a user's own images ``(N, C, H, W)`` and integer labels; the images are used as given."""
    num_classes = len(classes) if classes is not None else None
    _check_images_labels(x_train, y_train, "train", num_classes)
    _check_images_labels(x_test, y_test, "test", num_classes)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"x_train images are {tuple(x_train.shape[1:])} but x_test images are "
            f"{tuple(x_test.shape[1:])}"
        )
    if classes is None:
        n = int(max(y_train.max(), y_test.max())) + 1
        classes = tuple(str(i) for i in range(max(n, 2)))
    return ImageData(
        name=name,
        x_train=x_train.float().contiguous(),
        y_train=y_train.long(),
        x_test=x_test.float().contiguous(),
        y_test=y_test.long(),
        classes=tuple(classes),
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_mini(root: Path | None) -> ImageData:
    path = Path(root or os.environ.get("SMOOTHVIZ_DATA_DIR", REPO_DATA_DIR)) / MINI_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"the embedded subset {path} is missing; it ships with the repository in data/"
        )
    actual = sha256_of(path)
    if actual != MINI_SHA256:
        raise DataChecksumError(
            f"{path} is corrupted: SHA-256 is {actual}, expected {MINI_SHA256}. Restore it with "
            "'git checkout -- data/' or rebuild it with data/make_fashion_mnist_mini.py"
        )
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: torch.from_numpy(z[k]) for k in ("x_train", "y_train", "x_test", "y_test")}
    stats = NORMALISATION["fashion-mnist"]
    return ImageData(
        name="fashion-mnist-mini",
        x_train=_normalise(arrays["x_train"].unsqueeze(1), stats),
        y_train=arrays["y_train"].long(),
        x_test=_normalise(arrays["x_test"].unsqueeze(1), stats),
        y_test=arrays["y_test"].long(),
        classes=FASHION_MNIST_CLASSES,
    )


def default_cache_dir() -> Path:
    return Path(os.environ.get("SMOOTHVIZ_CACHE", Path.home() / ".cache" / "smoothviz"))


def _fashion_mnist_root(root: Path | None, download: bool) -> Path:
    """A folder laid out as torchvision expects (``<root>/FashionMNIST/raw/<files>``).

    A flat folder of the four ``.gz`` files (as the Debian package ships them) is decompressed once
    into the smoothviz cache, atomically, so a crash never leaves a half-written file behind.
    """
    candidates = (
        [root]
        if root is not None
        else [
            Path(p) for p in (os.environ.get("SMOOTHVIZ_FASHION_MNIST"), DEBIAN_FASHION_MNIST) if p
        ]
    )
    for cand in candidates:
        cand = Path(cand)
        if all((cand / "FashionMNIST" / "raw" / f).is_file() for f in FASHION_MNIST_FILES):
            return cand
        if all((cand / (f + ".gz")).is_file() for f in FASHION_MNIST_FILES):
            target = default_cache_dir() / "datasets"
            raw = target / "FashionMNIST" / "raw"
            raw.mkdir(parents=True, exist_ok=True)
            for f in FASHION_MNIST_FILES:
                if (raw / f).is_file():
                    continue
                with (
                    gzip.open(cand / (f + ".gz"), "rb") as src,
                    tempfile.NamedTemporaryFile(dir=raw, delete=False) as tmp,
                ):
                    shutil.copyfileobj(src, tmp)
                os.replace(tmp.name, raw / f)
            return target
    if download:
        target = Path(root) if root is not None else default_cache_dir() / "datasets"
        return target
    where = str(root) if root is not None else f"$SMOOTHVIZ_FASHION_MNIST or {DEBIAN_FASHION_MNIST}"
    raise FileNotFoundError(
        f"Fashion-MNIST not found in {where}. Install the Debian package dataset-fashion-mnist, "
        "pass root=<folder with the four .gz files>, or pass download=True"
    )


def _load_fashion_mnist(root: Path | None, download: bool) -> ImageData:
    from torchvision.datasets import FashionMNIST

    tv_root = _fashion_mnist_root(root, download)
    train = FashionMNIST(str(tv_root), train=True, download=download)
    test = FashionMNIST(str(tv_root), train=False, download=download)
    stats = NORMALISATION["fashion-mnist"]
    return ImageData(
        name="fashion-mnist",
        x_train=_normalise(train.data.unsqueeze(1), stats),
        y_train=train.targets.long(),
        x_test=_normalise(test.data.unsqueeze(1), stats),
        y_test=test.targets.long(),
        classes=FASHION_MNIST_CLASSES,
    )


def _load_cifar10(root: Path | None, download: bool) -> ImageData:
    from torchvision.datasets import CIFAR10

    tv_root = Path(root) if root is not None else default_cache_dir() / "datasets"
    try:
        train = CIFAR10(str(tv_root), train=True, download=download)
        test = CIFAR10(str(tv_root), train=False, download=download)
    except RuntimeError as exc:
        raise FileNotFoundError(
            f"CIFAR-10 not found (or failed its MD5 check) in {tv_root}: {exc}. "
            "Pass download=True on a machine with internet, or root=<folder with cifar-10-batches-py>"
        ) from exc
    stats = NORMALISATION["cifar10"]

    def images(ds) -> torch.Tensor:  # torchvision keeps CIFAR as (N, H, W, C) uint8 numpy
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()

    return ImageData(
        name="cifar10",
        x_train=_normalise(images(train), stats),
        y_train=torch.as_tensor(train.targets).long(),
        x_test=_normalise(images(test), stats),
        y_test=torch.as_tensor(test.targets).long(),
        classes=tuple(train.classes),
    )


def _load_folder(name: str) -> ImageData:
    """A ``folder:PATH`` dataset (:mod:`smoothviz.image_folder`), normalised by its training
    split's per-channel mean and standard deviation."""
    x_train, y_train, x_test, y_test, classes = read_image_folder(name)
    pixels = x_train.float().div_(255.0)
    mean = pixels.mean(dim=(0, 2, 3))
    std = pixels.std(dim=(0, 2, 3)).clamp_min(1e-6)  # a constant channel must not divide by 0
    stats = (tuple(mean.tolist()), tuple(std.tolist()))
    return ImageData(
        name=f"{FOLDER_PREFIX}{folder_path(name)}",
        x_train=_normalise(x_train, stats),
        y_train=y_train,
        x_test=_normalise(x_test, stats),
        y_test=y_test,
        classes=classes,
    )


def load_dataset(
    name: str = "fashion-mnist-mini",
    *,
    root: str | Path | None = None,
    download: bool = False,
    device: str | torch.device = "cpu",
) -> ImageData:
    """Load a registered dataset into tensors on ``device``.

    Parameters
    ----------
    name
        One of ``"fashion-mnist-mini"`` (default, embedded), ``"fashion-mnist"``, ``"cifar10"``,
        or ``"folder:PATH"`` (a folder of images, :mod:`smoothviz.image_folder`).
    root
        Folder to read from instead of the default place.
    download
        Allow torchvision to download the files (needs internet). Never done unless asked.
    device
        Where the tensors live; training and augmentation then run there without copies.
    """
    if isinstance(name, str) and name.startswith(FOLDER_PREFIX):
        return _load_folder(name).to(device)
    if name not in DATASET_NAMES:
        raise ValueError(
            f"dataset: unknown dataset {name!r}; allowed: {list(DATASET_NAMES)} or 'folder:PATH'"
        )
    if not isinstance(download, bool):
        raise TypeError(f"download must be True or False, got {download!r}")
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a folder path (str or Path) or None, got {root!r}")
    root_path = Path(root).expanduser() if root is not None else None
    if name == "fashion-mnist-mini":
        data = _load_mini(root_path)
    elif name == "fashion-mnist":
        data = _load_fashion_mnist(root_path, download)
    else:
        data = _load_cifar10(root_path, download)
    return data.to(device)


def dataset_shape(name: str) -> tuple[int, int, int]:
    """``(in_channels, num_classes, image_size)`` of a dataset without loading its images (for a
    ``folder:PATH`` dataset: its class folders and the images' headers)."""
    if isinstance(name, str) and name.startswith(FOLDER_PREFIX):
        return folder_shape(name)
    if name not in DATASET_SHAPES:
        raise ValueError(
            f"dataset: unknown dataset {name!r}; allowed: {list(DATASET_NAMES)} or 'folder:PATH'"
        )
    return DATASET_SHAPES[name]


def augment_batch(
    x: torch.Tensor,
    *,
    crop_padding: int = 0,
    flip: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, for a whole batch at once.

    Runs on ``x``'s device with no per-sample Python; ``generator`` (on the same device) makes it
    reproducible.
    """
    if crop_padding < 0:
        raise ValueError(f"crop_padding must be >= 0, got {crop_padding}")
    n, _, h, w = x.shape
    if crop_padding > 0:
        p = crop_padding
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        off = torch.randint(0, 2 * p + 1, (2, n), device=x.device, generator=generator)
        rows = (off[0][:, None] + torch.arange(h, device=x.device))[:, :, None]  # (n, h, 1)
        cols = (off[1][:, None] + torch.arange(w, device=x.device))[:, None, :]  # (n, 1, w)
        batch = torch.arange(n, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    if flip:
        mask = torch.rand(n, device=x.device, generator=generator) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x.contiguous()


def fashion_mnist_available() -> bool:
    """Whether the full Fashion-MNIST is on disk where :func:`load_dataset` looks by default."""
    try:
        _fashion_mnist_root(None, download=False)
    except FileNotFoundError:
        return False
    return True

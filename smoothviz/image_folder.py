"""A dataset from a folder of images: ``folder:PATH`` with ``train/`` and ``test/`` subfolders.

The layout is torchvision's :class:`~torchvision.datasets.ImageFolder`, once per split::

    PATH/train/<class name>/<image files>
    PATH/test/<class name>/<image files>

Both splits must hold the same class folders; the classes are their names in sorted order (label
0 is the first), as ``ImageFolder`` numbers them. The images become tensors as the built-in
datasets are:

- **channels**: 1 when every training and test image is single-channel (PIL modes ``1``, ``L``,
  ``I``, ``I;16``, ``F``), else 3 (every image converted to RGB; an alpha channel is dropped);
- **size**: ``S x S`` where ``S`` is the shorter side of the first training image (the first file
  of the first class); an image of another size is resized so its shorter side is ``S``
  (bilinear, antialiased) and centre-cropped to ``S x S``;
- **normalisation** (by :func:`smoothviz.data.load_dataset`): pixel values in [0, 1], then the
  training split's per-channel mean and standard deviation, computed from the images (as
  :data:`smoothviz.data.NORMALISATION` holds them for the built-in sets).

A model for the folder is built with ``num_classes`` = the number of class folders; a checkpoint
whose classifier has another number of outputs is refused by :mod:`smoothviz.checkpoints`, naming
the classifier's key, both shapes and the folder's class count.
"""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["FOLDER_PREFIX", "folder_path", "folder_shape", "read_image_folder"]

FOLDER_PREFIX = "folder:"

SPLITS = ("train", "test")
_ONE_CHANNEL_MODES = frozenset({"1", "L", "I", "I;16", "F"})


def folder_path(dataset: str) -> Path:
    """The folder of a ``folder:PATH`` dataset name, with ``~`` expanded and made absolute."""
    if not dataset.startswith(FOLDER_PREFIX) or not dataset[len(FOLDER_PREFIX) :].strip():
        raise ValueError(f"dataset: expected 'folder:PATH', got {dataset!r}")
    return Path(dataset[len(FOLDER_PREFIX) :].strip()).expanduser().resolve()


def _split_files(root: Path) -> dict[str, tuple[list[str], list[tuple[Path, int]]]]:
    """``{split: (classes, [(file, label), ...])}``; raises naming what is missing."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    if not root.is_dir():
        raise FileNotFoundError(f"dataset 'folder:{root}': no such folder")
    missing = [s for s in SPLITS if not (root / s).is_dir()]
    if missing:
        raise ValueError(
            f"dataset 'folder:{root}': missing subfolder(s) {[s + '/' for s in missing]}; "
            "expected train/ and test/, each with one folder of images per class"
        )
    out = {}
    for split in SPLITS:
        try:
            classes, class_to_idx = find_classes(str(root / split))
            samples = make_dataset(str(root / split), class_to_idx, IMG_EXTENSIONS)
        except FileNotFoundError as exc:  # no class folders, or a class folder without images
            raise ValueError(f"dataset 'folder:{root}': {split}/: {exc}") from None
        out[split] = (classes, [(Path(p), label) for p, label in samples])
    if out["train"][0] != out["test"][0]:
        raise ValueError(
            f"dataset 'folder:{root}': train/ and test/ must hold the same class folders; "
            f"train/ has {out['train'][0]}, test/ has {out['test'][0]}"
        )
    if len(out["train"][0]) < 2:
        raise ValueError(
            f"dataset 'folder:{root}': at least 2 class folders are needed, found {out['train'][0]}"
        )
    return out


def folder_shape(dataset: str) -> tuple[int, int, int]:
    """``(in_channels, num_classes, image_size)`` of a ``folder:PATH`` dataset, reading only the
    image headers (what a model for it is built with)."""
    from PIL import Image

    files = _split_files(folder_path(dataset))
    modes, first = set(), None
    for split in SPLITS:
        for path, _ in files[split][1]:
            with Image.open(path) as img:
                modes.add(img.mode)
                first = first or img.size
    channels = 1 if modes <= _ONE_CHANNEL_MODES else 3
    return channels, len(files["train"][0]), min(first)


def _to_tensor(path: Path, channels: int, size: int) -> torch.Tensor:
    """One image as uint8 ``(C, size, size)``."""
    from PIL import Image
    from torchvision.transforms import functional as TF

    with Image.open(path) as img:
        if channels == 1:
            img = img.convert("L") if img.mode != "L" else img
        else:
            img = img.convert("RGB")
        x = TF.pil_to_tensor(img)
    if tuple(x.shape[1:]) != (size, size):
        x = TF.center_crop(TF.resize(x, size, antialias=True), [size, size])
    return x


def read_image_folder(
    dataset: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """Every image of a ``folder:PATH`` dataset as uint8 tensors ``(N, C, S, S)`` with int64
    labels: ``(x_train, y_train, x_test, y_test, classes)`` (:func:`smoothviz.data.load_dataset`
    normalises them into an :class:`~smoothviz.data.ImageData`).

    Raises
    ------
    FileNotFoundError
        When the folder does not exist.
    ValueError
        When ``train/`` or ``test/`` is missing, holds no class folders or images, or the two
        splits' class folders differ.
    """
    files = _split_files(folder_path(dataset))
    channels, _, size = folder_shape(dataset)
    out = []
    for split in SPLITS:
        samples = files[split][1]
        out.append(torch.stack([_to_tensor(p, channels, size) for p, _ in samples]))
        out.append(torch.tensor([label for _, label in samples], dtype=torch.long))
    return (*out, tuple(files["train"][0]))

"""Make data/fashion-mnist-mini.npz: a stratified subset of the real Fashion-MNIST.

1,000 training and 200 test images per class (10,000 / 2,000 in all), drawn with a fixed seed from the
full set (Debian package dataset-fashion-mnist, or --root). Stored as uint8 arrays in a compressed npz
(no pickled objects). Prints the SHA-256 that smoothviz.data.MINI_SHA256 must hold.

    .venv/bin/python data/make_fashion_mnist_mini.py [--root /usr/share/datasets/fashion-mnist]
"""

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from smoothviz.data import _fashion_mnist_root, sha256_of

PER_CLASS = {"train": 1000, "test": 200}
SEED = 20261124


def stratified(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    idx = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)]
    return np.sort(np.concatenate(idx))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--root", type=Path, default=None, help="folder with the full Fashion-MNIST"
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "fashion-mnist-mini.npz"
    )
    args = parser.parse_args()

    from torchvision.datasets import FashionMNIST

    root = _fashion_mnist_root(args.root, download=False)
    rng = np.random.default_rng(SEED)
    arrays = {}
    for split in ("train", "test"):
        ds = FashionMNIST(str(root), train=split == "train", download=False)
        x, y = ds.data.numpy(), ds.targets.numpy()
        keep = stratified(y, PER_CLASS[split], rng)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = (
            x[keep].astype(np.uint8),
            y[keep].astype(np.uint8),
        )
    with tempfile.NamedTemporaryFile(dir=args.out.parent, suffix=".npz", delete=False) as tmp:
        np.savez_compressed(tmp, **arrays)
    os.chmod(tmp.name, 0o644)  # NamedTemporaryFile creates 0600
    os.replace(tmp.name, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")
    print(f"sha256 {sha256_of(args.out)}")


if __name__ == "__main__":
    main()

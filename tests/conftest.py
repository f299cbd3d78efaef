"""Shared fixtures: small real data, a temporary checkpoint cache, CPU threads kept in check."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
# A fixed thread count: smoothviz would otherwise share the cores with every other smoothviz
# process running on the machine (smoothviz.threads), and results that depend on float sums
# could differ from one run to the next. tests/test_threads.py clears it where it tests sharing.
os.environ.setdefault("SMOOTHVIZ_THREADS", str(torch.get_num_threads()))


@pytest.fixture(scope="session")
def mini_data():
    """The embedded Fashion-MNIST subset, cut to 2,000 train / 500 test images for speed."""
    from smoothviz.data import load_dataset

    return load_dataset("fashion-mnist-mini").subset(n_train=2000, n_test=500, seed=0)


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch):
    """A private checkpoint cache so tests never see each other's (or the user's) checkpoints."""
    path = tmp_path / "cache"
    monkeypatch.setenv("SMOOTHVIZ_CACHE", str(path))
    return path


# --- compression tests ------------------------------------------------------------------------
ZOO_ARCHS = ("resnet18", "vgg11_bn", "mobilenet_v2")


@pytest.fixture(scope="session")
def zoo():
    """torchvision resnet18, vgg11_bn, mobilenet_v2 with random weights (never downloaded).

    Their BatchNorm statistics are re-estimated on random 32x32 inputs so that activations have a
    realistic scale (with the default statistics mobilenet_v2's output is ~1e-10).
    """
    from smoothviz.measure import bn_reestimate
    from smoothviz.models import build_model

    torch.manual_seed(0)
    x = torch.randn(16, 3, 32, 32)
    out = {}
    for arch in ZOO_ARCHS:
        model = build_model(f"torchvision:{arch}", in_channels=3, num_classes=10)
        out[arch] = bn_reestimate(model, x).eval()
    return out


@pytest.fixture(scope="session")
def trained_cnn(mini_data, tmp_path_factory):
    """A small CNN trained for a few epochs on the mini data through smoothviz.training (cached)."""
    from smoothviz.config import TrainConfig
    from smoothviz.training import train

    cfg = TrainConfig(model="cnn", width=8, epochs=3, seed=0)
    run = train(cfg, data=mini_data, cache_dir=tmp_path_factory.mktemp("cache"), progress=False)
    return run.model.cpu().eval()

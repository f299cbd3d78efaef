"""Frozen, validated configuration of a training run, and its hash (the checkpoint cache key)."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

from smoothviz._validation import check_choice, check_int, check_number
from smoothviz.data import DATASET_NAMES, FOLDER_PREFIX
from smoothviz.models import MODEL_NAMES, TORCHVISION_PREFIX
from smoothviz.validated import ConfigError, Validated, documented

__all__ = ["DEVICES", "SCHEDULES", "ConfigError", "TrainConfig"]

SCHEDULES = ("onecycle", "cosine")
DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class TrainConfig(Validated):
    """Everything that determines a trained model. Two equal configs give the same checkpoint.

    Regulariser weights are 0 to switch a term off. ``nuclear_every=1`` is the exact per-step nuclear
    norm; ``k > 1`` refreshes its subgradient ``U Vᵀ`` every ``k`` steps (amortised). ``proximal`` is
    the Alvarez & Salzmann singular-value soft-threshold, applied after the optimiser step every
    ``proximal_every`` steps. ``layers=None`` regularises every Conv2d/Linear except the first and the
    classifier. Each field's help text (in its metadata) is the ``train`` command's help.
    """

    dataset: str = documented(
        "fashion-mnist-mini | fashion-mnist | cifar10 | folder:PATH", default="fashion-mnist-mini"
    )
    data_root: str | None = documented(
        "folder to read the dataset from (None: its default place)", default=None
    )
    model: str = documented("resnet18 | cnn | mlp | vit | torchvision:<arch>", default="cnn")
    width: int | None = documented("base width (None: the model's default)", default=None)
    epochs: int = documented("training epochs", default=8)
    batch_size: int = documented("images per optimiser step", default=128)
    lr: float = documented("peak learning rate", default=0.05)
    momentum: float = documented("Nesterov momentum", default=0.9)
    weight_decay: float = documented("L2 weight decay on conv/linear weights", default=5e-4)
    label_smoothing: float = documented("cross-entropy label smoothing", default=0.1)
    schedule: str = documented("onecycle | cosine", default="onecycle")
    nuclear: float = documented("weight of the nuclear-norm penalty", default=0.0)
    nuclear_every: int = documented(
        "1: exact per step; k > 1: subgradient refreshed every k steps", default=1
    )
    first_order: float = documented("weight of the first-order smoothness penalty", default=0.0)
    second_order: float = documented("weight of the second-order smoothness penalty", default=0.0)
    proximal: float = documented(
        "proximal low-rank (singular-value soft-threshold) strength", default=0.0
    )
    proximal_every: int = documented("apply the proximal step every k optimiser steps", default=1)
    layers: tuple[str, ...] | None = documented(
        "regularised layers (None: all but first and last)", default=None
    )
    crop_padding: int = documented("random-crop padding in pixels (0: no crop)", default=2)
    flip: bool = documented("random horizontal flips", default=True)
    train_subset: int | None = documented(
        "use only this many training images (None: all)", default=None
    )
    seed: int = documented("seed for initialisation, data order and augmentation", default=0)
    device: str = documented("auto | cpu | cuda | mps | cuda:N", default="auto")
    compile: bool = documented("torch.compile the model (CUDA only)", default=False)

    def validate(self) -> None:
        """Check every value's range; the first bad one raises ConfigError naming it."""
        if self.dataset.startswith(FOLDER_PREFIX):  # a folder of images (smoothviz.image_folder)
            _require(
                bool(self.dataset[len(FOLDER_PREFIX) :].strip()),
                "dataset",
                self.dataset,
                "'folder:PATH' with a folder after the colon",
            )
        else:
            check_choice("dataset", self.dataset, DATASET_NAMES, error=ConfigError)
        _require(
            self.model in MODEL_NAMES
            or (self.model.startswith(TORCHVISION_PREFIX) and len(self.model) > 12),
            "model",
            self.model,
            f"one of {list(MODEL_NAMES)} or 'torchvision:<architecture>'",
        )
        check_int("width", self.width, low=1, allow_none=True, error=ConfigError)
        check_int("epochs", self.epochs, low=1, error=ConfigError)
        check_int("batch_size", self.batch_size, low=1, error=ConfigError)
        for name in ("lr", "weight_decay", "nuclear", "first_order", "second_order", "proximal"):
            value = getattr(self, name)
            _require(math.isfinite(value) and value >= 0, name, value, "a finite number >= 0")
        _require(self.lr > 0, "lr", self.lr, "a finite number > 0")
        for name in ("momentum", "label_smoothing"):
            check_number(
                name, getattr(self, name), low=0, high=1, high_open=True, error=ConfigError
            )
        check_choice("schedule", self.schedule, SCHEDULES, error=ConfigError)
        check_int("nuclear_every", self.nuclear_every, low=1, error=ConfigError)
        check_int("proximal_every", self.proximal_every, low=1, error=ConfigError)
        _require(
            self.layers is None or len(self.layers) > 0,
            "layers",
            self.layers,
            "None or a non-empty list of layer names",
        )
        check_int("crop_padding", self.crop_padding, low=0, high=16, error=ConfigError)
        check_int("train_subset", self.train_subset, low=1, allow_none=True, error=ConfigError)
        check_int("seed", self.seed, low=0, error=ConfigError)
        _require(
            self.device in DEVICES
            or (self.device.startswith("cuda:") and self.device[5:].isdigit()),
            "device",
            self.device,
            f"one of {list(DEVICES)} or 'cuda:N'",
        )

    def config_hash(self) -> str:
        """Stable 16-hex-digit hash of every field; the checkpoint cache key."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _require(ok: bool, name: str, value: object, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{name} must be {allowed}, got {value!r}")

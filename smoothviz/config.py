"""Frozen, validated configuration of a training run, and its hash (the checkpoint cache key)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
from dataclasses import dataclass, fields
from typing import Any, Union, get_args, get_origin, get_type_hints

from smoothviz.data import DATASET_NAMES
from smoothviz.models import MODEL_NAMES, TORCHVISION_PREFIX

SCHEDULES = ("onecycle", "cosine")
DEVICES = ("auto", "cpu", "cuda", "mps")


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the field and what is allowed."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained model. Two equal configs give the same checkpoint.

    Regulariser weights are 0 to switch a term off. ``nuclear_every=1`` is the exact per-step nuclear
    norm; ``k > 1`` refreshes its subgradient ``U Vᵀ`` every ``k`` steps (amortised). ``proximal`` is
    the Alvarez & Salzmann singular-value soft-threshold, applied after the optimiser step every
    ``proximal_every`` steps. ``layers=None`` regularises every Conv2d/Linear except the first and the
    classifier.
    """

    dataset: str = "fashion-mnist-mini"  # fashion-mnist-mini | fashion-mnist | cifar10
    data_root: str | None = None  # folder to read the dataset from (None: its default place)
    model: str = "cnn"  # resnet18 | cnn | mlp | torchvision:<arch>
    width: int | None = None  # base width (None: the model's default)
    epochs: int = 8  # training epochs
    batch_size: int = 128  # images per optimiser step
    lr: float = 0.05  # peak learning rate
    momentum: float = 0.9  # Nesterov momentum
    weight_decay: float = 5e-4  # L2 weight decay on conv/linear weights
    label_smoothing: float = 0.1  # cross-entropy label smoothing
    schedule: str = "onecycle"  # onecycle | cosine
    nuclear: float = 0.0  # weight of the nuclear-norm penalty
    nuclear_every: int = 1  # 1: exact per step; k > 1: subgradient refreshed every k steps
    first_order: float = 0.0  # weight of the first-order smoothness penalty
    second_order: float = 0.0  # weight of the second-order smoothness penalty
    proximal: float = 0.0  # proximal low-rank (singular-value soft-threshold) strength
    proximal_every: int = 1  # apply the proximal step every k optimiser steps
    layers: tuple[str, ...] | None = None  # regularised layers (None: all but first and last)
    crop_padding: int = 2  # random-crop padding in pixels (0: no crop)
    flip: bool = True  # random horizontal flips
    train_subset: int | None = None  # use only this many training images (None: all)
    seed: int = 0  # seed for initialisation, data order and augmentation
    device: str = "auto"  # auto | cpu | cuda | mps | cuda:N
    compile: bool = False  # torch.compile the model (CUDA only)

    def __post_init__(self) -> None:
        if isinstance(self.layers, list):  # accept a list, store a hashable tuple
            object.__setattr__(self, "layers", tuple(self.layers))
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["layers"] is not None:
            d["layers"] = list(d["layers"])
        return d

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a plain dict (JSON, notebook parameters); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown TrainConfig field(s) {unknown}; allowed: {sorted(known)}")
        return cls(**values)

    def config_hash(self) -> str:
        """Stable 16-hex-digit hash of every field; the checkpoint cache key."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def _check_type(name: str, value: Any, annotation: Any) -> None:
    """Raise ConfigError unless ``value`` fits the annotation (bool is not an int here)."""
    is_union = get_origin(annotation) in (Union, types.UnionType)
    options = get_args(annotation) if is_union else (annotation,)
    for opt in options:
        if opt is type(None) and value is None:
            return
        if opt is bool and isinstance(value, bool):
            return
        if opt is int and isinstance(value, int) and not isinstance(value, bool):
            return
        if opt is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return
        if opt is str and isinstance(value, str):
            return
        if (
            get_origin(opt) is tuple
            and isinstance(value, tuple)
            and all(isinstance(v, str) for v in value)
        ):
            return
    allowed = " or ".join(
        getattr(o, "__name__", str(o)).replace("NoneType", "None") for o in options
    )
    raise ConfigError(f"{name} must be {allowed}, got {value!r} ({type(value).__name__})")


def _require(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{name} must be {allowed}, got {value!r}")


def validate(cfg: TrainConfig) -> None:
    """Check every field; the first bad one raises ConfigError naming it and what is allowed."""
    hints = get_type_hints(TrainConfig)
    for f in fields(cfg):
        _check_type(f.name, getattr(cfg, f.name), hints[f.name])
    _require(cfg.dataset in DATASET_NAMES, "dataset", cfg.dataset, f"one of {list(DATASET_NAMES)}")
    _require(
        cfg.model in MODEL_NAMES
        or (cfg.model.startswith(TORCHVISION_PREFIX) and len(cfg.model) > 12),
        "model",
        cfg.model,
        f"one of {list(MODEL_NAMES)} or 'torchvision:<architecture>'",
    )
    _require(cfg.width is None or cfg.width >= 1, "width", cfg.width, "None or an int >= 1")
    _require(cfg.epochs >= 1, "epochs", cfg.epochs, "an int >= 1")
    _require(cfg.batch_size >= 1, "batch_size", cfg.batch_size, "an int >= 1")
    for name in ("lr", "weight_decay", "nuclear", "first_order", "second_order", "proximal"):
        value = getattr(cfg, name)
        _require(math.isfinite(value) and value >= 0, name, value, "a finite number >= 0")
    _require(cfg.lr > 0, "lr", cfg.lr, "a finite number > 0")
    _require(0 <= cfg.momentum < 1, "momentum", cfg.momentum, "a number in [0, 1)")
    _require(
        0 <= cfg.label_smoothing < 1, "label_smoothing", cfg.label_smoothing, "a number in [0, 1)"
    )
    _require(cfg.schedule in SCHEDULES, "schedule", cfg.schedule, f"one of {list(SCHEDULES)}")
    _require(cfg.nuclear_every >= 1, "nuclear_every", cfg.nuclear_every, "an int >= 1")
    _require(cfg.proximal_every >= 1, "proximal_every", cfg.proximal_every, "an int >= 1")
    _require(
        cfg.layers is None or len(cfg.layers) > 0,
        "layers",
        cfg.layers,
        "None or a non-empty list of layer names",
    )
    _require(0 <= cfg.crop_padding <= 16, "crop_padding", cfg.crop_padding, "an int in [0, 16]")
    _require(
        cfg.train_subset is None or cfg.train_subset >= 1,
        "train_subset",
        cfg.train_subset,
        "None or an int >= 1",
    )
    _require(cfg.seed >= 0, "seed", cfg.seed, "an int >= 0")
    _require(
        cfg.device in DEVICES or (cfg.device.startswith("cuda:") and cfg.device[5:].isdigit()),
        "device",
        cfg.device,
        f"one of {list(DEVICES)} or 'cuda:N'",
    )


def field_help() -> dict[str, str]:
    """Each TrainConfig field's trailing comment in this file (the one place it is documented)."""
    import inspect
    import re

    docs = {}
    for line in inspect.getsource(TrainConfig).splitlines():
        m = re.match(r"\s+(\w+): [^=]+= .*?#\s*(.+)$", line)
        if m:
            docs[m.group(1)] = m.group(2).strip()
    return docs

"""Your own trained models in the report: state_dict checkpoints, loaded safely and checked.

The report and the notebooks compare two models named ``baseline`` and ``smooth``. Instead of
training them, they can load them: ``checkpoints={"baseline": PATH, "smooth": PATH}`` (the
notebooks' parameter, ``run_report(models=...)``, ``python -m smoothviz report --checkpoint
baseline=PATH``). Each file is a ``state_dict`` saved with ``torch.save(model.state_dict(), PATH)``
for a model the package builds (:func:`smoothviz.models.build_model`: ``cnn``, ``resnet18``,
``mlp`` or ``torchvision:<arch>``) with the dataset's input channels and classes.

Every check happens before any notebook runs, and every error names the value:

- a name other than ``baseline``/``smooth``, or only one of them (the comparison needs two models;
  the same file given twice compares a model with itself);
- a missing file;
- a file ``torch.load(..., weights_only=True)`` refuses (a pickled whole model, any object beyond
  tensors and plain containers): it is never unpickled; the message says to save
  ``model.state_dict()``;
- a state_dict that does not fit the model: the first key whose shape differs, with both shapes,
  and the missing and unexpected keys.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from smoothviz.atomic import atomic_torch_save
from smoothviz.config import ConfigError

__all__ = [
    "CHECKPOINT_NAMES",
    "check_checkpoint_names",
    "check_state_dict",
    "checkpoint_table",
    "load_checkpoint",
    "load_state_dict",
    "save_models",
]

CHECKPOINT_NAMES = ("baseline", "smooth")  # the two models every notebook compares
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")  # common {"state_dict": ...} wrappers
_LISTED = 5  # keys listed in a message before "and N more"


def _few(keys: list[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:_LISTED])
    return shown + (f" and {len(keys) - _LISTED} more" if len(keys) > _LISTED else "")


def check_checkpoint_names(checkpoints: Mapping[str, Any], option: str = "checkpoints") -> None:
    """Raise ConfigError unless ``checkpoints`` names exactly ``baseline`` and ``smooth``."""
    if not isinstance(checkpoints, Mapping):
        raise ConfigError(
            f"{option} must map the names {list(CHECKPOINT_NAMES)} to checkpoint files, "
            f"got {checkpoints!r}"
        )
    unknown = [name for name in checkpoints if name not in CHECKPOINT_NAMES]
    if unknown:
        raise ConfigError(
            f"{option}: unknown model name(s) {unknown}; the report compares two models, "
            f"named {list(CHECKPOINT_NAMES)}"
        )
    missing = [name for name in CHECKPOINT_NAMES if name not in checkpoints]
    if missing:
        raise ConfigError(
            f"{option}: {missing[0]!r} is missing (given: {list(checkpoints)}); the report "
            f"compares two models, {list(CHECKPOINT_NAMES)}: give both (the same file for both "
            "analyses one model, and every comparison then shows no difference)"
        )


def load_state_dict(
    path: str | os.PathLike, *, name: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """The tensors of a state_dict file, loaded with ``weights_only=True`` (never unpickled).

    A ``{"state_dict": ...}`` (or ``model_state_dict``, ``model``) wrapper whose other entries are
    plain values is unwrapped.

    Raises
    ------
    ConfigError
        When the file is missing, ``weights_only=True`` refuses it (a pickled model), or it holds
        something other than a ``{name: tensor}`` dict; the message names ``name`` and the path.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"checkpoint {name!r}: no file at {str(path)!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # an unsafe or unreadable file: refused, never unpickled
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"checkpoint {name!r} ({path}) was refused by torch.load(weights_only=True), which "
            "loads only tensors and plain containers (a pickled whole model is refused): save the "
            f"weights with torch.save(model.state_dict(), PATH). torch said: {first}"
        ) from None
    if isinstance(state, Mapping) and not all(isinstance(v, torch.Tensor) for v in state.values()):
        inner = [k for k in _WRAPPER_KEYS if isinstance(state.get(k), Mapping)]
        if inner:
            state = state[inner[0]]
    if not isinstance(state, Mapping) or not state:
        raise ConfigError(
            f"checkpoint {name!r} ({path}) holds {type(state).__name__}, not a state_dict: save "
            "the weights with torch.save(model.state_dict(), PATH)"
        )
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ConfigError(
            f"checkpoint {name!r} ({path}) is not a state_dict: entries {_few(bad)} are not "
            "tensors; save the weights with torch.save(model.state_dict(), PATH)"
        )
    return dict(state)


def check_state_dict(
    model: nn.Module, state: Mapping[str, torch.Tensor], *, name: str = "checkpoint", hint: str = ""
) -> None:
    """Raise ConfigError unless ``state`` has exactly ``model``'s keys and shapes.

    The message names the first key (in the model's order) whose shape differs, with both
    shapes, then the missing and unexpected keys; ``hint`` is appended (e.g. the model and data
    the model was built for).
    """
    expected = model.state_dict()
    wrong = [
        f"{k!r} is {tuple(state[k].shape)} in the file but {tuple(v.shape)} in the model"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if not (wrong or missing or unexpected):
        return
    parts = []
    if wrong:
        parts.append(
            f"first mismatched key {wrong[0]}"
            + (f" ({len(wrong)} in all)" if len(wrong) > 1 else "")
        )
    if missing:
        parts.append(f"missing key(s) {_few(missing)}")
    if unexpected:
        parts.append(f"unexpected key(s) {_few(unexpected)}")
        if all(k.startswith("module.") for k in unexpected):
            parts.append(
                "the keys start with 'module.' (saved from a DataParallel/DDP wrapper): save "
                "model.module.state_dict()"
            )
    raise ConfigError(
        f"checkpoint {name!r} does not match the model: "
        + "; ".join(parts)
        + (f" ({hint})" if hint else "")
    )


def load_checkpoint(
    path: str | os.PathLike,
    model: str,
    in_channels: int,
    num_classes: int,
    *,
    width: int | None = None,
    image_size: int = 28,
    name: str = "checkpoint",
) -> nn.Module:
    """Build ``model`` (:func:`~smoothviz.models.build_model`) and load the state_dict at ``path``.

    Returns the model in eval mode on the CPU. Raises ConfigError as :func:`load_state_dict` and
    :func:`check_state_dict` say, the hint naming the model, its input channels and classes.
    """
    from smoothviz.models import build_model

    state = load_state_dict(path, name=name)
    net = build_model(model, in_channels, num_classes, width=width, image_size=image_size)
    width_words = "" if width is None else f", width {width}"
    check_state_dict(
        net,
        state,
        name=name,
        hint=f"model {model!r}{width_words} built for {in_channels} input channel(s), "
        f"{num_classes} classes, {image_size}x{image_size} images",
    )
    net.load_state_dict(state)
    return net.eval()


def save_models(models: Mapping[str, nn.Module], folder: str | os.PathLike) -> dict[str, str]:
    """Save in-memory models' state_dicts as ``<folder>/<name>.pt`` (atomically) for papermill.

    Returns ``{name: absolute path}``, what the notebooks' ``checkpoints`` parameter takes.
    """
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, module in models.items():
        state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        out[name] = str(atomic_torch_save(folder / f"{name}.pt", state))
    return out


def checkpoint_table(runs: Mapping[int, Mapping[str, Any]]) -> pd.DataFrame:
    """Notebook 01's table for loaded checkpoints: one row per model with its file, parameters
    and test accuracy and loss (``runs``: what ``NotebookParams.train_seed_runs`` returns)."""
    from smoothviz.measure import count_params

    rows = []
    for _, named in runs.items():
        for name, run in named.items():
            last = run.history.iloc[-1]
            rows.append(
                {
                    "training": name,
                    "checkpoint": str(run.checkpoint),
                    "parameters": count_params(run.model),
                    "test_acc": float(last["test_acc"]),
                    "test_loss": float(last["test_loss"]),
                }
            )
    return pd.DataFrame(rows)


def checkpoint_runs(
    models: Mapping[str, nn.Module],
    data: Any,
    configs: Mapping[str, Any],
    checkpoints: Mapping[str, str],
) -> dict:
    """Loaded models as ``{name: TrainedRun}``: each history one row (epoch 0, nothing trained)
    with the model's accuracy and loss on ``data``'s test images; each ``checkpoint`` the file,
    ``config`` the notebook's training config (which did not make the model: it is there because
    :class:`~smoothviz.training.TrainedRun` holds one)."""
    from smoothviz.measure import evaluate
    from smoothviz.training import TrainedRun

    runs = {}
    for name, model in models.items():
        scores = evaluate(model, data)
        history = pd.DataFrame(
            [{"epoch": 0, "test_loss": scores["loss"], "test_acc": scores["accuracy"]}]
        )
        path = Path(checkpoints[name])
        runs[name] = TrainedRun(model, history, configs[name], path, from_cache=True)
    return runs

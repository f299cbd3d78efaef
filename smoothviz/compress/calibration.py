"""Calibration inputs: the training images on which data-aware methods measure activations.

Every method that looks at data (the interpolative decomposition, data-aware SVD, activation-based
channel importance, measured sensitivity) validates its calibration batch here, before any work, so
that the same bad input gets the same clear error whichever method receives it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


def check_calibration(
    model: nn.Module, calibration: object, name: str = "calibration"
) -> torch.Tensor:
    """Return ``calibration`` if it is a finite float tensor of inputs that fits ``model``.

    Parameters
    ----------
    model
        The network the inputs are for (its first Conv2d fixes the channel count).
    calibration
        Training inputs ``(N, ...)`` with ``N >= 1``; ``(N, C, H, W)`` for a convolutional model.
    name
        The parameter's name, used in the error messages.

    Raises
    ------
    TypeError
        If it is not a tensor.
    ValueError
        If it is empty, not floating point, of the wrong shape, or holds NaN/inf.
    """
    if not isinstance(calibration, torch.Tensor):
        raise TypeError(
            f"{name} must be a tensor of inputs (N, ...), got {type(calibration).__name__}"
        )
    if calibration.ndim < 2 or calibration.shape[0] < 1 or not calibration.is_floating_point():
        raise ValueError(
            f"{name} must be a float tensor (N, ...) with N >= 1, got shape "
            f"{tuple(calibration.shape)} dtype {calibration.dtype}"
        )
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)
    if isinstance(first, nn.Conv2d) and (
        calibration.ndim != 4 or calibration.shape[1] != first.in_channels
    ):
        raise ValueError(
            f"{name} must have shape (N, {first.in_channels}, H, W) for this model, got "
            f"{tuple(calibration.shape)}"
        )
    if not torch.isfinite(calibration).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return calibration


def fingerprint(x: torch.Tensor) -> str:
    """A short hash of a tensor's shape, dtype and values (the cache key of a calibration batch)."""
    h = hashlib.sha1(f"{tuple(x.shape)}{x.dtype}".encode())
    h.update(x.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def run_calibration(
    model: nn.Module,
    calibration: torch.Tensor,
    handles: Sequence[RemovableHandle],
    batch_size: int,
    before_batch: Callable[[], None] | None = None,
) -> None:
    """Forward ``calibration`` through ``model`` in eval mode, without gradients, in batches, so
    that the hooks behind ``handles`` record what they need.

    The hooks are removed and the model's train/eval mode restored however the run ends; a forward
    pass that fails on these inputs raises ValueError naming their shape.
    """
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            for start in range(0, len(calibration), batch_size):
                if before_batch is not None:
                    before_batch()
                model(calibration[start : start + batch_size].to(device))
    except RuntimeError as exc:
        raise ValueError(
            f"calibration of shape {tuple(calibration.shape)} does not fit the model: {exc}"
        ) from exc
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

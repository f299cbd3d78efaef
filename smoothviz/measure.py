"""What a (compressed) model costs and how well it does: accuracy, parameters, FLOPs, latency.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (it counts matrix multiplications and
convolutions, 2 FLOPs per multiply-add; element-wise ops, BatchNorm and pooling are not counted).
Latency is measured, never estimated: the median over repeated timed forward passes after warm-up,
with the device named. BatchNorm re-estimation uses forward passes only.
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from smoothviz._validation import check_choice, check_int
from smoothviz.data import ImageData
from smoothviz.provenance import device_name

SPLITS = ("train", "test")


def _split(data: ImageData | tuple[torch.Tensor, torch.Tensor], split: str):
    if isinstance(data, tuple) and len(data) == 2:
        return data
    if not isinstance(data, ImageData):
        raise TypeError(f"data must be an ImageData or an (x, y) tuple, got {type(data).__name__}")
    check_choice("split", split, SPLITS)
    return (data.x_train, data.y_train) if split == "train" else (data.x_test, data.y_test)


def _check_xy(model: nn.Module, x: object, y: object) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError("data: x and y must be torch tensors")
    if len(x) != len(y):
        raise ValueError(f"data: x has {len(x)} samples but y has {len(y)}")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise TypeError(f"data: y must hold integer class labels, got dtype {y.dtype}")
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)
    if isinstance(first, nn.Conv2d) and (x.ndim != 4 or x.shape[1] != first.in_channels):
        got = x.shape[1] if x.ndim == 4 else "no"
        raise ValueError(
            f"data: x has {got} channels (shape {tuple(x.shape)}) but the model expects "
            f"{first.in_channels}"
        )


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def evaluate(
    model: nn.Module,
    data: ImageData | tuple[torch.Tensor, torch.Tensor],
    *,
    split: str = "test",
    batch_size: int = 500,
    autocast: bool = False,
    per_image: bool = False,
) -> dict[str, Any]:
    """Accuracy and mean cross-entropy of ``model`` on a split, in eval mode, without gradients.

    Parameters
    ----------
    model
        The network (its train/eval mode is restored afterwards).
    data
        An :class:`~smoothviz.data.ImageData` or an ``(x, y)`` pair of tensors.
    split
        ``"test"`` (default) or ``"train"``; ignored for an ``(x, y)`` pair.
    batch_size
        Images per forward pass.
    autocast
        Run the forward passes under bf16 autocast (what training does on CUDA).
    per_image
        Also return ``"correct"``: a bool tensor (on the CPU), one entry per image, True where
        the model's prediction is right (what a paired interval between two models needs).

    Returns
    -------
    dict
        ``{"accuracy": fraction correct, "loss": mean cross-entropy}`` (and ``"correct"``).
    """
    batch_size = check_int("batch_size", batch_size, low=1)
    x, y = _split(data, split)
    _check_xy(model, x, y)
    device = _device(model)
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    loss = torch.zeros((), dtype=torch.float64, device=device)
    hits = []
    try:
        with torch.no_grad():
            for start in range(0, len(y), batch_size):
                xb = x[start : start + batch_size].to(device)
                yb = y[start : start + batch_size].to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    logits = model(xb).float()
                loss += F.cross_entropy(logits, yb, reduction="sum").double()
                hit = logits.argmax(1) == yb
                correct += hit.sum()
                if per_image:
                    hits.append(hit.cpu())
    finally:
        model.train(was_training)
    n = len(y)
    out: dict[str, Any] = {"accuracy": correct.item() / n, "loss": loss.item() / n}
    if per_image:
        out["correct"] = torch.cat(hits)
    return out


def count_params(model: nn.Module, *, nonzero: bool | None = None) -> int:
    """Number of parameters; for magnitude-pruned weights, their non-zeros.

    Parameters
    ----------
    model
        The network.
    nonzero
        ``None`` (default): count non-zeros only in the tensors a pruning function marked in
        ``model.sparse_parameters``, every element elsewhere. ``True``: non-zeros everywhere.
        ``False``: every element everywhere.
    """
    sparse = set(getattr(model, "sparse_parameters", ()))
    total = 0
    for name, p in model.named_parameters():
        if nonzero or (nonzero is None and name in sparse):
            total += int(torch.count_nonzero(p))
        else:
            total += p.numel()
    return total


def count_flops(model: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward pass on ``example`` (2 per multiply-add), by ``FlopCounterMode``.

    Pass a single image (batch of 1) to get FLOPs per image. Zeroed weights of magnitude-pruned
    layers still count (dense kernels run them).
    """
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(example.to(_device(model)))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def measure_latency(
    model: nn.Module, example: torch.Tensor, *, repeats: int = 20, warmup: int = 3
) -> dict[str, Any]:
    """Median wall time of a forward pass on ``example`` after ``warmup`` untimed passes.

    Returns
    -------
    dict
        ``{"latency_ms": median, "latency_iqr_ms": interquartile range, "device": name,
        "batch_size": len(example), "repeats": repeats}``.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
    device = _device(model)
    example = example.to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    was_training = model.training
    model.eval()
    times = []
    try:
        with torch.no_grad():
            for i in range(warmup + repeats):
                sync()
                t0 = time.perf_counter()
                model(example)
                sync()
                if i >= warmup:
                    times.append((time.perf_counter() - t0) * 1e3)
    finally:
        model.train(was_training)
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {
        "latency_ms": statistics.median(times),
        "latency_iqr_ms": q[2] - q[0],
        "device": device_name(device),
        "batch_size": int(example.shape[0]),
        "repeats": repeats,
    }


def bn_reestimate(
    model: nn.Module, x_train: torch.Tensor, *, batch_size: int = 256, max_images: int | None = 2048
) -> nn.Module:
    """A copy of ``model`` whose BatchNorm running statistics are recomputed on training images.

    Forward passes only (no gradient step): the running mean/var of every BatchNorm are reset and
    re-accumulated as an exact average over the images; all other modules run in eval mode.

    Parameters
    ----------
    model
        The (compressed) network; not modified.
    x_train
        Training images ``(N, C, H, W)`` (never test images).
    batch_size
        Images per forward pass.
    max_images
        Use only the first this many images (``None``: all).
    """
    if not isinstance(x_train, torch.Tensor) or x_train.ndim < 2:
        raise TypeError("x_train must be a tensor of training inputs (N, ...)")
    new = copy.deepcopy(model)
    new.eval()
    bns = [m for m in new.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        if m.track_running_stats:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average: an exact mean over the batches
            m.train()
    x = x_train if max_images is None else x_train[:max_images]
    device = _device(new)
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            new(x[start : start + batch_size].to(device))
    for m, mom in zip(bns, momenta):
        m.momentum = mom
        m.eval()
    return new

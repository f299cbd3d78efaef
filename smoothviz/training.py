"""Training with optional smoothness / low-rank regularisation, a checkpoint cache and resume.

``train(cfg)`` returns a :class:`TrainedRun`. Finished runs are cached under
``<cache>/checkpoints/<config hash>.pt`` with a JSON sidecar (config, history, versions, git SHA,
SHA-256 of the weights); asking again for the same config loads them (``weights_only=True``) instead
of training. After every epoch a ``.partial.pt`` checkpoint (model, optimiser, schedule, history) is
written atomically, so a killed run resumes from its last finished epoch and ends with the same
weights as an uninterrupted one (data order and augmentation are seeded per epoch).

Started by ``torchrun --nproc_per_node=N``, :func:`train` trains data-parallel with
``DistributedDataParallel`` (:mod:`smoothviz.ddp`): ``batch_size`` stays the global batch, rank 0
alone locks the cache and writes the checkpoints, and resume works as in one process.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from filelock import FileLock
from torch import nn
from tqdm.auto import tqdm

from smoothviz import ddp
from smoothviz import models as _models_module
from smoothviz.atomic import atomic_torch_save, atomic_write_text
from smoothviz.config import ConfigError, TrainConfig
from smoothviz.data import (
    FOLDER_PREFIX,
    ImageData,
    augment_batch,
    default_cache_dir,
    load_dataset,
    sha256_of,
)
from smoothviz.layers import select_layers
from smoothviz.measure import evaluate
from smoothviz.models import build_model
from smoothviz.progress import progress_enabled
from smoothviz.provenance import environment_info
from smoothviz.regularizers import Regularization
from smoothviz.threads import share_threads

# Part of every cache key: a change to the model definitions invalidates old checkpoints.
MODEL_CODE_VERSION = hashlib.sha256(inspect.getsource(_models_module).encode()).hexdigest()[:12]
CHECKPOINT_FORMAT = 1
MIN_STEPS = 4  # the one-cycle schedule needs a warm-up and a decay phase of two steps each


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; no finished checkpoint was written."""


class CheckpointError(RuntimeError):
    """A cached checkpoint is unreadable, corrupted or does not belong to the config."""


@dataclass
class TrainedRun:
    """The result of :func:`train`."""

    model: nn.Module  # trained, in eval mode, on the training device
    history: pd.DataFrame  # one row per epoch
    config: TrainConfig
    checkpoint: Path | None  # the cached weights, or None when caching was off
    from_cache: bool  # True when nothing was trained


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (all devices)."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` picks CUDA, then MPS, then the CPU; an explicit device must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device is {name!r} but CUDA is not available here; use 'auto' or 'cpu'")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device is {name!r} but MPS is not available here; use 'auto' or 'cpu'")
    return device


def cache_key(cfg: TrainConfig, data: ImageData | None = None, *, suffix: str | None = None) -> str:
    """Config hash + model-code version (+ a fingerprint of user-supplied data).

    ``suffix`` marks a data-parallel training that is not the single-process one
    (:func:`smoothviz.ddp.cache_suffix`); single-process keys never carry one.
    """
    parts = [cfg.config_hash(), MODEL_CODE_VERSION, str(CHECKPOINT_FORMAT)]
    if suffix:
        parts.append(suffix)
    if data is not None:
        digest = hashlib.sha256()
        for t in (data.x_train, data.y_train, data.x_test, data.y_test):
            digest.update(str(tuple(t.shape)).encode())
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
        parts.append(digest.hexdigest())
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def _paths(cache_dir: Path, key: str) -> dict[str, Path]:
    base = cache_dir / "checkpoints"
    return {
        "weights": base / f"{key}.pt",
        "sidecar": base / f"{key}.json",
        "partial": base / f"{key}.partial.pt",
        "lock": base / f"{key}.lock",
    }


def _fresh_state(
    cfg: TrainConfig,
    data: ImageData,
    device: torch.device,
    total_steps: int,
    ctx: ddp.DistributedContext | None = None,
):
    """Seeded model, its regularisation, optimiser and schedule, as at the start of a run."""
    seed_everything(cfg.seed)
    model = build_model(
        cfg.model, data.in_channels, data.num_classes, width=cfg.width, image_size=data.image_size
    ).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if ctx is not None:
        model = ddp.prepare_model(model, ctx)  # SyncBatchNorm where supported
    reg = Regularization(
        select_layers(model, cfg.layers),
        nuclear=cfg.nuclear,
        nuclear_every=cfg.nuclear_every,
        first_order=cfg.first_order,
        second_order=cfg.second_order,
        proximal=cfg.proximal,
        proximal_every=cfg.proximal_every,
    )
    opt, sched = _make_optimizer(model, cfg, total_steps)
    return model, reg, opt, sched


def _make_optimizer(model: nn.Module, cfg: TrainConfig, total_steps: int):
    # Weight decay on conv/linear weights only, not on BatchNorm parameters or biases.
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.SGD(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.momentum > 0,
    )
    if cfg.schedule == "onecycle":
        # At least two warm-up steps: torch's OneCycleLR divides by (warm-up steps - 1).
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr, total_steps=total_steps, pct_start=max(0.25, 2 / total_steps)
        )
    else:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    return opt, sched


def _load_data(cfg: TrainConfig, device: torch.device, data: ImageData | None) -> ImageData:
    if data is None:
        data = load_dataset(cfg.dataset, root=cfg.data_root, device=device)
    else:
        data = data.to(device)
    if cfg.train_subset is not None:
        if cfg.train_subset > len(data.y_train):
            raise ConfigError(
                f"train_subset is {cfg.train_subset} but the training split has only "
                f"{len(data.y_train)} images"
            )
        data = data.subset(n_train=cfg.train_subset, seed=cfg.seed)
    if cfg.batch_size > len(data.y_train):
        raise ConfigError(
            f"batch_size is {cfg.batch_size} but the training split has only {len(data.y_train)} images"
        )
    return data


def load_cached(
    cfg: TrainConfig, cache_dir: str | Path | None = None, data: ImageData | None = None
) -> TrainedRun | None:
    """The finished run for ``cfg`` from the cache, or None if there is none.

    Raises
    ------
    CheckpointError
        If the cached files exist but are corrupted, truncated, or were made for another config.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return _load_cached_at(cfg, _paths(cache_dir, cache_key(cfg, data)))


def _load_cached_at(cfg: TrainConfig, paths: dict[str, Path]) -> TrainedRun | None:
    if not paths["sidecar"].is_file():
        return None
    try:
        meta = json.loads(paths["sidecar"].read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{paths['sidecar']} is unreadable: {exc}") from exc
    if meta.get("config") != cfg.to_dict():
        raise CheckpointError(f"{paths['sidecar']} was written for another config")
    if not paths["weights"].is_file() or sha256_of(paths["weights"]) != meta.get("weights_sha256"):
        raise CheckpointError(f"{paths['weights']} is missing or corrupted (SHA-256 mismatch)")
    try:
        state = torch.load(paths["weights"], map_location="cpu", weights_only=True)
    except Exception as exc:  # an unreadable or unsafe file: refuse, never unpickle
        raise CheckpointError(f"{paths['weights']} could not be loaded safely: {exc}") from exc
    device = resolve_device(cfg.device)
    in_channels, num_classes, image_size = (
        meta["in_channels"],
        meta["num_classes"],
        meta["image_size"],
    )
    model = build_model(cfg.model, in_channels, num_classes, width=cfg.width, image_size=image_size)
    model.load_state_dict(state)
    model.to(device).eval()
    history = pd.DataFrame(meta["history"])
    return TrainedRun(model, history, cfg, paths["weights"], from_cache=True)


def train(
    cfg: TrainConfig,
    *,
    data: ImageData | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    progress: bool | None = True,
) -> TrainedRun:
    """Train a model as ``cfg`` says, or return the cached result of an identical earlier run.

    Parameters
    ----------
    cfg
        The validated configuration.
    data
        Your own data (:func:`smoothviz.data.from_tensors`); ``None`` loads ``cfg.dataset``.
    cache_dir
        Root of the checkpoint cache (default ``$SMOOTHVIZ_CACHE`` or ``~/.cache/smoothviz``).
    use_cache
        False trains from scratch and writes nothing.
    progress
        Show a tqdm progress bar (None: only in a live notebook, see
        :func:`smoothviz.progress.progress_enabled`).

    Raises
    ------
    TrainingDiverged
        If the loss becomes NaN or infinite (the message names the epoch and likely causes).
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    if data is not None and not isinstance(data, ImageData):
        raise TypeError(
            f"data must be an ImageData (see smoothviz.data.from_tensors) or None, "
            f"got {type(data).__name__}"
        )
    if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
        raise TypeError(f"cache_dir must be a folder path (str or Path) or None, got {cache_dir!r}")
    progress = progress_enabled(progress)
    device = resolve_device(cfg.device)
    share_threads()  # this process's share of the cores, when other smoothviz processes run
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if data is None and cfg.dataset.startswith(FOLDER_PREFIX):
        # A folder's images can change under the same name: its content goes into the cache key.
        data = load_dataset(cfg.dataset)
    ctx = ddp.setup(device)  # None unless started by torchrun with more than one process
    if ctx is not None:
        return _train_data_parallel(cfg, ctx, data, cache_root, use_cache, progress)
    if not use_cache:
        return _train(cfg, device, _load_data(cfg, device, data), None, progress)
    paths = _paths(cache_root, cache_key(cfg, data))
    paths["lock"].parent.mkdir(parents=True, exist_ok=True)
    # One process trains a config at a time; a second one waits, then finds it in the cache.
    with FileLock(str(paths["lock"])):
        try:
            cached = load_cached(cfg, cache_root, data)
        except CheckpointError as exc:
            warnings.warn(f"{exc}; retraining", stacklevel=2)
            cached = None
        if cached is not None:
            return cached
        return _train(cfg, device, _load_data(cfg, device, data), paths, progress)


def _architecture(cfg: TrainConfig) -> nn.Module:
    """The model's layers without its data (which BatchNorm presence does not depend on)."""
    try:
        with torch.device("meta"):  # no memory, no initialisation cost
            return build_model(cfg.model, 3, 10, width=cfg.width, image_size=32)
    except Exception:  # a constructor that needs real tensors
        return build_model(cfg.model, 3, 10, width=cfg.width, image_size=32)


def _train_data_parallel(
    cfg: TrainConfig,
    ctx: ddp.DistributedContext,
    data: ImageData | None,
    cache_root: Path,
    use_cache: bool,
    progress: bool,
) -> TrainedRun:
    """:func:`train` on every rank of a torchrun job; rank 0 decides and writes, the rest follow."""
    ddp.check_batch_size(cfg.batch_size, ctx.world_size)
    progress = progress and ctx.is_main
    suffix = ddp.cache_suffix(_architecture(cfg), ctx)
    if suffix and ctx.is_main:
        warnings.warn(
            f"{cfg.model} has BatchNorm and SyncBatchNorm needs GPUs: on the CPU each of the "
            f"{ctx.world_size} processes normalises with its own shard's statistics, which is not "
            "the single-process training; it is cached under its own key",
            stacklevel=3,
        )
    if not use_cache:
        return _train(cfg, ctx.device, _load_data(cfg, ctx.device, data), None, progress, ctx)
    paths = _paths(cache_root, cache_key(cfg, data, suffix=suffix))
    paths["lock"].parent.mkdir(parents=True, exist_ok=True)
    # Rank 0 holds the lock for the whole job; the other ranks wait on its broadcasts instead (a
    # lock per rank would deadlock: rank 0 would train and wait for ranks stuck at the lock).
    with FileLock(str(paths["lock"])) if ctx.is_main else nullcontext():
        cached = None
        if ctx.is_main:
            try:
                cached = _load_cached_at(cfg, paths)
            except CheckpointError as exc:
                warnings.warn(f"{exc}; retraining", stacklevel=3)
        if ctx.broadcast(cached is not None):
            if not ctx.is_main:
                try:
                    cached = _load_cached_at(cfg, paths)
                except CheckpointError:
                    cached = None
            if ctx.all_agree(cached is not None):
                ctx.barrier()  # the lock is released only after every rank has read the files
                return cached
        run = _train(cfg, ctx.device, _load_data(cfg, ctx.device, data), paths, progress, ctx)
        ctx.barrier()  # rank 0 has written the checkpoint
        run.checkpoint = paths["weights"]
        return run


def _train(
    cfg: TrainConfig,
    device: torch.device,
    data: ImageData,
    paths: dict[str, Path] | None,
    progress: bool,
    ctx: ddp.DistributedContext | None = None,
) -> TrainedRun:
    n = len(data.y_train)
    steps_per_epoch = n // cfg.batch_size  # the ragged last batch is dropped (BatchNorm-safe)
    if cfg.epochs * steps_per_epoch < MIN_STEPS:
        raise ConfigError(
            f"epochs x (training images // batch_size) = {cfg.epochs} x {steps_per_epoch} optimiser "
            f"steps; at least {MIN_STEPS} are needed: raise epochs or lower batch_size"
        )
    total_steps = cfg.epochs * steps_per_epoch
    model, reg, opt, sched = _fresh_state(cfg, data, device, total_steps, ctx)
    history: list[dict] = []
    start_epoch = 0
    writes = paths is not None and (ctx is None or ctx.is_main)  # one writer per run
    state_ok = True  # the fresh state, or a fully restored one
    if paths is not None and paths["partial"].is_file():
        try:
            state = torch.load(paths["partial"], map_location=device, weights_only=True)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            history, start_epoch = state["history"], int(state["epoch"])
        except Exception as exc:  # a damaged partial file only costs the work it held
            warnings.warn(
                f"ignoring unreadable partial checkpoint {paths['partial']}: {exc}", stacklevel=3
            )
            state_ok = False
    if ctx is not None:  # every rank resumes from rank 0's epoch, or every rank starts over
        state_ok = ctx.all_agree(state_ok and ctx.broadcast(start_epoch) == start_epoch)
    if not state_ok:
        # Start over exactly as a fresh run would: a half-restored state must not leak in.
        model, reg, opt, sched = _fresh_state(cfg, data, device, total_steps, ctx)
        history, start_epoch = [], 0
    cuda = device.type == "cuda"
    step_model = ddp.wrap(model, ctx) if ctx is not None else model
    step_model = torch.compile(step_model) if (cfg.compile and cuda) else step_model
    terms = reg.terms
    bar = tqdm(
        total=total_steps,
        initial=start_epoch * steps_per_epoch,
        disable=not progress,
        desc=f"train {cfg.model}",
        unit="step",
    )
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        # Per-epoch generators: the data order and augmentation of epoch e never depend on how the
        # run got there, which is what makes resume bit-identical on the CPU.
        gen = torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + epoch)
        perm = torch.randperm(n, device=device, generator=gen)
        sums = torch.zeros(1 + len(terms), device=device)
        model.train()
        for i in range(steps_per_epoch):
            step = epoch * steps_per_epoch + i
            idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            xb = augment_batch(
                data.x_train[idx], crop_padding=cfg.crop_padding, flip=cfg.flip, generator=gen
            )
            yb = data.y_train[idx]
            if ctx is not None:
                # Every rank augments the whole global batch (so the generator stays in step with
                # the single-process run), then keeps its own shard.
                xb, yb = ctx.shard(xb), ctx.shard(yb)
            if cuda:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                logits = step_model(xb)
            loss = F.cross_entropy(logits.float(), yb, label_smoothing=cfg.label_smoothing)
            # On the unwrapped module, in full on every rank: DDP's gradient average over the ranks
            # then leaves the penalty's gradient as it is in one process (see smoothviz.ddp).
            reg_total, reg_values = reg.penalty(step)
            opt.zero_grad(set_to_none=True)
            (loss + reg_total).backward()
            opt.step()
            lr = opt.param_groups[0]["lr"]
            sched.step()
            reg.proximal_step(step, lr)
            if ctx is not None and cfg.proximal > 0 and (step + 1) % cfg.proximal_every == 0:
                ctx.sync_tensors(reg.weights)  # identical SVDs, but never let the ranks drift
            sums += torch.stack([loss.detach(), *[v.detach() for v in reg_values]])
            bar.update(1)
        if ctx is not None:
            ctx.mean(sums)  # shard losses -> the global batch's mean loss
            ctx.sync_buffers(model)  # rank 0's BatchNorm statistics, so every rank evaluates alike
        means = (sums / max(steps_per_epoch, 1)).tolist()  # the epoch's one host sync
        if not all(math.isfinite(v) for v in means):
            bar.close()
            raise TrainingDiverged(
                f"training diverged in epoch {epoch + 1}: mean loss terms {dict(zip(['train_loss', *terms], means))}. "
                f"Likely cause: the learning rate (lr={cfg.lr}) or a regulariser weight "
                f"(nuclear={cfg.nuclear}, first_order={cfg.first_order}, second_order={cfg.second_order}, "
                f"proximal={cfg.proximal}) is too large. No finished checkpoint was written."
            )
        scores = evaluate(model, (data.x_test, data.y_test), batch_size=1024, autocast=cuda)
        test_loss, test_acc = scores["loss"], scores["accuracy"]
        row = {"epoch": epoch + 1, "train_loss": means[0]}
        row.update({f"reg_{t}": v for t, v in zip(terms, means[1:])})
        if cfg.proximal > 0:
            row["reg_proximal_nuclear_norm"] = float(reg.nuclear_norms())
        row.update(
            {
                "test_loss": test_loss,
                "test_acc": test_acc,
                "lr": lr,
                "seconds": time.perf_counter() - t0,
            }
        )
        history.append(row)
        bar.set_postfix(epoch=epoch + 1, loss=f"{means[0]:.3f}", test_acc=f"{test_acc:.3f}")
        if writes:
            atomic_torch_save(
                paths["partial"],
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "history": history,
                    "epoch": epoch + 1,
                },
            )
    bar.close()
    if ctx is not None:
        model = _plain_model(model, cfg, data, device)
    model.eval()
    run = TrainedRun(model, pd.DataFrame(history), cfg, None, from_cache=False)
    if writes:
        _write_final(run, data, paths, ctx)
    return run


def _plain_model(model: nn.Module, cfg: TrainConfig, data: ImageData, device: torch.device):
    """The model as :func:`build_model` makes it (SyncBatchNorm back to BatchNorm), same weights."""
    if not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules()):
        return model
    plain = build_model(
        cfg.model, data.in_channels, data.num_classes, width=cfg.width, image_size=data.image_size
    ).to(device)
    if device.type == "cuda":
        plain = plain.to(memory_format=torch.channels_last)
    plain.load_state_dict(model.state_dict())
    return plain


def _write_final(
    run: TrainedRun,
    data: ImageData,
    paths: dict[str, Path],
    ctx: ddp.DistributedContext | None = None,
) -> None:
    """Weights first, the sidecar last: a sidecar exists only for a complete checkpoint."""
    state = {k: v.detach().cpu() for k, v in run.model.state_dict().items()}
    atomic_torch_save(paths["weights"], state)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "config": run.config.to_dict(),
        "config_hash": run.config.config_hash(),
        "model_code_version": MODEL_CODE_VERSION,
        "weights_sha256": sha256_of(paths["weights"]),
        "in_channels": data.in_channels,
        "num_classes": data.num_classes,
        "image_size": data.image_size,
        "dataset": data.name,
        "history": run.history.to_dict(orient="records"),
        "environment": environment_info(next(run.model.parameters()).device),
    }
    if ctx is not None:
        meta["data_parallel"] = {
            "world_size": ctx.world_size,
            "backend": ctx.backend,
            "batchnorm": "none"
            if not ddp.has_batchnorm(run.model)
            else ("sync" if ddp.sync_batchnorm_supported(ctx) else "per-rank"),
        }
    atomic_write_text(paths["sidecar"], json.dumps(meta, indent=2))
    paths["partial"].unlink(missing_ok=True)
    run.checkpoint = paths["weights"]

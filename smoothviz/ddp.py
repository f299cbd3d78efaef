"""Data-parallel training of one config across processes started by ``torchrun``.

``torchrun --nproc_per_node=N -m smoothviz train ...`` starts N copies of the command; each finds
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in its environment, and :func:`smoothviz.training.train`
then trains with PyTorch's ``DistributedDataParallel`` (NCCL on CUDA, gloo on the CPU). This module
holds the process-group plumbing; the training loop itself stays in :mod:`smoothviz.training`.

What stays the same as one process (and why):

- ``batch_size`` is the *global* batch: every rank draws the same seeded permutation and
  augmentation, and takes its contiguous ``batch_size / world_size`` slice of each global batch.
  DDP averages the gradients of the equal-sized shards, which is the gradient of the mean loss over
  the global batch.
- The regularisers are computed on the unwrapped module (the same ``Parameter`` objects DDP
  wraps), in full on every rank. DDP's average of ``W`` identical penalty gradients is the penalty
  gradient itself, so the total gradient equals the single-process one with a factor of 1 (dividing
  the penalty by ``W`` would shrink it ``W``-fold).
- BatchNorm: on CUDA the model's BatchNorm layers become ``SyncBatchNorm``, so the batch statistics
  are those of the global batch, as in one process. PyTorch's SyncBatchNorm runs on GPUs only; on
  the CPU (gloo) each rank normalises with the statistics of its own shard (DDP's default), and
  rank 0's running statistics are broadcast to every rank after each epoch. That is a different
  training from the single-process one, so such runs get their own cache entry (see
  :func:`cache_suffix`); models without BatchNorm (``mlp``) are unaffected.
- One checkpoint: rank 0 alone takes the cache's file lock and writes the partial and final
  checkpoints (atomically); the other ranks follow its decisions (load from the cache, resume,
  train) through broadcasts.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from smoothviz.config import ConfigError

# Variables torchrun (and torch.distributed's env:// rendezvous) set in every process it starts.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a data-parallel run."""

    rank: int
    local_rank: int
    world_size: int
    backend: str  # "nccl" or "gloo"
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that locks the cache, writes checkpoints and shows progress."""
        return self.rank == 0

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch (``len(batch)`` divisible by the size)."""
        size = len(batch) // self.world_size
        return batch[self.rank * size : (self.rank + 1) * size]

    def broadcast(self, value):
        """Rank 0's value of a picklable object, on every rank."""
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_agree(self, ok: bool) -> bool:
        """True on every rank only if ``ok`` is True on every rank."""
        flag = torch.tensor([1.0 if ok else 0.0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean of ``values`` over the ranks (in place, returned)."""
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values.div_(self.world_size)

    def sync_tensors(self, tensors) -> None:
        """Overwrite ``tensors`` (in place) with rank 0's values."""
        with torch.no_grad():
            for t in tensors:
                dist.broadcast(t.data, src=0)

    def sync_buffers(self, model: nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm running statistics)."""
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)

    def barrier(self) -> None:
        if self.backend == "nccl":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()


def launched_by_torchrun() -> bool:
    """True when the environment describes more than one process (torchrun, or env:// by hand)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> DistributedContext | None:
    """Join the process group torchrun describes; None for a single-process run.

    ``device`` is the resolved ``cfg.device``: its type picks the backend (NCCL for CUDA, gloo for
    the CPU) and each rank uses ``cuda:LOCAL_RANK`` (whatever index ``cfg.device`` names). A group the caller initialised already is used
    as it is; one initialised here is destroyed when the interpreter exits.
    """
    if not (dist.is_available() and (dist.is_initialized() or launched_by_torchrun())):
        return None
    if not dist.is_initialized():
        missing = [v for v in TORCHRUN_VARIABLES if v not in os.environ]
        if missing:
            raise ConfigError(
                f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but {missing} are not set: start "
                "data-parallel training with torchrun --nproc_per_node=N -m smoothviz train ..."
            )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK is {local_rank} but this node has {torch.cuda.device_count()} CUDA "
                "device(s): use --nproc_per_node at most the number of GPUs"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise ConfigError(
            f"device {device.type!r} has no DistributedDataParallel backend here; "
            "use device=cuda (NCCL) or device=cpu (gloo) under torchrun"
        )
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
        atexit.register(_destroy)
    else:
        backend = dist.get_backend()
    return DistributedContext(
        rank=dist.get_rank(),
        local_rank=local_rank,
        world_size=dist.get_world_size(),
        backend=backend,
        device=device,
    )


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def check_batch_size(batch_size: int, world_size: int) -> None:
    """The global batch must split into equal shards (else the gradient average is not the mean)."""
    if batch_size % world_size:
        raise ConfigError(
            f"batch_size is {batch_size}, which does not split over {world_size} processes: "
            f"under torchrun it is the global batch and must be a multiple of the world size "
            f"(e.g. {batch_size - batch_size % world_size or world_size})"
        )


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def sync_batchnorm_supported(ctx: DistributedContext) -> bool:
    """PyTorch's SyncBatchNorm needs GPU tensors; on the CPU the statistics stay per rank."""
    return ctx.device.type == "cuda"


def prepare_model(model: nn.Module, ctx: DistributedContext) -> nn.Module:
    """BatchNorm -> SyncBatchNorm where supported (same Parameter objects, so optimisers and
    regularisers built on the model stay valid)."""
    if has_batchnorm(model) and sync_batchnorm_supported(ctx):
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def cache_suffix(model: nn.Module, ctx: DistributedContext | None) -> str | None:
    """A cache-key suffix for data-parallel runs that are not the single-process training.

    Only BatchNorm models with per-rank statistics (CPU) differ; everything else is the same
    training, up to float summation order, and shares the single-process cache entry.
    """
    if ctx is None or not has_batchnorm(model) or sync_batchnorm_supported(ctx):
        return None
    return f"ddp-per-rank-batchnorm-{ctx.world_size}"


def wrap(model: nn.Module, ctx: DistributedContext) -> nn.Module:
    """``DistributedDataParallel`` around ``model`` (its parameters broadcast from rank 0)."""
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)

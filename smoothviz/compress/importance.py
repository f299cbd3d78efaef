"""Channel importance: which channels of a group structured pruning keeps first.

- ``"l1"``: the writers' filter L1 norms (Li et al. 2017), summed over the group's writers.
- ``"bn_scale"``: the same for the BN-folded filters, ``|γ|/sqrt(var+eps) · ||W_c||_1``: BatchNorm
  rescales every channel, which the raw L1 ignores.
- ``"activation"``: the channel's variance on calibration data times the squared norm of the
  readers' weights on it (each reader output scaled by the reader's own BatchNorm factor), summed
  over readers: the output error its removal causes once its mean is compensated.
- ``"fisher"``: the change of the model's output distribution when the channel is replaced by its
  mean at every reader (by zero without compensation), to second order: ``½ E[(Σ g · Δa)²]`` with
  ``g`` the gradient of ``log p(y|x)`` at the reader's input for a label ``y`` drawn from the
  model's own prediction, so ``E[g gᵀ]`` is the Fisher information and the score estimates the
  KL divergence the removal causes (Theis et al. 2018, "Fisher pruning"; Molchanov et al. 2019 for
  the first-order form). No labels are needed, and only gradients with respect to activations are
  taken: no weight changes. Its scores are in the same unit (nats) in every layer, so the global
  allocator can compare them as they are; the other three are relative to their group's largest.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from smoothviz.compress.activations import GroupStats
from smoothviz.compress.chains import ChannelGroup
from smoothviz.compress.surgery import per_channel

IMPORTANCES = ("fisher", "activation", "bn_scale", "l1")
NEEDS_CALIBRATION = ("fisher", "activation")


def filter_l1(module: nn.Module) -> torch.Tensor:
    """L1 norm of each output filter of a Conv2d/Linear."""
    w = module.weight.detach()
    return w.abs().reshape(w.shape[0], -1).sum(1).double().cpu()


def _bn_factor(bn: nn.Module) -> torch.Tensor:
    """``|γ| / sqrt(running_var + eps)``: how much a BatchNorm scales each channel."""
    gamma = bn.weight.detach().abs() if bn.weight is not None else 1.0
    scale = gamma / torch.sqrt(bn.running_var + bn.eps)
    return scale.double().cpu()


def channel_importance(
    model: nn.Module, group: ChannelGroup, importance: str, stats: GroupStats | None = None
) -> np.ndarray:
    """Importance of each channel of ``group`` (larger is kept first).

    ``"l1"``: the writers' filter L1 norms, summed over writers. ``"bn_scale"``: the same for the
    BN-folded filters (each writer's filter times its BatchNorm's ``|γ|/sqrt(var+eps)``).
    ``"activation"``: for every source the readers read, the channel's variance on calibration
    data times the squared norm of the readers' weights on it (each reader output scaled by the
    reader's BatchNorm factor), summed: the output error the removal causes after compensation.
    """
    if importance in ("l1", "bn_scale"):
        total = torch.zeros(group.channels, dtype=torch.float64)
        for w in group.writers:
            score = filter_l1(model.get_submodule(w.name))
            if importance == "bn_scale" and w.norm is not None:
                score = score * _bn_factor(model.get_submodule(w.norm))
            total += score
        return total.numpy()
    total = np.zeros(group.channels)
    for r in group.readers:
        m = model.get_submodule(r.name)
        w3 = per_channel(m, m.weight.detach(), group.channels).double().cpu()
        if r.norm is not None:
            w3 = w3 * _bn_factor(model.get_submodule(r.norm))[:, None, None]
        total += stats.sources[r.source].variance() * (w3**2).sum((0, 2)).numpy()
    return total


def by_channel(x: torch.Tensor, module: nn.Module, channels: int) -> torch.Tensor:
    """A reader's input as ``(N, C, positions)``: a conv's ``(N, C, H, W)``, or a Linear's
    ``(N, ..., C·f)`` (after a flatten, each channel owns ``f`` consecutive features; with tokens,
    or channels last, the channel axis is the last one)."""
    n = len(x)
    if isinstance(module, nn.Conv2d):
        return x.reshape(n, channels, -1)
    f = module.in_features // channels
    return x.reshape(n, -1, channels, f).permute(0, 2, 1, 3).reshape(n, channels, -1)


def fisher_importance(
    model: nn.Module,
    calibration: torch.Tensor,
    groups: list[ChannelGroup],
    stats: GroupStats,
    *,
    to_mean: bool = True,
    batch_size: int = 128,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Fisher estimate of the KL change of replacing each channel at every reader (see above).

    Parameters
    ----------
    model
        The network (not modified: gradients are taken with respect to activations only).
    calibration
        Training inputs, already validated.
    groups
        The channel groups to score.
    stats
        Their :func:`~smoothviz.compress.activations.group_statistics` (the channel means).
    to_mean
        Replace a channel by its mean (what bias compensation leaves), else by zero.
    batch_size
        Images per forward/backward pass.
    seed
        Seeds the labels drawn from the model's predictions.

    Returns
    -------
    dict
        ``{group name: score per channel}``; scores of different groups are in the same units
        (nats).
    """
    by_reader = {r.name: (g, r) for g in groups for r in g.readers}
    leaves: dict[str, torch.Tensor] = {}
    inputs: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def swap(_module: nn.Module, args: tuple) -> tuple:
            # x + δ with δ = 0: the gradient on δ is that of this reader's input alone, and the
            # graph still reaches the readers upstream through x.
            delta = torch.zeros_like(args[0], requires_grad=True)
            leaves[name] = delta
            inputs[name] = args[0].detach()
            return (args[0] + delta, *args[1:])

        return swap

    handles = [model.get_submodule(n).register_forward_pre_hook(hook(n)) for n in by_reader]
    per_image = {g.name: [] for g in groups}
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    try:
        device = next(model.parameters()).device
        with torch.enable_grad():
            for start in range(0, len(calibration), batch_size):
                leaves.clear()
                logits = model(calibration[start : start + batch_size].to(device))
                drawn = torch.multinomial(logits.detach().softmax(1).cpu(), 1, generator=gen)
                loss = nn.functional.cross_entropy(logits, drawn[:, 0].to(device), reduction="sum")
                names = list(leaves)
                grads = torch.autograd.grad(loss, [leaves[n] for n in names], allow_unused=True)
                change = {g.name: 0.0 for g in groups}
                for name, grad in zip(names, grads, strict=True):
                    if grad is None:
                        continue
                    g, r = by_reader[name]
                    module = model.get_submodule(name)
                    a = by_channel(inputs[name].double(), module, g.channels)
                    gr = by_channel(grad.double(), module, g.channels)
                    mean = torch.as_tensor(stats.sources[r.source].mean, device=a.device)
                    new = mean[None, :, None] if to_mean else torch.zeros_like(a)
                    # Σ_positions g · Δa: the change of log p(y|x) when the channel is replaced
                    change[g.name] = change[g.name] + (gr * (new - a)).sum(2)
                for g in groups:
                    if isinstance(change[g.name], torch.Tensor):
                        per_image[g.name].append(change[g.name].cpu())
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {
        name: 0.5 * (torch.cat(parts) ** 2).mean(0).numpy()
        if parts
        else np.zeros(next(g.channels for g in groups if g.name == name))
        for name, parts in per_image.items()
    }

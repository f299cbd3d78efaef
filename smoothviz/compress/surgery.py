"""Channel surgery: physically cut a channel group out of a model, optionally correcting readers.

Shared by :func:`~smoothviz.compress.prune.prune_channels` (keep the most important channels,
fold the mean of the removed ones into the readers) and
:func:`~smoothviz.compress.interpolative.interpolative_compress` (keep pivots, re-mix the readers'
input weights by the interpolation matrix). The writers (and their BatchNorms and depthwise convs)
keep the chosen output channels; every reader keeps (or re-mixes) the matching input channels.

Where a constant correction goes: into the reader's BatchNorm ``running_mean`` when the reader has
no bias and feeds that BatchNorm alone (a buffer, so no parameter is added), else into its bias; a
reader with neither gets a new bias, which :class:`~smoothviz.compress.chains.ChannelPlan` counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from smoothviz._validation import check_int
from smoothviz.compress.chains import ChannelGroup, Reader


def check_kept_indices(
    groups: Mapping[str, ChannelGroup], keep: Mapping[str, Sequence[int]]
) -> None:
    """Validate ``keep={group name: channel indices to keep}`` (distinct, in range, at least one)."""
    if not isinstance(keep, Mapping):
        raise TypeError(f"keep must be a dict {{group name: channel indices}}, got {keep!r}")
    unknown = [p for p in keep if p not in groups]
    if unknown:
        raise ValueError(
            f"keep: {unknown} are not prunable producers here; allowed: {list(groups)}"
        )
    for p, idx in keep.items():
        c = groups[p].channels
        arr = np.asarray(idx)
        if (
            arr.ndim != 1
            or len(arr) == 0
            or not np.issubdtype(arr.dtype, np.integer)
            or len(np.unique(arr)) != len(arr)
            or (arr.min() < 0 or arr.max() >= c)
        ):
            raise ValueError(
                f"keep[{p!r}] must be distinct channel indices in [0, {c}), at least one"
            )


def check_kept_counts(
    groups: Mapping[str, ChannelGroup], kept: Mapping[str, int], name: str = "channels"
) -> None:
    """Validate ``kept={group name: number of channels to keep}`` (``name``: the keyword)."""
    unknown = [p for p in kept if p not in groups]
    if unknown:
        raise ValueError(f"{name}: {unknown} are not prunable producers; allowed: {list(groups)}")
    for p, k in kept.items():
        check_int(f"{name}[{p!r}]", k, low=1, high=groups[p].channels)


def _slice_out(m: nn.Module, idx: torch.Tensor) -> None:
    m.weight = nn.Parameter(m.weight.detach()[idx].clone(), requires_grad=m.weight.requires_grad)
    if getattr(m, "bias", None) is not None:
        m.bias = nn.Parameter(m.bias.detach()[idx].clone(), requires_grad=m.bias.requires_grad)
    k = len(idx)
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        m.num_features = k
        for buf in ("running_mean", "running_var"):
            if getattr(m, buf, None) is not None:
                setattr(m, buf, getattr(m, buf)[idx].clone())
    elif isinstance(m, nn.Conv2d):
        if m.groups != 1:
            m.in_channels = m.groups = k
        m.out_channels = k
    else:
        m.out_features = k


def _input_index(reader: Reader, idx: torch.Tensor) -> torch.Tensor:
    f = reader.features_per_channel
    if f == 1:
        return idx
    return (idx[:, None] * f + torch.arange(f, device=idx.device)[None, :]).flatten()


def per_channel(m: nn.Module, w: torch.Tensor, channels: int) -> torch.Tensor:
    """A reader's weight as ``(out, C, taps)``: channel ``c``'s kernel taps or flattened features."""
    return w.reshape(w.shape[0], channels, -1)


def mean_contribution(w: torch.Tensor, tap_mean: torch.Tensor) -> torch.Tensor:
    """``Σ_{c,t} W[o, c, t] · mean[c, t]``: a reader's mean output from the given input channels.

    ``w`` is the reader's weight with ``C`` input channels, ``tap_mean`` the mean input under every
    weight (``(C, k_h, k_w)`` or ``(C, f)``), both for the same ``C`` channels.
    """
    c = tap_mean.shape[0]
    return torch.einsum("oct,ct->o", w.double().reshape(w.shape[0], c, -1), tap_mean.reshape(c, -1))


def fold_shift(model: nn.Module, reader: Reader, shift: torch.Tensor) -> None:
    """Add ``shift`` (per output) to the reader's output: via its BN's running mean, else its bias."""
    m = model.get_submodule(reader.name)
    if m.bias is None and reader.norm is not None:
        bn = model.get_submodule(reader.norm)
        bn.running_mean.sub_(shift.to(bn.running_mean))
    elif m.bias is not None:
        m.bias.data.add_(shift.to(m.bias))
    else:
        m.bias = nn.Parameter(shift.to(m.weight).clone(), requires_grad=m.weight.requires_grad)


def cut_group(
    model: nn.Module,
    group: ChannelGroup,
    keep: Sequence[int],
    *,
    mix: Mapping[str, torch.Tensor] | None = None,
    tap_means: Mapping[str, torch.Tensor] | None = None,
    target_means: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """Keep channels ``keep`` of ``group``, in place (on a copy you own).

    Parameters
    ----------
    model
        The model to cut (modified).
    group
        The channel group.
    keep
        Kept channel indices; their order is the new channel order.
    mix
        ``{source: T}`` with ``T`` of shape ``(k, C)``: readers of that source get the input
        weights ``W'[:, s] = Σ_c T[s, c] W[:, c]`` (the interpolative decomposition's correction)
        instead of simply losing the removed inputs.
    tap_means
        ``{reader: mean input under every weight}`` on calibration data; when given, the mean of
        what the reader loses, ``Σ W ⊙ mean - Σ W' ⊙ mean[keep]``, is folded back into its output
        (bias compensation).
    target_means
        The mean inputs the readers should reproduce, when they differ from ``tap_means`` (the
        original model's, while ``tap_means`` are measured on a partially compressed one).
    """
    dev = model.get_submodule(group.writers[0].name).weight.device
    idx = torch.as_tensor(list(keep), dtype=torch.long, device=dev)
    with torch.no_grad():
        for name in (*(w.name for w in group.writers), *group.passthrough):
            _slice_out(model.get_submodule(name), idx)
        for reader in group.readers:
            m = model.get_submodule(reader.name)
            w = m.weight.detach()
            t = None if mix is None else mix.get(reader.source)
            if t is None:
                new_w = w[:, _input_index(reader, idx)].clone()
            else:
                w3 = per_channel(m, w, group.channels)  # (out, C, taps)
                new_w = torch.einsum("sc,oct->ost", t.to(w), w3)
                if isinstance(m, nn.Conv2d):
                    new_w = new_w.reshape(w.shape[0], len(idx), *w.shape[2:])
                else:
                    new_w = new_w.reshape(w.shape[0], -1)
            if tap_means is not None:
                mean = tap_means[reader.name].to(dev)
                goal = mean if target_means is None else target_means[reader.name].to(dev)
                shift = mean_contribution(w, goal) - mean_contribution(new_w, mean[idx])
                fold_shift(model, reader, shift)
            m.weight = nn.Parameter(new_w.contiguous(), requires_grad=m.weight.requires_grad)
            if isinstance(m, nn.Conv2d):
                m.in_channels = len(idx)
            else:
                m.in_features = len(idx) * reader.features_per_channel


def bias_readers(groups: Sequence[ChannelGroup], model: nn.Module) -> list[str]:
    """Readers that would need a new bias to hold a compensation (no bias, no BatchNorm after)."""
    return [
        r.name
        for g in groups
        for r in g.readers
        if r.norm is None and model.get_submodule(r.name).bias is None
    ]


def changed_layers(groups: Mapping[str, ChannelGroup], cut: Iterable[str]) -> list[str]:
    """Every module a cut of the groups named in ``cut`` changes: writers, BatchNorms and
    depthwise convs on the channels, readers."""
    out: list[str] = []
    for name in cut:
        g = groups[name]
        out += [w.name for w in g.writers] + list(g.passthrough) + [r.name for r in g.readers]
    return list(dict.fromkeys(out))

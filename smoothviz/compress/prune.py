"""Pruning without fine-tuning: unstructured magnitude pruning and structured channel pruning.

``prune_magnitude`` zeroes the smallest weights (globally across the selected layers, or the same
fraction in every layer); the weights keep their shape and the parameter count becomes the number
of non-zeros (:func:`smoothviz.measure.count_params` counts the zeroed tensors' non-zeros, marked
in ``model.sparse_parameters``). We zero weights directly instead of using
``torch.nn.utils.prune``: its ``weight_orig``/``weight_mask`` re-parametrisation doubles the
state_dict and gains nothing when no training follows.

``prune_channels`` physically removes whole channels of the channel groups found by
:mod:`smoothviz.compress.chains`: the writers' filters, their BatchNorms (and depthwise convs) and
the readers' input weights, so the network gets smaller and faster. A residual stream is one group:
its channels go from every conv that writes into it and every layer that reads it, together. Three
things make it survive without fine-tuning (measured in ``benchmarks/results/channel_methods.md``):

- **importance that sees what a channel does** (:mod:`smoothviz.compress.importance`): with
  calibration data, ``"fisher"`` (default) estimates the KL divergence of the model's output that
  replacing the channel by its mean causes, in the same unit in every layer; without data,
  ``"bn_scale"`` ranks by the L1 norm of the BN-folded filter. ``"activation"`` and the raw filter
  ``"l1"`` of Li et al. (2017) are options. The global allocator removes the channels with the
  least importance per parameter saved first.
- **bias compensation**: a removed channel still carried a mean (BN's shift sent through the ReLU);
  its mean contribution to every reader, measured per kernel tap on calibration data (so zero
  padding at the borders is exact), is folded into the reader's BatchNorm ``running_mean`` when the
  reader has no bias and feeds one BatchNorm (no parameter added), else into its bias (a bias
  created for this is counted in the parameter budget).
- **residual groups** (above), so that the stages of a ResNet, which hold most of its parameters,
  can be cut at all.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from smoothviz._validation import check_choice, check_int
from smoothviz.compress.activations import group_statistics
from smoothviz.compress.budget import check_reachable, check_reduction, exactly_one
from smoothviz.compress.chains import ChannelGroup, ChannelPlan, find_groups
from smoothviz.compress.channel_request import (
    channel_target,
    kept_counts,
    resolve_channel_request,
)
from smoothviz.compress.forward_check import probe_model
from smoothviz.compress.importance import (
    IMPORTANCES,
    NEEDS_CALIBRATION,
    channel_importance,
    fisher_importance,
)
from smoothviz.compress.surgery import changed_layers, check_kept_indices, cut_group
from smoothviz.compress.targets import renamed_keyword
from smoothviz.layers import layers_value, left_out, select_layers

SCOPES = ("global", "layer")


def _nonzero_params(model: nn.Module) -> int:
    sparse = set(getattr(model, "sparse_parameters", ()))
    return sum(
        int(torch.count_nonzero(p)) if n in sparse else p.numel()
        for n, p in model.named_parameters()
    )


def prune_magnitude(
    model: nn.Module,
    *,
    amount: float | None = None,
    param_reduction: float | None = None,
    scope: str = "global",
    layers: Sequence[str] | str | None = None,
) -> nn.Module:
    """Zero the smallest-magnitude weights of the selected layers; returns a new model.

    Parameters
    ----------
    model
        The trained network (not modified).
    amount
        Fraction in [0, 1) of the selected layers' weights to zero.
    param_reduction
        Whole-network target in [0, 1): the fraction of all the model's (non-zero) parameters to
        remove; converted exactly into a number of weights to zero.
    scope
        ``"global"``: one magnitude threshold across all selected layers; ``"layer"``: the same
        fraction in every layer.
    layers
        Layer selection (default: every Conv2d/Linear but the first and the last).

    Exactly one of ``amount`` and ``param_reduction``. Biases are never pruned.

    Returns
    -------
    nn.Module
        The pruned copy; ``.sparse_parameters`` lists the weights whose zeros do not count.
    """
    mode = exactly_one(amount=amount, param_reduction=param_reduction)
    value = check_reduction(amount if mode == "amount" else param_reduction, mode)
    check_choice("scope", scope, SCOPES)
    chosen = select_layers(model, layers)
    weights = [m.weight.detach() for _, m in chosen]
    n_sel = sum(w.numel() for w in weights)
    zeros_sel = sum(int((w == 0).sum()) for w in weights)
    if mode == "amount":
        n_zero = round(value * n_sel)
    else:
        current = _nonzero_params(model)
        names = [n for n, _ in chosen]
        left = left_out(model, names)  # named in the error, with the layers= that adds them
        check_reachable(
            value,
            current,
            current - (n_sel - zeros_sel),
            "magnitude pruning of the selected layers",
            left_out=left or None,
            include=layers_value(model, [*names, *left]) if left else None,
        )
        n_zero = min(n_sel, zeros_sel + (current - round((1.0 - value) * current)))
    n_zero = max(n_zero, 0)
    new = copy.deepcopy(model)
    params = [new.get_submodule(n).weight for n, _ in chosen]
    with torch.no_grad():
        if scope == "global":
            flat = torch.cat([p.detach().abs().flatten() for p in params])
            idx = torch.topk(flat, n_zero, largest=False, sorted=False).indices
            mask = torch.ones_like(flat, dtype=torch.bool)
            mask[idx] = False
            offset = 0
            for p in params:
                p.mul_(mask[offset : offset + p.numel()].view_as(p))
                offset += p.numel()
        else:
            frac = n_zero / max(n_sel, 1)
            for p in params:
                k = round(frac * p.numel())
                idx = torch.topk(p.detach().abs().flatten(), k, largest=False, sorted=False).indices
                p.view(-1)[idx] = 0
    names = [f"{n}.weight" for n, _ in chosen]
    new.sparse_parameters = sorted(set(getattr(model, "sparse_parameters", ())) | set(names))
    new.compression_info = {"method": "prune_magnitude", "scope": scope, "zeroed": n_zero}
    # Zeroed weights keep their shapes, so this holds wherever the model ran (a dummy batch).
    probe_model(model).check(new, method="prune_magnitude", changed=[n for n, _ in chosen])
    return new


def drop_channels(
    model: nn.Module,
    keep: Mapping[str, Sequence[int]],
    *,
    layers: Sequence[str] | str | None = None,
) -> nn.Module:
    """Keep only the given channels of each group (no correction); returns a new model.

    Parameters
    ----------
    model
        The network (not modified); must be traceable by ``torch.fx``.
    keep
        ``{group name: channel indices to keep}``; a group is named by its first writer (a
        chain's producer).
    layers
        Writer selection used to find the groups (default: every Conv2d/Linear).
    """
    groups = {g.name: g for g in find_groups(model, layers).groups}
    check_kept_indices(groups, keep)
    new = copy.deepcopy(model)
    for p, idx in keep.items():
        cut_group(new, groups[p], sorted(int(i) for i in idx))
    new.compression_info = {
        "method": "drop_channels",
        "kept": {p: sorted(map(int, v)) for p, v in keep.items()},
    }
    probe_model(model).check(new, method="drop_channels", changed=changed_layers(groups, keep))
    return new


def _check_channel_options(
    importance: str | None, compensate: bool | None, calibration: object
) -> tuple[str, bool]:
    if importance is None:
        importance = "fisher" if calibration is not None else "bn_scale"
    check_choice("importance", importance, IMPORTANCES)
    if compensate is None:
        compensate = calibration is not None
    if not isinstance(compensate, bool):
        raise TypeError(f"compensate must be True, False or None, got {compensate!r}")
    needs = [
        f
        for f, on in (
            (f"importance={importance!r}", importance in NEEDS_CALIBRATION),
            ("compensate=True", compensate),
        )
        if on
    ]
    if needs and calibration is None:
        raise TypeError(
            f"calibration is required for {' and '.join(needs)}: pass training images "
            "(N, C, H, W), or use importance='bn_scale' with compensate=False"
        )
    return importance, compensate


def allocation_scores(
    score: np.ndarray, importance: str, plan: ChannelPlan, group: ChannelGroup
) -> np.ndarray:
    """What the global allocator compares: importance per parameter a channel removal saves.

    ``score`` is sorted (non-increasing). Fisher scores are in nats in every layer and stay
    absolute; the other importances are made relative to their group's largest. Dividing by the
    parameters one channel of the group carries makes the allocator remove the cheapest loss per
    parameter first (the knapsack ratio; measured better at 50 %).
    """
    out = score.astype(np.float64)
    if importance != "fisher":
        out = out / max(out.max(), 1e-300)
    per_channel = plan.params({}) - plan.params({group.name: group.channels - 1})
    return out / max(per_channel, 1)


def prune_channels(
    model: nn.Module,
    calibration: torch.Tensor | None = None,
    *,
    param_reduction: float | None = None,
    amount: float | None = None,
    channels: Mapping[str, int] | None = None,
    importance: str | None = None,
    compensate: bool | None = None,
    residual: bool = True,
    layers: Sequence[str] | str | None = None,
    batch_size: int = 128,
    keep: Mapping[str, int] | None = None,
) -> nn.Module:
    """Structured channel pruning that physically removes channels; returns a new model.

    Parameters
    ----------
    model
        The trained network (not modified); must be traceable by ``torch.fx``.
    calibration
        Training inputs ``(N, C, H, W)`` (a few hundred images; never test images). Needed for
        ``importance="fisher"``/``"activation"`` and bias compensation, the defaults when it is
        given.
    param_reduction
        Whole-network target in [0, 1), split across groups by one global threshold on the
        channel importance per parameter saved (see :func:`allocation_scores`); met within 1 pp or
        a :class:`BudgetError` names the layers left out and why.
    amount
        Fraction in [0, 1) of the channels to remove from every group (at least one stays).
    channels
        ``{group name: number of channels to keep}`` (a group is named by its first writer; the
        others keep all); the most important channels stay. For allocations made elsewhere, e.g.
        by measured sensitivity.
    importance
        ``"fisher"`` (default with calibration), ``"bn_scale"`` (default without),
        ``"activation"`` or ``"l1"`` (raw filter L1 norm, Li et al. 2017); see
        :mod:`smoothviz.compress.importance`.
    compensate
        Fold the removed channels' mean contribution into each reader (default: True with
        calibration). Needs calibration.
    residual
        Also cut channels tied by a residual add, as one group across the whole stage (default).
        ``False`` cuts only groups with a single writer.
    layers
        Writer selection (default: every Conv2d/Linear, the first layer included; the
        classifier's outputs are never cut). Layers whose channels cannot be cut (they reach a
        concatenation, a reshape, the output, or are tied to unselected layers) are skipped and
        listed in ``compression_info["skipped"]``.
    batch_size
        Images per calibration forward pass.
    keep
        Deprecated name of ``channels`` (a ``DeprecationWarning`` says so).

    Exactly one of ``param_reduction``, ``amount`` and ``channels``.

    Returns
    -------
    nn.Module
        The smaller copy; ``.compression_info`` holds the options, the kept channels per group
        and the skipped layers with their reasons.
    """
    channels = renamed_keyword("prune_channels", "keep", "channels", keep, channels)
    target = channel_target(param_reduction, ("amount", amount), channels)
    importance, compensate = _check_channel_options(importance, compensate, calibration)
    batch_size = check_int("batch_size", batch_size, low=1)
    request = resolve_channel_request(
        model,
        target,
        calibration=calibration,
        layers=layers,
        residual=residual,
        compensate=compensate,
        what="structured pruning of these layers",
    )
    search, groups, plan = request.search, request.groups, request.plan
    stats = None
    if importance in NEEDS_CALIBRATION or compensate:
        stats = group_statistics(model, calibration, search.groups, batch_size=batch_size)
    scores_raw = (
        fisher_importance(
            model, calibration, search.groups, stats, to_mean=compensate, batch_size=batch_size
        )
        if importance == "fisher"
        else {n: channel_importance(model, g, importance, stats) for n, g in groups.items()}
    )
    orders, scores = {}, {}
    for name, g in groups.items():
        score = scores_raw[name]
        order = np.argsort(-score, kind="stable")
        orders[name] = order
        scores[name] = allocation_scores(score[order], importance, plan, g)
    kept_n = kept_counts(
        request,
        lambda: scores,
        lambda amount: {
            p: max(1, g.channels - round(amount * g.channels)) for p, g in groups.items()
        },
    )
    kept = {p: np.sort(orders[p][:n]).tolist() for p, n in kept_n.items()}
    new = copy.deepcopy(model)
    for p, idx in kept.items():
        cut_group(new, groups[p], idx, tap_means=stats.tap_means if compensate else None)
    probe_model(model, calibration).check(
        new, method="prune_channels", changed=changed_layers(groups, kept)
    )
    new.compression_info = {
        "method": "prune_channels",
        "importance": importance,
        "compensate": compensate,
        "residual": residual,
        "kept": kept,
        "skipped": search.skipped,
    }
    return new

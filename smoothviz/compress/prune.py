"""Pruning without fine-tuning: unstructured magnitude pruning and structured L1 filter pruning.

``prune_magnitude`` zeroes the smallest weights (globally across the selected layers, or the same
fraction in every layer); the weights keep their shape and the parameter count becomes the number
of non-zeros (:func:`smoothviz.measure.count_params` counts the zeroed tensors' non-zeros, marked
in ``model.sparse_parameters``). We zero weights directly instead of using
``torch.nn.utils.prune``: its ``weight_orig``/``weight_mask`` re-parametrisation doubles the
state_dict and gains nothing when no training follows.

``prune_channels`` removes whole filters ranked by L1 norm (Li et al., 2017) and physically shrinks
the producer, its BatchNorm (and a depthwise conv in between) and the consumer's inputs. Only
producer -> consumer chains found by :mod:`smoothviz.compress.chains` are cut, so channels tied by a
residual add are never removed from one side (they are left alone).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from smoothviz.compress.budget import (
    allocate,
    check_reachable,
    check_reduction,
    exactly_one,
)
from smoothviz.compress.chains import Chain, ChannelPlan, find_chains
from smoothviz.layers import select_layers

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
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {list(SCOPES)}, got {scope!r}")
    chosen = select_layers(model, layers)
    weights = [m.weight.detach() for _, m in chosen]
    n_sel = sum(w.numel() for w in weights)
    zeros_sel = sum(int((w == 0).sum()) for w in weights)
    if mode == "amount":
        n_zero = round(value * n_sel)
    else:
        current = _nonzero_params(model)
        check_reachable(
            value,
            current,
            current - (n_sel - zeros_sel),
            "magnitude pruning of the selected layers",
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
    return new


def _check_keep(chains: Mapping[str, Chain], keep: Mapping[str, Sequence[int]]) -> None:
    unknown = [p for p in keep if p not in chains]
    if unknown:
        raise ValueError(
            f"keep: {unknown} are not prunable producers here; allowed: {list(chains)}"
        )
    for p, idx in keep.items():
        c = chains[p].channels
        arr = np.asarray(idx)
        if (
            arr.ndim != 1
            or len(arr) == 0
            or len(np.unique(arr)) != len(arr)
            or (arr.min() < 0 or arr.max() >= c)
        ):
            raise ValueError(
                f"keep[{p!r}] must be distinct channel indices in [0, {c}), at least one"
            )


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


def _input_index(chain: Chain, idx: torch.Tensor) -> torch.Tensor:
    f = chain.features_per_channel
    if f == 1:
        return idx
    return (idx[:, None] * f + torch.arange(f, device=idx.device)[None, :]).flatten()


def _set_input_weight(m: nn.Module, weight: torch.Tensor, k_features: int) -> None:
    m.weight = nn.Parameter(weight.contiguous(), requires_grad=m.weight.requires_grad)
    if isinstance(m, nn.Conv2d):
        m.in_channels = k_features
    else:
        m.in_features = k_features


def apply_channel_cut(
    model: nn.Module,
    chains: Mapping[str, Chain],
    keep: Mapping[str, Sequence[int]],
    mix: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """Cut channels in place (on a copy you own). ``mix[p]`` (k×C) re-mixes the consumer's inputs.

    Without ``mix`` the consumer simply loses the dropped inputs; with it, the consumer's new input
    weights are ``W'[:, s] = Σ_c T[s, c] W[:, c]`` (the interpolative decomposition's correction).
    """
    for p, idx_list in keep.items():
        chain = chains[p]
        dev = model.get_submodule(p).weight.device
        idx = torch.as_tensor(
            sorted(idx_list) if mix is None else list(idx_list), dtype=torch.long, device=dev
        )
        with torch.no_grad():
            for name in (p, *chain.passthrough):
                _slice_out(model.get_submodule(name), idx)
            consumer = model.get_submodule(chain.consumer)
            w = consumer.weight.detach()
            f = chain.features_per_channel
            if mix is None or p not in mix:
                new_w = w[:, _input_index(chain, idx)].clone()
            else:
                t = mix[p].to(w.device, w.dtype)  # (k, C)
                if isinstance(consumer, nn.Linear):
                    w3 = w.reshape(w.shape[0], chain.channels, f)
                    new_w = torch.einsum("sc,ocf->osf", t, w3).reshape(w.shape[0], -1)
                else:
                    new_w = torch.einsum("sc,ochw->oshw", t, w)
            _set_input_weight(consumer, new_w, len(idx) * f)


def drop_channels(
    model: nn.Module,
    keep: Mapping[str, Sequence[int]],
    *,
    layers: Sequence[str] | str | None = None,
) -> nn.Module:
    """Keep only the given output channels of each producer (no correction); returns a new model.

    Parameters
    ----------
    model
        The network (not modified); must be traceable by ``torch.fx``.
    keep
        ``{producer name: channel indices to keep}`` for producers of prunable chains.
    layers
        Producer selection used to find the chains (default as in ``select_layers``).
    """
    chains = {c.producer: c for c in find_chains(model, layers if layers is not None else "all")}
    _check_keep(chains, keep)
    new = copy.deepcopy(model)
    apply_channel_cut(new, chains, keep)
    new.compression_info = {
        "method": "drop_channels",
        "kept": {p: sorted(map(int, v)) for p, v in keep.items()},
    }
    return new


def filter_l1(module: nn.Module) -> torch.Tensor:
    """L1 norm of each output filter of a Conv2d/Linear."""
    w = module.weight.detach()
    return w.abs().reshape(w.shape[0], -1).sum(1).double().cpu()


def prune_channels(
    model: nn.Module,
    *,
    param_reduction: float | None = None,
    amount: float | None = None,
    layers: Sequence[str] | str | None = None,
) -> nn.Module:
    """Structured L1-norm filter pruning that physically removes channels; returns a new model.

    Parameters
    ----------
    model
        The trained network (not modified); must be traceable by ``torch.fx``.
    param_reduction
        Whole-network target in [0, 1), split across layers by one global threshold on the filters'
        L1 norm relative to their layer's largest; met within 1 pp or a :class:`BudgetError` says
        why not.
    amount
        Fraction in [0, 1) of the channels to remove from every prunable layer (at least one
        channel stays).
    layers
        Producer selection (default: every Conv2d/Linear but the first and the last); layers whose
        channels are tied by a residual add or feed several layers are skipped.

    Exactly one of ``param_reduction`` and ``amount``.

    Returns
    -------
    nn.Module
        The smaller copy; ``.compression_info["kept"]`` lists the kept channels per producer.
    """
    mode = exactly_one(param_reduction=param_reduction, amount=amount)
    value = check_reduction(param_reduction if mode == "param_reduction" else amount, mode)
    chain_list = find_chains(model, layers)
    chains = {c.producer: c for c in chain_list}
    plan = ChannelPlan(model, chain_list)
    if mode == "param_reduction":
        check_reachable(value, plan.total, plan.min_params(), "structured pruning of these layers")
    orders, scores = {}, {}
    for p in chains:
        l1 = filter_l1(model.get_submodule(p))
        order = torch.argsort(l1, descending=True, stable=True)
        orders[p] = order.numpy()
        scores[p] = (l1[order] / l1.max().clamp_min(1e-300)).numpy()
    if mode == "param_reduction":
        kept_n = allocate(
            scores, plan.params, plan.total, value, what="structured pruning of these layers"
        )
    else:
        kept_n = {p: max(1, c.channels - round(value * c.channels)) for p, c in chains.items()}
    keep = {p: np.sort(orders[p][: kept_n[p]]).tolist() for p in chains}
    new = copy.deepcopy(model)
    apply_channel_cut(new, chains, keep)
    new.compression_info = {"method": "prune_channels", "kept": keep}
    return new

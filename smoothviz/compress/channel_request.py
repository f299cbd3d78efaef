"""The channel methods' shared front door: one request skeleton for every method that cuts channels.

Torch-Pruning's pruners share ``BasePruner``'s bookkeeping and differ only in how they score and
cut; here :func:`~smoothviz.compress.prune.prune_channels` and
:func:`~smoothviz.compress.interpolative.interpolative_compress` share what a request needs
before any scoring, in three steps:

1. :func:`channel_target`: exactly one of ``param_reduction`` (whole network), the method's
   uniform rule (``amount`` for pruning, ``rtol`` for the interpolative decomposition) and
   ``channels`` (kept count per group), its value checked once;
2. :func:`resolve_channel_request`: calibration checked, channel groups found
   (:func:`~smoothviz.compress.chains.find_groups`), ``channels`` checked against them, the
   closed-form parameter count (:class:`~smoothviz.compress.chains.ChannelPlan`) and, for a
   ``param_reduction`` out of reach, a :class:`~smoothviz.compress.budget.BudgetError` naming the
   layers left out and the ``layers=`` value that adds them (:func:`budget_hints`);
3. :func:`kept_counts`: channels kept per group, from one global allocation over the method's
   per-group scores, from its uniform rule, or as given.

Between the steps a method checks its own options and computes its scores.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from smoothviz.compress.budget import check_reachable, check_reduction, exactly_one, split_budget
from smoothviz.compress.calibration import check_calibration
from smoothviz.compress.chains import ChannelGroup, ChannelPlan, GroupSearch, find_groups
from smoothviz.compress.surgery import bias_readers, check_kept_counts
from smoothviz.layers import compressible_layers, layers_value, select_layers


@dataclass(frozen=True)
class ChannelTarget:
    """The one target of a channel request: ``kind`` is the keyword given (``"param_reduction"``,
    the method's rule such as ``"amount"``/``"rtol"``, or ``"channels"``), ``value`` its checked
    value (a float in ``[0, 1)``, or the ``{group: count}`` dict for ``"channels"``)."""

    kind: str
    value: Any


def channel_target(
    param_reduction: float | None, rule: tuple[str, float | None], channels: Mapping | None
) -> ChannelTarget:
    """Which of the alternative targets is given, its value checked.

    ``rule`` is the method's uniform rule as ``(keyword, value)``, e.g. ``("amount", 0.5)``; its
    value is a fraction in ``[0, 1)`` like ``param_reduction``.
    """
    name, value = rule
    kind = exactly_one(**{"param_reduction": param_reduction, name: value, "channels": channels})
    if kind == "channels":
        if not isinstance(channels, Mapping):
            raise TypeError(
                f"channels must be a dict {{group name: channels to keep}}, got {channels!r}"
            )
        return ChannelTarget(kind, channels)
    fraction = param_reduction if kind == "param_reduction" else value
    return ChannelTarget(kind, check_reduction(fraction, kind))


@dataclass(frozen=True)
class ChannelRequest:
    """A checked channel request: the target, the groups that can be cut, the parameter count.

    ``what`` names the method and its layers in budget errors.
    """

    target: ChannelTarget
    search: GroupSearch
    plan: ChannelPlan
    what: str

    @property
    def groups(self) -> dict[str, ChannelGroup]:
        """The cuttable groups by name, in graph order."""
        return {g.name: g for g in self.search.groups}


def budget_hints(
    model: nn.Module, search: GroupSearch, layers: Sequence[str] | str | None, residual: bool
) -> tuple[dict[str, str], str | None]:
    """Layers a channel method leaves out (with reasons) and the ``layers=`` value adding some."""
    chosen = {n for n, _ in select_layers(model, layers, method="channels")}
    unchosen = [n for n, _ in compressible_layers(model) if n not in chosen]
    everything = find_groups(model, "all", residual=residual).skipped if unchosen else {}
    reasons = {n: everything.get(n, "not in layers=") for n in unchosen}
    reasons.update(search.skipped)
    addable = [n for n in unchosen if n not in everything]
    return reasons, (layers_value(model, chosen | set(unchosen)) if addable else None)


def resolve_channel_request(
    model: nn.Module,
    target: ChannelTarget,
    *,
    calibration: torch.Tensor | None,
    layers: Sequence[str] | str | None,
    residual: bool,
    compensate: bool,
    what: str,
    search: GroupSearch | None = None,
    plan: ChannelPlan | None = None,
) -> ChannelRequest:
    """Check a channel request against the model before any scoring.

    Parameters
    ----------
    model
        The network (must be traceable by ``torch.fx``).
    target
        From :func:`channel_target`.
    calibration
        Checked against the model when given.
    layers, residual
        Writer selection and whether residual groups are cut (see
        :func:`~smoothviz.compress.chains.find_groups`).
    compensate
        Whether bias compensation may add biases (they are counted in the parameter plan).
    what
        Words for the method and its layers, e.g. ``"structured pruning of these layers"``.
    search, plan
        Groups and plan computed before (cached factors carry them); found here when omitted.
    """
    if calibration is not None:
        check_calibration(model, calibration)
    if search is None:
        search = find_groups(model, layers, residual=residual)
    groups = {g.name: g for g in search.groups}
    if target.kind == "channels":
        check_kept_counts(groups, target.value)
    if plan is None:
        plan = ChannelPlan(
            model, search.groups, bias_readers(search.groups, model) if compensate else ()
        )
    if target.kind == "param_reduction":
        reasons, include = budget_hints(model, search, layers, residual)
        check_reachable(
            target.value, plan.total, plan.min_params(), what, left_out=reasons, include=include
        )
    return ChannelRequest(target, search, plan, what)


def kept_counts(
    request: ChannelRequest,
    scores: Callable[[], Mapping[str, np.ndarray]],
    uniform: Callable[[float], dict[str, int]],
) -> dict[str, int]:
    """Channels each group keeps, as the request's target asks.

    Parameters
    ----------
    request
        The checked request.
    scores
        Per group, the importance of its channels in the order they are kept (non-increasing),
        for the global allocation of a ``param_reduction`` (called only then).
    uniform
        The method's rule: ``uniform(value)`` gives the kept count per group.
    """
    kind, value = request.target.kind, request.target.value
    if kind == "channels":
        return {p: int(k) for p, k in value.items()}
    if kind == "param_reduction":
        plan = request.plan
        return split_budget(scores(), plan.params, plan.total, value, what=request.what)
    return uniform(value)

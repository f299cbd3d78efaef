"""Hybrid compression: per layer, factorise (data-aware SVD), remove channels (ID), or both.

No peer tool chooses between the two kinds of structure per layer under one budget; this method
does (ours). Its pieces:

1. **Factors, once per model** (:func:`hybrid_factors`): the data-aware SVD's whitened factors
   (:func:`~smoothviz.compress.data_aware_svd.data_aware_svd_factors`) and the interpolative
   decomposition's pivoted QRs (:func:`~smoothviz.compress.interpolative.interpolative_factors`),
   both on the same calibration images; from them, every SVD term's and every channel's share of
   a layer's post-BatchNorm output energy per parameter saved
   (:mod:`~smoothviz.compress.hybrid_plan`, which says how, why shares, and what is approximate).
2. **One allocation**: the one allocator removes the cheapest units first, SVD terms and channels
   alike, counting the parameters exactly (a layer whose input or output channels were cut is
   factorised, or not, at its new shape). So a layer may keep all its channels and lose rank,
   lose channels and stay dense, or both.
3. **The build, in forward order**: the chosen channels are cut first (the ID's one-shot pivots,
   its interpolation matrix as the readers' starting weight, no mean folded yet); then every layer
   the hybrid changed is refitted, in the order the forward pass runs them, to reproduce the
   *original* model's outputs from the inputs it now receives
   (:func:`~smoothviz.compress.output_fit.fit_to_original`: writers only on their kept output
   channels; readers of cut channels with an intercept, the mean the removed channels carried,
   folded into their BatchNorm's running mean or bias as the ID's compensation does), and truncated
   by the whitened SVD where it is factorised. This is the data-aware SVD's sequential refit and
   the corrected ID's correction in one pass, fitted in the layers' outputs; with no channel cut it
   is exactly the data-aware SVD's sequential refit at the same ranks.

Per target, only step 3 runs: the original model's layer inputs are recorded once
(:class:`~smoothviz.compress.layer_inputs.ReferenceInputs`), so each refit runs only the
compressed model.

It is not guaranteed to beat both single methods: the allocation is greedy on additive estimates
of each unit's error (the errors of many removals do not simply add up through the network), and
its channel choice uses the one-shot pivots rather than the corrected ID's re-measured ones.

This module sits on a floor of its own above the other front doors because it composes two of
their factor types.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from smoothviz._validation import check_int, is_int
from smoothviz.compress.budget import check_reachable, check_reduction, split_budget
from smoothviz.compress.calibration import check_calibration
from smoothviz.compress.data_aware_svd import (
    DEFAULT_DAMPING,
    DataAwareFactors,
    data_aware_svd_factors,
)
from smoothviz.compress.factorized import param_count, split_for_svd
from smoothviz.compress.hybrid_plan import (
    CHANNEL,
    RANK,
    HybridPlan,
    channel_output_error,
    factorizes,
    hybrid_scores,
    kept_from_units,
)
from smoothviz.compress.interpolative import IDFactors, interpolative_factors
from smoothviz.compress.layer_inputs import (
    ReferenceInputs,
    collect_input_stats,
    reference_key,
)
from smoothviz.compress.layer_stream import RefitPass
from smoothviz.compress.output_fit import fit_from_pairs, truncation_factors
from smoothviz.compress.surgery import bias_readers, check_kept_counts, cut_group, fold_shift
from smoothviz.layers import compressible_layers, layers_value

MOVES = ("factorize", "remove_channels")
_UNIT_OF = {"factorize": RANK, "remove_channels": CHANNEL}

__all__ = ["MOVES", "HybridFactors", "hybrid_compress", "hybrid_factors"]


class HybridFactors:
    """Everything the hybrid method computes once per model; build with :func:`hybrid_factors`.

    Attributes
    ----------
    data_aware
        The data-aware SVD's factors (layers that may be factorised).
    interpolative
        The interpolative decomposition's factors (groups whose channels may be removed); their
        calibration inputs are the hybrid's.
    plan
        The exact parameter count (:class:`~smoothviz.compress.hybrid_plan.HybridPlan`).
    rank_errors, channel_errors
        Per layer ``σ_j²``, per group the error of each pivot's removal (post-BatchNorm output
        error per calibration image).
    order
        Every Conv2d/Linear in the order the forward pass runs it.
    cache
        What later calls derive once (the original model's layer inputs).
    """

    method = "hybrid"

    def __init__(
        self,
        data_aware: DataAwareFactors,
        interpolative: IDFactors,
        plan: HybridPlan,
        rank_errors: dict[str, np.ndarray],
        channel_errors: dict[str, np.ndarray],
        order: list[str],
    ) -> None:
        self.data_aware = data_aware
        self.interpolative = interpolative
        self.plan = plan
        self.rank_errors = rank_errors
        self.channel_errors = channel_errors
        self.order = order
        self.cache: dict = {}

    @property
    def calibration(self) -> torch.Tensor:
        return self.interpolative.calibration

    @property
    def batch_size(self) -> int:
        return self.interpolative.batch_size

    def scores(self, moves: Sequence[str] = MOVES) -> dict[str, np.ndarray]:
        """The allocator's scores of the units ``moves`` allows (cached)."""
        key = ("scores", tuple(moves))
        if key not in self.cache:
            self.cache[key] = hybrid_scores(
                self.rank_errors if "factorize" in moves else {},
                self.channel_errors if "remove_channels" in moves else {},
                self.plan,
            )
        return self.cache[key]

    def reference(self, model: nn.Module) -> ReferenceInputs | None:
        """The original's layer inputs on the calibration batches, recorded once and shared with
        the two factor objects (so a sweep that also runs their methods keeps one copy)."""
        key = reference_key(self.calibration, self.batch_size)
        stores = (self.cache, self.interpolative.cache, self.data_aware.cache)
        found = next((s[key] for s in stores if key in s), None)
        if found is None and not any(key in s for s in stores):
            found = ReferenceInputs.record(model, self.calibration, self.batch_size)
        for s in stores:
            s.setdefault(key, found)
        return found


def hybrid_factors(
    model: nn.Module,
    calibration: torch.Tensor,
    *,
    layers: Sequence[str] | str | None = None,
    damping: float = DEFAULT_DAMPING,
    batch_size: int = 128,
    data_aware: DataAwareFactors | None = None,
    interpolative: IDFactors | None = None,
) -> HybridFactors:
    """Compute (once) what :func:`hybrid_compress` needs for any budget.

    Parameters
    ----------
    model
        The trained network (not modified; forward passes only).
    calibration
        Training inputs ``(N, C, H, W)``, a few hundred images; never test images.
    layers
        Layer selection, as for each method: the factorised layers follow ``svd_compress``'s
        default (every Conv2d/Linear but the classifier, the first only where it can pay off),
        the channel groups ``interpolative_compress``'s (every writer).
    damping
        The data-aware SVD's damping (whitening and the refit's ridge).
    batch_size
        Images per forward pass.
    data_aware, interpolative
        Factors already computed on the same ``calibration`` (a sweep's cache); made here when
        omitted.
    """
    model = split_for_svd(model)  # attention as called projections (a copy only then)
    calibration = check_calibration(model, calibration)
    batch_size = check_int("batch_size", batch_size, low=1)
    if data_aware is None:
        data_aware = data_aware_svd_factors(
            model, calibration, layers=layers, damping=damping, batch_size=batch_size
        )
    elif not isinstance(data_aware, DataAwareFactors):
        raise TypeError(f"data_aware must come from data_aware_svd_factors, got {data_aware!r}")
    if interpolative is None:
        interpolative = interpolative_factors(
            model, calibration, layers=layers, batch_size=batch_size
        )
    elif not isinstance(interpolative, IDFactors):
        raise TypeError(
            f"interpolative must come from interpolative_factors, got {interpolative!r}"
        )
    if data_aware.settings["calibration_images"] != len(interpolative.calibration):
        raise ValueError(
            "data_aware and interpolative factors were made on different calibration sets "
            f"({data_aware.settings['calibration_images']} and "
            f"{len(interpolative.calibration)} images); make both on the same"
        )
    groups = interpolative.search.groups
    followers = {r.name: r.norm for g in groups for r in g.readers}
    images = len(interpolative.calibration)
    channel_errors = {
        g.name: channel_output_error(
            model, g, interpolative[g.name].pivots, interpolative[g.name].roots, images, followers
        )
        for g in groups
    }
    rank_errors = data_aware.output_error()
    plan = HybridPlan(model, groups, list(data_aware), bias_readers(groups, model))
    names = [n for n, m in compressible_layers(model) if getattr(m, "groups", 1) == 1]
    _, order, _ = collect_input_stats(model, interpolative.calibration[:1], names, batch_size=1)
    return HybridFactors(data_aware, interpolative, plan, rank_errors, channel_errors, order)


# ------------------------------------------------------------------------------------ request
def _check_moves(moves: object) -> tuple[str, ...]:
    if isinstance(moves, str) or not isinstance(moves, Sequence):
        raise TypeError(f"moves must be a sequence from {list(MOVES)}, got {moves!r}")
    bad = [m for m in moves if m not in MOVES]
    if bad or not moves:
        raise ValueError(f"moves must be a non-empty sequence from {list(MOVES)}, got {moves!r}")
    return tuple(m for m in MOVES if m in moves)


def _left_out(model: nn.Module, factors: HybridFactors) -> tuple[dict[str, str], str | None]:
    """Conv2d/Linear layers the hybrid can neither factorise nor cut the outputs of, with why."""
    touched = set(factors.data_aware) | set(factors.plan.writes)
    skipped = {**factors.data_aware.skipped, **factors.interpolative.search.skipped}
    reasons = {}
    for name, _ in compressible_layers(model):
        if name not in touched:
            reasons[name] = skipped.get(name, "not selected by layers= (or the classifier)")
    addable = [n for n, why in reasons.items() if why.startswith("not selected")]
    include = layers_value(model, [*touched, *addable]) if addable else None
    return reasons, include


def _explicit_sizes(
    factors: HybridFactors,
    ranks: Mapping[str, int] | int | None,
    channels: Mapping[str, int] | None,
) -> tuple[dict[str, int], dict[str, int]]:
    groups = {g.name: g for g in factors.interpolative.search.groups}
    kept = {}
    if channels is not None:
        if not isinstance(channels, Mapping):
            raise TypeError(
                f"channels must be a dict {{group name: channels to keep}}, got {channels!r}"
            )
        check_kept_counts(groups, channels)
        kept = {g: int(k) for g, k in channels.items()}
    chosen = {}
    if ranks is not None:
        given = {n: ranks for n in factors.data_aware} if is_int(ranks) else ranks
        if not isinstance(given, Mapping):
            raise TypeError(f"ranks must be a dict {{layer name: rank}} or an int, got {ranks!r}")
        unknown = [n for n in given if n not in factors.data_aware]
        if unknown:
            raise ValueError(
                f"ranks: {unknown} are not factorisable layers here; allowed names: "
                f"{list(factors.data_aware)}"
            )
        for n, r in given.items():
            chosen[n] = check_int(f"ranks[{n!r}]", r, low=1, high=factors.data_aware[n].max_rank)
    return kept, chosen


def _allocate(
    model: nn.Module, factors: HybridFactors, target: float, moves: tuple[str, ...]
) -> tuple[dict[str, int], dict[str, int]]:
    plan = factors.plan
    scores = factors.scores(moves)
    floor_units = {k: 1 for k in scores}
    reasons, include = _left_out(model, factors)
    what = f"the hybrid method ({' and '.join(moves)}) of the selected layers"
    check_reachable(
        target,
        plan.total,
        plan.params_of_units(floor_units),
        what,
        left_out=reasons,
        include=include,
    )
    units = split_budget(scores, plan.params_of_units, plan.total, target, what=what)
    return kept_from_units(units)


# -------------------------------------------------------------------------------------- build
def _build(
    model: nn.Module,
    factors: HybridFactors,
    kept: Mapping[str, int],
    ranks: Mapping[str, int],
    *,
    progress: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """The compressed copy (see the module docstring, step 3) and what was done per layer."""
    from tqdm.auto import tqdm

    groups = {g.name: g for g in factors.interpolative.search.groups}
    plan = factors.plan
    cut = {g: int(k) for g, k in kept.items() if int(k) < groups[g].channels}
    new = copy.deepcopy(model)
    rows: dict[str, list[int]] = {}  # writer -> original output channels kept, in its new order
    readers = {}  # reader of a cut group -> its Reader
    kept_idx = {}
    for name, g in groups.items():  # graph order
        if name not in cut:
            continue
        s, mix = factors.interpolative[name].interpolation(cut[name])
        cut_group(new, g, s.tolist(), mix={src: torch.from_numpy(t) for src, t in mix.items()})
        rows.update({w.name: s.tolist() for w in g.writers})
        readers.update({r.name: r for r in g.readers})
        kept_idx[name] = sorted(int(i) for i in s)
    factorised = {
        n: int(r) for n, r in ranks.items() if factorizes(int(r), *plan.shape_after(n, cut))
    }
    touched = set(factorised) | set(rows) | set(readers)
    da = factors.data_aware
    damping = da.settings["damping"]
    reference = factors.reference(model) if touched else None
    was_training = model.training
    model.eval()
    new.eval()
    changed = False  # until a layer changes, the original's inputs are the current ones
    try:
        names = [n for n in factors.order if n in touched]
        refit = RefitPass(model, new, factors.calibration, factors.batch_size, reference)
        if names:
            refit.open()  # after the channel cuts, before any layer is refitted
        for name in tqdm(names, desc="hybrid refit", disable=not progress, leave=False):
            module = new.get_submodule(name)
            fit = None
            if changed or name in rows or name in readers:
                fit = fit_from_pairs(
                    model.get_submodule(name),
                    module,
                    refit.pairs(name),
                    damping=damping,
                    rows=rows.get(name),
                    intercept=name in readers,
                )
                if fit.shift is not None:
                    fold_shift(new, readers[name], fit.shift)
            if name in factorised:
                if fit is None:  # nothing upstream changed: the cached factors are exact
                    lf = da[name]
                else:
                    d = da.output_weights[name]
                    d = d if name not in rows else d[torch.as_tensor(rows[name])]
                    lf, _ = truncation_factors(
                        name,
                        fit.weight.reshape(module.weight.shape),
                        fit.gram,
                        d,
                        damping,
                        module.weight.dtype,
                    )
                refit.replace(name, lf.build_layer(module, factorised[name]))
            elif fit is not None:
                weight = fit.weight.reshape(module.weight.shape).to(module.weight)
                module.weight = nn.Parameter(weight, requires_grad=module.weight.requires_grad)
            changed = True
    finally:
        model.train(was_training)
    new.train(was_training)
    info = {
        "ranks": {n: factorised.get(n) for n in ranks},
        "kept": kept_idx,
        "layers": {
            n: "both"
            if n in factorised and (n in rows or n in readers)
            else "factorised"
            if n in factorised
            else "channels"
            for n in factors.order
            if n in touched
        },
    }
    return new, info


# ------------------------------------------------------------------------------------ compress
def hybrid_compress(
    model: nn.Module,
    calibration: torch.Tensor | None = None,
    *,
    param_reduction: float | None = None,
    ranks: Mapping[str, int] | int | None = None,
    channels: Mapping[str, int] | None = None,
    moves: Sequence[str] = MOVES,
    layers: Sequence[str] | str | None = None,
    factors: HybridFactors | None = None,
    damping: float = DEFAULT_DAMPING,
    batch_size: int = 128,
    progress: bool = False,
) -> nn.Module:
    """Compress by choosing, per layer, factorisation, channel removal or both; a new model.

    Parameters
    ----------
    model
        The trained network (not modified); must be traceable by ``torch.fx``.
    calibration
        Training inputs ``(N, C, H, W)``, a few hundred images (not needed when ``factors`` is
        given: they keep theirs).
    param_reduction
        Whole-network target in [0, 1): the fraction of *all* the model's parameters removed,
        split across SVD terms and channels by one global threshold on the share of a layer's
        output energy lost per parameter saved (:mod:`~smoothviz.compress.hybrid_plan`); met
        within 1 pp or a
        :class:`~smoothviz.compress.budget.BudgetError` says why.
    ranks, channels
        Explicit sizes instead of a budget: ``{layer: rank}`` (or one int for every factorisable
        layer) and ``{group: channels kept}``; either or both. A rank at or above a layer's
        break-even rank (at its shape after the channel cut) leaves it dense.
    moves
        Which structures the allocation may use: ``("factorize", "remove_channels")`` (default),
        or one of them alone.
    layers
        Layer selection (see :func:`hybrid_factors`); ignored when ``factors`` is given.
    factors
        Cached :func:`hybrid_factors` of ``model``.
    damping, batch_size
        As for :func:`hybrid_factors`.
    progress
        Show a progress bar over the refitted layers.

    Exactly one of ``param_reduction`` and the explicit sizes (``ranks``, ``channels``).

    Returns
    -------
    nn.Module
        The compressed copy; ``.compression_info`` holds the rank per factorisable layer (``None``:
        dense), the kept channels per cut group, what each changed layer became
        (``"factorised"``, ``"channels"``, ``"both"``), the moves and the skipped layers.
    """
    explicit = ranks is not None or channels is not None
    if (param_reduction is None) == (not explicit):
        raise TypeError(
            "pass exactly one of param_reduction and the explicit sizes (ranks and/or channels); "
            f"got param_reduction={param_reduction!r}, ranks={ranks!r}, channels={channels!r}"
        )
    if param_reduction is not None:
        param_reduction = check_reduction(param_reduction)
    moves = _check_moves(moves)
    model = split_for_svd(model)  # as hybrid_factors saw it (a copy only with attention)
    if factors is None:
        if calibration is None:
            raise TypeError("calibration is required unless cached factors are passed")
        factors = hybrid_factors(
            model, calibration, layers=layers, damping=damping, batch_size=batch_size
        )
    elif not isinstance(factors, HybridFactors):
        raise TypeError(f"factors must come from hybrid_factors, got {factors!r}")
    if param_count(model) != factors.plan.total:
        raise ValueError("factors: they were computed for another model (parameter counts differ)")
    if explicit:
        kept, chosen = _explicit_sizes(factors, ranks, channels)
    else:
        kept, chosen = _allocate(model, factors, param_reduction, moves)
    new, info = _build(model, factors, kept, chosen, progress=progress)
    skipped = {**factors.data_aware.skipped, **factors.interpolative.search.skipped}
    new.compression_info = {
        "method": "hybrid",
        **info,
        "moves": list(moves),
        "skipped": {n: why for n, why in skipped.items() if n not in info["layers"]},
        "damping": factors.data_aware.settings["damping"],
    }
    return new

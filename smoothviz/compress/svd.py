"""Truncated-SVD compression (the smooth-training paper's method): each layer's weight truncated.

For the matrix view ``M = W.reshape(C_out, C_in*k*k) ≈ U_r Σ_r V_rᵀ`` a layer becomes two thinner
layers (:class:`~smoothviz.compress.factorized.Factorized`), only where that saves parameters;
no gradient step. The SVDs are the expensive part, so they are computed once per model
(:func:`svd_factors`) and every rank choice afterwards only slices them
(:func:`~smoothviz.compress.factorized.compress_from_factors`): this is what the sweep and the
rank-explorer widget use. SVDs run in float64 through ``torch.linalg.svd``.

The floors below: :mod:`~smoothviz.compress.factorized` (factor types, the factorised layer, the
request checked once) and :mod:`~smoothviz.compress.rank_allocation` (how ranks are chosen).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from smoothviz.compress.factorized import (
    Factorized,
    LayerFactors,
    SVDFactors,
    compress_from_factors,
    factorize_layer,
    factorized_model,
    param_count,
    resolve_svd_request,
    split_for_svd,
    svd_layers,
    svd_target,
)
from smoothviz.compress.forward_check import probe_model
from smoothviz.compress.rank_allocation import ALLOCATIONS, choose_ranks

SVD_ALLOCATIONS = ALLOCATIONS  # the default ("energy") first

__all__ = [
    "SVD_ALLOCATIONS",
    "svd_compress",
    "svd_factors",
    # the factor types and helpers live in factorized.py; importable from here as before
    "Factorized",
    "LayerFactors",
    "SVDFactors",
    "compress_from_factors",
    "factorize_layer",
]


def svd_factors(model: nn.Module, layers: Sequence[str] | str | None = None) -> SVDFactors:
    """Compute (once) the thin SVD of every selected layer's matrix view.

    Parameters
    ----------
    model
        The trained network (not modified).
    layers
        Layer selection as in :func:`smoothviz.layers.select_layers`; grouped convolutions and
        layers the model does not call as modules (found by one forward pass on a dummy batch,
        :mod:`~smoothviz.compress.forward_check`) are skipped. An ``nn.MultiheadAttention`` is
        seen split into its projections ``q_proj``, ``k_proj``, ``v_proj`` and ``out_proj``
        (:mod:`~smoothviz.compress.attention`), under those names.

    Returns
    -------
    SVDFactors
        A mapping ``name -> LayerFactors`` plus the model's parameter count; pass it to
        :func:`~smoothviz.compress.factorized.compress_from_factors` or
        ``svd_compress(..., factors=...)``.
    """
    model = split_for_svd(model)
    chosen = svd_layers(model, layers, probe_model(model, record_calls=True))
    return _factors_of(model, chosen)


def _factors_of(model: nn.Module, chosen: Sequence[tuple[str, nn.Module]]) -> SVDFactors:
    factors = {name: LayerFactors.of_layer(m, name) for name, m in chosen}
    return SVDFactors(factors, param_count(model))


def svd_compress(
    model: nn.Module,
    *,
    param_reduction: float | None = None,
    energy: float | None = None,
    ranks: Mapping[str, int] | int | None = None,
    layers: Sequence[str] | str | None = None,
    factors: SVDFactors | None = None,
    allocation: str = "energy",
    calibration: torch.Tensor | None = None,
) -> nn.Module:
    """Compress with truncated SVD; returns a new model, the input is left untouched.

    Parameters
    ----------
    model
        The trained network.
    param_reduction
        Whole-network target: the fraction of *all* the model's parameters to remove, in [0, 1).
        Split across layers by ``allocation``; met within 1 pp.
    energy
        Per-layer kept-energy threshold in (0, 1]: each layer keeps the smallest rank with
        ``Σ_{j<r} σ_j² >= energy · Σ σ_j²``.
    ranks
        ``{layer name: rank}``, or one int for every selected layer.
    layers
        Layer selection (default: every Conv2d/Linear but the classifier; the first layer only
        where factorising it can pay off, see :func:`smoothviz.layers.default_layers`).
    factors
        Cached :func:`svd_factors` of ``model`` to skip the SVDs.
    allocation
        How ``param_reduction`` is split across layers: ``"energy"`` (default, the paper's
        method: one threshold on ``σ_j² / Σσ²``), ``"output_error"`` (one threshold on the output
        error each removal causes on ``calibration``, post-BatchNorm, see
        :func:`~smoothviz.compress.rank_allocation.output_error_scores`) or ``"sensitivity"``
        (measured KL to the uncompressed outputs of cutting each layer alone, see
        :mod:`smoothviz.compress.sensitivity`). The truncation itself stays weight-only.
    calibration
        Training inputs ``(N, ...)``; needed by ``"output_error"`` and ``"sensitivity"``.
        The scores are computed once and kept in ``factors.cache``.

    Exactly one of ``param_reduction``, ``energy``, ``ranks`` must be given.

    Layers the model does not call as modules (another module reads their weight directly, as
    torchvision's Swin attention does) are left out, and named in a ``BudgetError``; an
    ``nn.MultiheadAttention`` is split into called projections that are factorised like any
    Linear (:mod:`~smoothviz.compress.attention`). Before returning, the compressed model is run
    on the first calibration inputs (a dummy batch without ``calibration``); a model that does not
    run raises :class:`~smoothviz.compress.forward_check.BrokenModelError` naming the layer.

    Returns
    -------
    nn.Module
        The compressed copy, with ``.compression_info`` (method and ranks).
    """
    target = svd_target(param_reduction, energy, ranks)
    model = split_for_svd(model)  # a copy only when it holds attention
    request = resolve_svd_request(
        model,
        target,
        layers=layers,
        allocation=allocation,
        calibration=calibration,
        allocations=SVD_ALLOCATIONS,
        default_allocation="energy",
        needs_calibration=("output_error", "sensitivity"),
        what="SVD of the selected layers",
    )
    if factors is None:
        factors = _factors_of(model, request.layers)
    else:
        missing = [n for n in request.names if n not in factors]
        if missing:
            raise ValueError(f"factors: no cached SVD for layers {missing}")
        factors = factors.subset(request.names)
    new, used = factorized_model(model, factors, choose_ranks(model, factors, request))
    request.probe.check(new, method="svd_compress", changed=[n for n, r in used.items() if r])
    new.compression_info = {"method": factors.method, "ranks": used}
    return new

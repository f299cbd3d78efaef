"""Rank allocation: how many terms each layer of an SVD keeps. Every way smoothviz chooses ranks.

The vocabulary (``docs/methods.md``, "Targets and allocations"): the *energy* of term ``j`` of a
layer is ``σ_j² / Σσ²``, its share of the layer's spectrum (the weight's for ``svd``, the whitened
output's for ``svd_data_aware``); a layer's *kept energy* at rank ``r`` is the sum over ``j < r``.

- The ``energy=`` target: each layer keeps the smallest rank whose kept energy reaches it
  (:func:`energy_ranks`).
- A whole-network ``param_reduction``, split by one global threshold on a score that compares
  across layers (:func:`allocate_ranks`, ``allocation=``): ``"energy"`` (the paper's, default of
  ``svd``), ``"output_error"`` (the output error each removal causes on calibration inputs,
  default of ``svd_data_aware``) or ``"sensitivity"`` (measured KL of cutting each layer alone).
- The rank explorer's data-free splits, which never fail (:func:`closest_ranks`): ``"energy"``
  (the global threshold above, closest split when 1 pp cannot be met), ``"uniform_energy"`` (every
  layer keeps the same energy) and ``"uniform_rank"`` (every layer keeps the same fraction of its
  full rank); the last two take the level whose parameter count is closest to the budget.
- :func:`choose_ranks`: what a checked SVD request asks for (used by both SVD front doors).

Allocations read the factors through their common interface; the factors say what they know:
:meth:`~smoothviz.compress.factorized.SVDFactors.output_error` is ``None`` for weight-only factors
(then measured here, :func:`output_error_scores`) and the whitened ``σ_j²`` for data-aware ones.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from smoothviz._validation import check_choice
from smoothviz.compress.budget import check_reduction, split_budget
from smoothviz.compress.calibration import check_calibration
from smoothviz.compress.factorized import SVDFactors, SVDRequest, factorized_model
from smoothviz.compress.layer_inputs import collect_input_stats, output_weights
from smoothviz.compress.sensitivity import (
    DEFAULT_IMAGES,
    candidate_sizes,
    fingerprint,
    measure_sensitivity,
    unit_scores,
)
from smoothviz.compress.shrinkage import warn_few_rows
from smoothviz.spectral import rank_for_energy

ALLOCATIONS = ("energy", "output_error", "sensitivity")
EXPLORER_ALLOCATIONS = ("energy", "uniform_energy", "uniform_rank")
LEVELS = np.linspace(1e-3, 1.0, 400)  # the levels a uniform split searches


def energy_ranks(factors: SVDFactors, energy: float) -> dict[str, int]:
    """Per layer, the smallest rank that keeps at least ``energy`` (in (0, 1]) of its spectrum
    (:func:`smoothviz.spectral.rank_for_energy`)."""
    return {name: rank_for_energy(f.s, energy) for name, f in factors.items()}


def output_error_scores(
    model: nn.Module, factors: SVDFactors, calibration: torch.Tensor, *, batch_size: int = 128
) -> dict[str, np.ndarray]:
    """Output error each rank-one term's removal causes, measured for weight-only SVD factors.

    For ``M = Σ σ_j u_j v_jᵀ``, removing term ``j`` changes the (post-BatchNorm) output by
    ``D u_j σ_j v_jᵀ X``, of energy ``σ_j² ‖D u_j‖² v_jᵀ C v_j`` per calibration image (``C`` the
    layer's input covariance, ``D`` :func:`~smoothviz.compress.layer_inputs.output_weights`).
    Cross terms between removed terms are ignored; the scores are made non-increasing within a
    layer (a running maximum from the end), as the allocator requires. Cached in
    ``factors.cache``.
    """
    calibration = check_calibration(model, calibration)
    key = ("output_error", fingerprint(calibration), tuple(factors))
    if key in factors.cache:
        return factors.cache[key]
    stats, _, followers = collect_input_stats(
        model, calibration, list(factors), batch_size=batch_size
    )
    out, short = {}, []
    for name, f in factors.items():
        st = stats.get(name)
        if st is None or st.unusable():  # no signal: every term is as harmless as any other
            out[name] = np.zeros(f.max_rank)
            continue
        d = output_weights(model, name, followers.get(name))
        v = f.vh.double().T  # (n, r)
        cov, _ = st.shrunk_covariance()  # as measured unless it saw too few rows
        if (gap := st.shortfall(name)) is not None:
            short.append(gap)
        input_energy = ((cov @ v) * v).sum(0)
        out_norm = (d[:, None] * f.u.double()).pow(2).sum(0)
        e = (f.s.double().pow(2) * out_norm * input_energy).numpy()
        out[name] = np.maximum.accumulate(e[::-1])[::-1]
    warn_few_rows("output_error allocation", short)
    factors.cache[key] = out
    return out


def rank_sensitivity(
    model: nn.Module,
    factors: SVDFactors,
    calibration: torch.Tensor,
    *,
    images: int | None = None,
    progress: bool = False,
):
    """The sensitivity table of a model's SVD factors (each layer alone at candidate ranks).

    Candidates are fractions of the full rank up to the break-even rank
    (:func:`~smoothviz.compress.sensitivity.candidate_sizes`); cached in ``factors.cache``.
    """
    images = DEFAULT_IMAGES if images is None else images
    calibration = check_calibration(model, calibration)
    x = calibration[:images]
    key = ("sensitivity", fingerprint(x), tuple(factors))
    if key not in factors.cache:
        candidates = {n: candidate_sizes(f.max_rank, f.break_even_rank) for n, f in factors.items()}
        factors.cache[key] = measure_sensitivity(
            model,
            x,
            candidates,
            {n: f.max_rank for n, f in factors.items()},
            lambda name, rank: factorized_model(model, factors, {name: rank})[0],
            images=None,
            progress=progress,
        )
    return factors.cache[key]


def rank_scores(
    model: nn.Module | None,
    factors: SVDFactors,
    allocation: str,
    calibration: torch.Tensor | None = None,
    *,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Per layer, the score of every term that ``allocation`` compares across layers.

    ``"energy"``: ``σ_j² / Σσ²`` (needs neither ``model`` nor ``calibration``);
    ``"output_error"``: the output error of each term (what the factors carry,
    :meth:`~smoothviz.compress.factorized.SVDFactors.output_error`, else measured by
    :func:`output_error_scores`); ``"sensitivity"``: measured KL (:func:`rank_sensitivity`) per
    parameter saved (``unit_scores(..., rule="marginal")``, each rank costing ``m + n``
    parameters). Scores are non-increasing within a layer, as the allocator requires.
    """
    if allocation == "energy":
        return {n: f.energy() for n, f in factors.items()}
    if allocation == "output_error":
        scores = factors.output_error()
        return output_error_scores(model, factors, calibration) if scores is None else scores
    if allocation == "sensitivity":
        table = rank_sensitivity(model, factors, calibration, progress=progress)
        return unit_scores(table, {n: f.shape[0] + f.shape[1] for n, f in factors.items()})
    raise ValueError(f"allocation must be one of {list(ALLOCATIONS)}, got {allocation!r}")


def allocate_ranks(
    model: nn.Module,
    factors: SVDFactors,
    param_reduction: float,
    allocation: str,
    calibration: torch.Tensor | None = None,
    *,
    progress: bool = False,
) -> dict[str, int]:
    """Per-layer ranks that remove ``param_reduction`` of the model, split by ``allocation``.

    Parameters
    ----------
    model
        The model the factors were computed from (read by ``"output_error"`` and
        ``"sensitivity"`` only).
    factors
        Its factors (or a subset of them: the layers that take part).
    param_reduction
        A whole-network target already checked (a float in ``[0, 1)``: the front doors check it
        once, with :func:`~smoothviz.compress.budget.check_reduction`).
    allocation
        ``"energy"``, ``"output_error"`` or ``"sensitivity"``: one global threshold on
        :func:`rank_scores`.
    calibration
        Training inputs; needed by ``"output_error"`` on weight-only factors and by
        ``"sensitivity"``.
    progress
        Show a progress bar while sensitivity is measured.

    Raises
    ------
    BudgetError
        If no split gets within 1 pp of the target.
    """
    scores = rank_scores(model, factors, allocation, calibration, progress=progress)
    what = f"{factors.method} of the selected layers (allocation={allocation!r})"
    return split_budget(scores, factors.params_at, factors.total_params, param_reduction, what=what)


def _closest_level(
    factors: SVDFactors, target: float, ranks_at: Callable[[float], dict[str, int]]
) -> dict[str, int]:
    """The ranks at the level (of :data:`LEVELS`) whose parameter count is closest to the goal
    (parameters grow with the level; the first of equally close levels wins)."""
    goal = (1.0 - target) * factors.total_params
    best = None
    for level in LEVELS:
        ranks = ranks_at(float(level))
        gap = abs(factors.params_at(ranks) - goal)
        if best is None or gap < best[0]:
            best = (gap, ranks)
    return best[1]


def closest_ranks(
    factors: SVDFactors, param_reduction: float, allocation: str = "energy"
) -> dict[str, int]:
    """Data-free per-layer ranks as close to a whole-network budget as the split allows.

    What the rank explorer offers; unlike :func:`allocate_ranks` it never raises for a budget
    that cannot be met within 1 pp: it returns the closest split there is (the parameter readout
    shows what was reached).

    Parameters
    ----------
    factors
        The factors of the layers explored.
    param_reduction
        Whole-network target in ``[0, 1)``.
    allocation
        ``"energy"``: one global threshold on ``σ_j² / Σσ²`` (what ``svd_compress`` does);
        ``"uniform_energy"``: every layer keeps the same energy (the :func:`energy_ranks` level,
        searched); ``"uniform_rank"``: every layer keeps the same fraction of its full rank
        (rounded, at least 1).
    """
    target = check_reduction(param_reduction)
    check_choice("allocation", allocation, EXPLORER_ALLOCATIONS)
    if allocation == "energy":
        scores = rank_scores(None, factors, "energy")
        return split_budget(scores, factors.params_at, factors.total_params, target, tolerance=1.0)
    if allocation == "uniform_energy":
        return _closest_level(factors, target, lambda level: energy_ranks(factors, level))
    return _closest_level(
        factors,
        target,
        lambda level: {
            n: max(1, min(f.max_rank, round(level * f.max_rank))) for n, f in factors.items()
        },
    )


def choose_ranks(
    model: nn.Module, factors: SVDFactors, request: SVDRequest, *, progress: bool = False
) -> dict[str, int]:
    """The ranks a checked SVD request asks for, on the layers of ``factors``.

    ``"ranks"``: as given; ``"energy"``: :func:`energy_ranks`; ``"param_reduction"``:
    :func:`allocate_ranks` with the request's allocation and calibration.
    """
    if request.kind == "ranks":
        return dict(request.ranks)
    if request.kind == "energy":
        return energy_ranks(factors, request.value)
    return allocate_ranks(
        model,
        factors,
        request.value,
        request.allocation,
        request.calibration,
        progress=progress,
    )

"""Rank allocation in one place: the energy rule, the explorer's splits, scores the factors carry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smoothviz import analysis
from smoothviz.compress import data_aware_svd_factors, svd_factors
from smoothviz.compress.budget import BudgetError
from smoothviz.compress.rank_allocation import (
    EXPLORER_ALLOCATIONS,
    allocate_ranks,
    closest_ranks,
    energy_ranks,
    rank_scores,
)
from smoothviz.models import build_model
from smoothviz.spectral import rank_for_energy


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return build_model("cnn", 1, 10, width=8).eval()


@pytest.fixture(scope="module")
def calib():
    return torch.randn(32, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def _old_energy_rank(s: torch.Tensor, energy: float) -> int:
    """The rule as ``SVDFactors.ranks_for_energy`` wrote it before it had one home."""
    e = s.double().pow(2)
    cum = np.cumsum((e / e.sum().clamp_min(1e-300)).numpy())
    return int(min(np.searchsorted(cum, energy - 1e-12) + 1, len(s)))


def test_the_energy_rule_is_the_one_svd_and_analysis_use(cnn):
    factors = svd_factors(cnn)
    for energy in (1e-3, 0.5, 0.9, 0.99, 1.0):
        ranks = energy_ranks(factors, energy)
        assert ranks == {n: _old_energy_rank(f.s, energy) for n, f in factors.items()}
    summary = analysis.spectrum_summary(cnn).set_index("layer")
    for name, f in factors.items():
        assert summary.loc[name, "rank_90"] == rank_for_energy(f.s, 0.9)
    assert analysis.rank_for_energy is rank_for_energy
    assert rank_for_energy([1.0, 3.0], 0.9) == 1  # unsorted input is sorted first
    assert rank_for_energy(torch.zeros(4), 0.5) == 4  # nothing to keep: full rank
    with pytest.raises(ValueError, match=r"energy must be a number in \(0, 1\], got 0"):
        rank_for_energy([1.0], 0)


# RankExplorer.allocate's old method names and the allocations they now map to. That the explorer
# chose exactly these ranks before it called closest_ranks is checked by
# benchmarks/behaviour_check.py (the explorer's ranks under each drop-down label).
WIDGET_LABELS = {"global": "energy", "energy": "uniform_energy", "fraction": "uniform_rank"}


@pytest.fixture(scope="module")
def explorer(cnn, mini_data):
    from smoothviz.widgets import RankExplorer

    return RankExplorer(cnn, mini_data, param_reduction=0.3, drag_subset=50, settle_seconds=None)


@pytest.mark.parametrize("old, new", WIDGET_LABELS.items())
def test_the_explorers_old_method_names_still_work_and_warn(explorer, old, new):
    assert set(WIDGET_LABELS.values()) == set(EXPLORER_ALLOCATIONS)
    for target in (0.0, 0.15, 0.4, 0.6, 0.8, 0.95):
        with pytest.warns(DeprecationWarning, match="use allocation= instead"):
            by_old_name = explorer.allocate(target, method=old)
        assert by_old_name == explorer.allocate(target, new)
        assert by_old_name == closest_ranks(explorer.factors, target, new), (old, target)
    with pytest.raises(ValueError, match="method must be one of"):
        explorer.allocate(0.5, method="fancy")


def test_explorer_allocations_meet_the_budget_where_they_can(cnn):
    factors = svd_factors(cnn)
    total = factors.total_params
    for allocation in EXPLORER_ALLOCATIONS:
        ranks = closest_ranks(factors, 0.4, allocation)
        assert abs(1 - factors.params_at(ranks) / total - 0.4) <= 0.02, allocation
    assert closest_ranks(factors, 0.4) == allocate_ranks(cnn, factors, 0.4, "energy")
    # Out of reach: allocate_ranks refuses, closest_ranks gives the closest split there is.
    with pytest.raises(BudgetError):
        allocate_ranks(cnn, factors, 0.97, "energy")
    smallest = closest_ranks(factors, 0.97)
    assert all(r == 1 or not factors[n].factorizes_at(r) for n, r in smallest.items())
    # uniform_energy: one kept-energy level for every layer; uniform_rank: one rank fraction.
    ranks = closest_ranks(factors, 0.5, "uniform_energy")
    kept = {n: f.energy()[: ranks[n]].sum() for n, f in factors.items()}
    level = min(kept.values())
    assert ranks == energy_ranks(factors, level)
    with pytest.raises(ValueError, match=r"allocation must be one of \['energy', 'uniform_energy'"):
        closest_ranks(factors, 0.5, "global")


def test_factors_say_what_their_output_error_is(cnn, calib):
    weight_only = svd_factors(cnn)
    data_aware = data_aware_svd_factors(cnn, calib)
    assert weight_only.output_error() is None
    carried = data_aware.output_error()
    assert set(carried) == set(data_aware)
    # Data-aware factors need no calibration for it; weight-only ones measure it.
    scores = rank_scores(cnn, data_aware, "output_error")
    assert all(np.array_equal(s, carried[n]) for n, s in scores.items())
    measured = rank_scores(cnn, weight_only, "output_error", calib)
    assert set(measured) == set(weight_only) and all(
        np.all(np.diff(s) <= 0) for s in measured.values()
    )
    ranks = allocate_ranks(cnn, data_aware, 0.5, "output_error")
    assert abs(1 - data_aware.params_at(ranks) / data_aware.total_params - 0.5) <= 0.01
    with pytest.raises(ValueError, match=r"allocation must be one of \['energy', 'output_error'"):
        rank_scores(cnn, weight_only, "loss")

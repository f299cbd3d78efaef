"""Measured sensitivity and the allocation options of both SVD methods."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import smoothviz.compress.rank_allocation as rank_allocation
from smoothviz.compress import (
    BudgetError,
    allocate,
    compress_from_factors,
    data_aware_svd_compress,
    data_aware_svd_factors,
    measure_sensitivity,
    svd_compress,
    svd_factors,
    unit_scores,
)
from smoothviz.compress.rank_allocation import allocate_ranks, output_error_scores
from smoothviz.compress.sensitivity import candidate_sizes, fingerprint
from smoothviz.measure import count_params
from smoothviz.models import build_model


@pytest.fixture()
def cnn():
    torch.manual_seed(0)
    return build_model("cnn", 1, 10, width=8).eval()


@pytest.fixture()
def calib():
    return torch.randn(32, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def test_candidate_sizes():
    assert candidate_sizes(16) == [1, 2, 3, 4, 6, 8, 10, 12, 14, 15]
    assert candidate_sizes(16, limit=7) == [1, 2, 3, 4, 6, 7]
    assert candidate_sizes(1) == [] and candidate_sizes(16, limit=0) == []
    assert candidate_sizes(4, limit=10) == [1, 2, 3]


def test_unit_scores_interpolate_and_are_non_increasing():
    table = pd.DataFrame(
        {"group": ["a", "a", "b"], "size": [2, 4, 1], "max_size": [8, 8, 3], "kl": [0.8, 0.2, 0.5]}
    )
    s = unit_scores(table, rule="level")
    # keep 0..7 units of a: below 2 the damage of 2; 2 -> 0.8, 4 -> 0.2, 8 -> 0 linearly.
    np.testing.assert_allclose(s["a"], [0.8, 0.8, 0.8, 0.5, 0.2, 0.15, 0.1, 0.05])
    np.testing.assert_allclose(s["b"], [0.5, 0.5, 0.25])
    noisy = pd.DataFrame(
        {"group": ["c"] * 3, "size": [1, 2, 3], "max_size": [5] * 3, "kl": [0.3, 0.1, 0.2]}
    )
    c = unit_scores(noisy, rule="level")["c"]
    assert np.all(np.diff(c) <= 0) and c[2] == pytest.approx(0.2)


def test_marginal_scores_are_hull_slopes_per_parameter():
    table = pd.DataFrame(
        {"group": ["a", "a", "a"], "size": [1, 2, 3], "max_size": [4] * 3, "kl": [0.9, 0.6, 0.1]}
    )
    # Damage by kept units 1..4: 0.9, 0.6, 0.1, 0. The point (2, 0.6) lies above the hull from
    # (1, 0.9) to (3, 0.1), so units 1 and 2 share the slope 0.4; unit 3 removes 0.1; 10 per unit.
    s = unit_scores(table, {"a": 10})["a"]
    np.testing.assert_allclose(s, [0.04, 0.04, 0.04, 0.01])
    with pytest.raises(TypeError, match=r"costs .* are required for rule='marginal'"):
        unit_scores(table)
    with pytest.raises(ValueError, match=r"costs: no parameters-per-unit given for groups \['a'\]"):
        unit_scores(table, {"b": 1})
    with pytest.raises(ValueError, match=r"rule must be one of \['marginal', 'level'\]"):
        unit_scores(table, {"a": 1}, rule="aimet")


def test_greedy_rule_gives_each_group_the_smallest_size_under_one_threshold():
    """AIMET's rule: with these scores every group is cut where its damage crosses one level."""
    table = pd.DataFrame(
        {
            "group": ["a"] * 3 + ["b"] * 3,
            "size": [1, 2, 3] * 2,
            "max_size": [4] * 6,
            "kl": [0.9, 0.1, 0.01, 0.9, 0.6, 0.3],  # b is far more sensitive than a
        }
    )

    def count(kept):  # 10 parameters per unit
        return 10 * sum(kept.values())

    kept = allocate(unit_scores(table, rule="level"), count, 80, 0.25)
    assert kept == {"a": 2, "b": 4}


def test_marginal_rule_cuts_where_a_parameter_costs_least_damage():
    """b's units hold 100 parameters each, a's one: the marginal rule takes b's cheap unit and
    leaves a whole; the level rule also spends damage on a, which saves almost nothing."""
    table = pd.DataFrame(
        {
            "group": ["a"] * 3 + ["b"] * 3,
            "size": [1, 2, 3] * 2,
            "max_size": [4] * 6,
            "kl": [0.5, 0.2, 0.05, 0.9, 0.6, 0.3],
        }
    )

    def count(kept):
        return kept["a"] + 100 * kept["b"]

    target = 1 - 304 / 404
    assert allocate(unit_scores(table, {"a": 1, "b": 100}), count, 404, target) == {"a": 4, "b": 3}
    assert allocate(unit_scores(table, rule="level"), count, 404, target) == {"a": 2, "b": 3}


def test_measure_sensitivity_is_zero_for_an_unchanged_model_and_grows_with_the_cut(cnn, calib):
    factors = svd_factors(cnn)
    table = measure_sensitivity(
        cnn,
        calib,
        {"10": [1, 8, 15], "3": [2]},
        {"10": 16, "3": 16},
        lambda g, k: compress_from_factors(cnn, factors, {g: k}) if k < 15 else cnn,
    )
    assert list(table.columns) == ["group", "size", "max_size", "kl"]
    by = table.set_index(["group", "size"]).kl
    assert by[("10", 15)] == 0.0
    assert by[("10", 1)] > by[("10", 8)] > 0


def test_measure_sensitivity_rejects_bad_candidates(cnn, calib):
    with pytest.raises(
        ValueError, match=r"candidates\['10'\]: sizes \[16\] are not ints in \[1, 15\]"
    ):
        measure_sensitivity(cnn, calib, {"10": [16]}, {"10": 16}, lambda g, k: cnn)
    with pytest.raises(ValueError, match=r"max_sizes: no full size given for groups \['10'\]"):
        measure_sensitivity(cnn, calib, {"10": [2]}, {}, lambda g, k: cnn)
    with pytest.raises(ValueError, match=r"calibration contains NaN"):
        bad = calib.clone()
        bad[0, 0, 0, 0] = float("nan")
        measure_sensitivity(cnn, bad, {"10": [2]}, {"10": 16}, lambda g, k: cnn)


@pytest.mark.parametrize("method", ["svd", "svd_data_aware"])
def test_sensitivity_table_is_computed_once(cnn, calib, monkeypatch, method):
    calls = []
    real = rank_allocation.measure_sensitivity

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(rank_allocation, "measure_sensitivity", counting)
    if method == "svd":
        factors = svd_factors(cnn)

        def run(target, x=calib):
            return svd_compress(
                cnn,
                param_reduction=target,
                factors=factors,
                allocation="sensitivity",
                calibration=x,
            )
    else:
        factors = data_aware_svd_factors(cnn, calib)

        def run(target, x=calib):
            return data_aware_svd_compress(
                cnn, x, param_reduction=target, factors=factors, allocation="sensitivity"
            )

    sizes = [count_params(run(t)) for t in (0.3, 0.5, 0.6)]
    assert len(calls) == 1 and sizes[0] > sizes[1] > sizes[2]
    # one table (the data-aware refit also keeps the original's layer inputs there, issue 25)
    assert [k[0] for k in factors.cache].count("sensitivity") == 1
    run(0.3, -calib)  # another calibration batch is another table
    assert len(calls) == 2


def test_output_error_scores_of_weight_only_svd(cnn, calib):
    factors = svd_factors(cnn)
    scores = output_error_scores(cnn, factors, calib)
    assert set(scores) == set(factors)
    for s in scores.values():
        assert np.all(np.diff(s) <= 0) and s[0] > 0
    assert output_error_scores(cnn, factors, calib) is scores  # cached
    small = svd_compress(
        cnn, param_reduction=0.5, allocation="output_error", calibration=calib, factors=factors
    )
    assert abs(1 - count_params(small) / count_params(cnn) - 0.5) <= 0.01
    # The truncation stays weight-only: the factorised weights are the plain SVD's.
    f = factors["10"]
    r = small.compression_info["ranks"]["10"]
    if r is not None:
        first = small.get_submodule("10")[0].weight.reshape(r, -1)
        ref = f.s[:r].sqrt()[:, None] * f.vh[:r]
        torch.testing.assert_close(first, ref)


def test_default_allocation_of_svd_is_unchanged(cnn, calib):
    """svd_compress without allocation= gives the same ranks as before (the paper's split)."""
    factors = svd_factors(cnn)
    small = svd_compress(cnn, param_reduction=0.5, factors=factors)
    ranks = allocate_ranks(cnn, factors, 0.5, "energy")
    again = compress_from_factors(cnn, factors, ranks)
    assert small.compression_info["ranks"] == again.compression_info["ranks"]
    # The old method keeps working for one release, with a warning naming the new function.
    with pytest.warns(DeprecationWarning, match=r"rank_allocation\.allocate_ranks"):
        assert factors.ranks_for_reduction(0.5) == ranks


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (
            lambda m, x: svd_compress(m, param_reduction=0.5, allocation="loss"),
            ValueError,
            r"allocation must be one of \['energy', 'output_error', 'sensitivity'\], got 'loss'",
        ),
        (
            lambda m, x: svd_compress(m, param_reduction=0.5, allocation="sensitivity"),
            TypeError,
            r"calibration is required for allocation='sensitivity'",
        ),
        (
            lambda m, x: svd_compress(m, energy=0.9, allocation="output_error", calibration=x),
            TypeError,
            r"allocation='output_error' splits a param_reduction budget .* not apply when energy",
        ),
        (
            lambda m, x: data_aware_svd_compress(m, x, param_reduction=0.5, allocation=None),
            ValueError,
            r"allocation must be one of \['output_error', 'energy', 'sensitivity'\], got None",
        ),
        (
            lambda m, x: data_aware_svd_compress(m, x, ranks=2, allocation="sensitivity"),
            TypeError,
            r"allocation='sensitivity' splits a param_reduction budget",
        ),
    ],
)
def test_allocation_errors_are_clear(cnn, calib, call, exc, match):
    with pytest.raises(exc, match=match):
        call(cnn, calib)


def test_unreachable_budget_names_the_allocation(cnn, calib):
    factors = data_aware_svd_factors(cnn, calib)
    with pytest.raises(BudgetError, match=r"cannot be reached"):
        data_aware_svd_compress(cnn, calib, param_reduction=0.97, factors=factors)


def test_fingerprint_tells_batches_apart(calib):
    assert fingerprint(calib) == fingerprint(calib.clone())
    assert fingerprint(calib) != fingerprint(calib[:-1])
    other = calib.clone()
    other[3, 0, 5, 5] += 1e-3
    assert fingerprint(calib) != fingerprint(other)

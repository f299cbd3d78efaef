"""The one budget allocator: global threshold order, 1 pp guarantee, named errors."""

from __future__ import annotations

import numpy as np
import pytest

from smoothviz.compress.budget import (
    BudgetError,
    allocate,
    check_reachable,
    check_reduction,
    exactly_one,
)


def _linear_cost(costs, base):
    return lambda kept: base + sum(costs[g] * k for g, k in kept.items())


def test_removes_least_important_units_first():
    scores = {"a": np.array([1.0, 0.9, 0.1]), "b": np.array([1.0, 0.5, 0.4])}
    count = _linear_cost({"a": 10, "b": 10}, base=40)  # total 100, each unit 10 %
    kept = allocate(scores, count, 100, 0.2)
    assert kept == {"a": 2, "b": 2}  # 0.1 (a) and 0.4 (b) go first
    kept = allocate(scores, count, 100, 0.3)
    assert kept == {"a": 2, "b": 1}


@pytest.mark.parametrize("target", [0.0, 0.1, 0.33, 0.5, 0.77, 0.9])
def test_target_met_within_one_point(target):
    rng = np.random.default_rng(0)
    scores = {f"g{i}": np.sort(rng.random(200))[::-1] for i in range(5)}
    costs = {f"g{i}": 1 + i for i in range(5)}
    count = _linear_cost(costs, base=50)
    total = count({g: 200 for g in scores})
    kept = allocate(scores, count, total, target)
    assert abs(1 - count(kept) / total - target) <= 0.01
    assert all(k >= 1 for k in kept.values())


def test_coupled_costs_are_exact():
    # Cost of group b depends on how many units a keeps (like a consumer's inputs).
    scores = {"a": np.linspace(1, 0.01, 50), "b": np.linspace(1, 0.02, 50)}

    def count(kept):
        return 100 + kept["a"] * 10 + kept["a"] * kept["b"]

    total = count({"a": 50, "b": 50})
    kept = allocate(scores, count, total, 0.6)
    assert abs(1 - count(kept) / total - 0.6) <= 0.01


def test_unreachable_target_says_why():
    scores = {"a": np.array([1.0, 0.5])}
    with pytest.raises(BudgetError, match="most that can be removed is 0.100"):
        allocate(scores, _linear_cost({"a": 10}, 80), 100, 0.5)
    with pytest.raises(BudgetError, match="one removal step is larger"):
        allocate({"a": np.array([1.0, 0.5])}, _linear_cost({"a": 50}, 0), 100, 0.25)
    with pytest.raises(BudgetError, match="cannot be reached.*0.200"):
        check_reachable(0.5, 100, 80, "x")


@pytest.mark.parametrize(
    "value, error", [(1.0, ValueError), (-0.01, ValueError), (True, TypeError), ("0.5", TypeError)]
)
def test_check_reduction(value, error):
    with pytest.raises(error, match=r"param_reduction must"):
        check_reduction(value)


def test_exactly_one():
    assert exactly_one(a=None, b=2) == "b"
    with pytest.raises(TypeError, match="exactly one of a, b; got none"):
        exactly_one(a=None, b=None)
    with pytest.raises(TypeError, match=r"got \['a', 'b'\]"):
        exactly_one(a=1, b=2)

"""The intervals against cases worked out by hand (tables of t and of the binomial)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from smoothviz.stats import mcnemar_interval, paired_difference, t_interval, verdict

# Student t, 97.5 % quantile, 2 degrees of freedom: closed form (2q - 1) / sqrt(2 q (1 - q)) for
# two degrees of freedom, 4.3027 (any t table).
T_975_2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)


def test_t_interval_of_three_values():
    # mean 2, sample standard deviation 1, standard error 1/sqrt(3)
    ci = t_interval([1.0, 2.0, 3.0])
    half = T_975_2 / math.sqrt(3)  # 2.4841
    assert ci.mean == 2.0 and ci.n == 3 and ci.source == "seeds"
    assert ci.low == pytest.approx(2 - half, abs=1e-12)
    assert ci.high == pytest.approx(2 + half, abs=1e-12)
    assert (round(ci.low, 4), round(ci.high, 4)) == (-0.4841, 4.4841)
    assert ci.verdict == "unclear"


def test_one_value_has_no_interval_and_equal_values_a_zero_width_one():
    one = t_interval([0.4])
    assert one.mean == 0.4 and math.isnan(one.low) and math.isnan(one.high) and one.n == 1
    assert one.verdict == "unclear"
    same = t_interval([0.02, 0.02, 0.02])
    assert same.low == pytest.approx(0.02) and same.high == pytest.approx(0.02)
    assert same.verdict == "benefit"


def test_paired_difference_is_the_t_interval_of_the_per_seed_differences():
    # differences 2, 3, 1: mean 2, sd 1 -> the same interval as above
    ci = paired_difference([3.0, 5.0, 4.0], [1.0, 2.0, 3.0])
    assert ci.mean == 2.0
    assert (round(ci.low, 4), round(ci.high, 4)) == (-0.4841, 4.4841)
    # a consistent gain with little spread is a benefit although the two samples overlap
    gain = paired_difference([0.80, 0.70, 0.90], [0.78, 0.68, 0.88])
    assert gain.mean == pytest.approx(0.02) and gain.verdict == "benefit"
    with pytest.raises(ValueError, match="paired"):
        paired_difference([1.0, 2.0], [1.0])


def test_mcnemar_interval_on_constructed_prediction_vectors():
    # 100 images; both right on 60, only a right on 10, both wrong on 30: a - b = +10 pp.
    # Conditional on the 10 discordant images, all 10 favour a: the Clopper-Pearson interval of
    # p is [0.025^(1/10), 1] = [0.69150, 1], so the difference is in [0.1 (2 * 0.6915 - 1), 0.1].
    a = np.array([True] * 70 + [False] * 30)
    b = np.array([True] * 60 + [False] * 40)
    ci = mcnemar_interval(a, b)
    assert ci.mean == pytest.approx(0.10) and ci.n == 100 and ci.source == "test_images"
    assert ci.low == pytest.approx(0.1 * (2 * 0.025**0.1 - 1), abs=1e-9)  # 0.03830
    assert ci.high == pytest.approx(0.10)
    assert ci.verdict == "benefit"
    # Swapped: the same interval, mirrored; a loss.
    back = mcnemar_interval(b, a)
    assert (back.low, back.high) == pytest.approx((-0.10, -ci.low))
    assert back.verdict == "harm"
    # 5 discordant each way: symmetric around 0; Clopper-Pearson for 5 of 10 is
    # [0.18709, 0.81291] (binomial tables), so the difference is within +-0.1 (2 * 0.81291 - 1).
    a = np.array([True] * 65 + [False] * 5 + [True] * 5 + [False] * 25)
    b = np.array([True] * 60 + [True] * 10 + [False] * 30)
    even = mcnemar_interval(a, b)
    assert even.mean == 0.0
    assert even.high == pytest.approx(0.1 * (2 * 0.81291 - 1), abs=1e-5)
    assert even.low == pytest.approx(-even.high) and even.verdict == "unclear"
    # Identical predictions: no discordant image, no difference.
    same = mcnemar_interval(a, a)
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0)


def test_verdicts_and_bad_input():
    assert verdict(0.01, 0.03) == "benefit"
    assert verdict(-0.03, -0.01) == "harm"
    assert verdict(-0.01, 0.03) == "unclear" and verdict(0.0, 0.02) == "unclear"
    assert verdict(math.nan, math.nan) == "unclear"
    with pytest.raises(ValueError, match="same test images"):
        mcnemar_interval([True, False], [True])
    with pytest.raises(ValueError, match="booleans"):
        mcnemar_interval([0.5, 1.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="empty"):
        t_interval([])
    with pytest.raises(ValueError, match="finite"):
        t_interval([1.0, math.nan])
    with pytest.raises(ValueError, match="confidence"):
        t_interval([1.0, 2.0], confidence=1.5)

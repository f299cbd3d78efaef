"""Intervals for the numbers a report quotes: over seeds, and over test images when there is one seed.

docs/methods.md, "Seeds, intervals and verdicts": a number that depends on training randomness is
a sample, so the report gives its mean over seeds with a 95 % Student-t interval (n - 1 degrees of
freedom), and compares two trainings *paired* (same seed, same test and calibration images), the
interval being on the per-seed differences. With one seed the only interval left covers the test
images; it is labelled so, because it says nothing about another seed.

- :func:`t_interval`: mean and Student-t interval of a sample (one value per seed).
- :func:`paired_difference`: the t interval of the per-seed differences ``a - b``.
- :func:`mcnemar_interval`: the difference in accuracy between two models on the *same* test
  images, with the exact interval of McNemar's test: conditional on the number of images on which
  the two disagree, the number that only ``a`` gets right is binomial, and its Clopper-Pearson
  interval maps to one for the difference (no resampling, so no random seed: the same vectors give
  the same interval everywhere).
- :func:`verdict`: "benefit" when the whole interval is above 0, "harm" below, "unclear" otherwise.

Nothing here knows about models or DataFrames; :mod:`smoothviz.headline` applies it to a sweep.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _scipy_stats

from smoothviz._validation import check_number

CONFIDENCE = 0.95
VERDICTS = ("benefit", "harm", "unclear")
CI_SOURCES = ("seeds", "test_images")


@dataclass(frozen=True)
class Interval:
    """A mean (or difference) with its interval.

    Attributes
    ----------
    mean
        The estimate (mean over seeds, or the difference in accuracy on the test images).
    low, high
        The interval's ends; NaN when it cannot be computed (one seed for :func:`t_interval`).
    n
        How many values it rests on: seeds, or test images for :func:`mcnemar_interval`.
    source
        ``"seeds"`` or ``"test_images"``: what the interval covers.
    confidence
        Its confidence level (0.95 by default).
    """

    mean: float
    low: float
    high: float
    n: int
    source: str
    confidence: float = CONFIDENCE

    @property
    def verdict(self) -> str:
        """:func:`verdict` of this interval."""
        return verdict(self.low, self.high)


def _confidence(confidence: float) -> float:
    return check_number("confidence", confidence, low=0, high=1, low_open=True, high_open=True)


def _sample(values: Sequence[float], name: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError(f"{name} is empty: an interval needs at least one value")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must be finite numbers, got {list(values)!r}")
    return x


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """The mean of ``values`` (one per seed) and its Student-t interval, ``n - 1`` d.o.f.

    With one value the interval cannot be computed: ``low`` and ``high`` are NaN (say "one
    seed"). Equal values give a zero-width interval.

    Examples
    --------
    >>> t_interval([1.0, 2.0, 3.0])  # 2 -/+ t(0.975, 2) * 1 / sqrt(3)  # doctest: +ELLIPSIS
    Interval(mean=2.0, low=-0.484..., high=4.484..., n=3, source='seeds', confidence=0.95)
    """
    confidence = _confidence(confidence)
    x = _sample(values, "values")
    n, mean = x.size, float(x.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1, "seeds", confidence)
    half = float(_scipy_stats.t.ppf(0.5 + confidence / 2, n - 1)) * float(x.std(ddof=1)) / n**0.5
    return Interval(mean, mean - half, mean + half, n, "seeds", confidence)


def paired_difference(
    a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE
) -> Interval:
    """The mean of the per-seed differences ``a[i] - b[i]`` and their t interval.

    ``a`` and ``b`` are paired: entry ``i`` of both comes from the same seed, test images and
    calibration images. The interval is on the differences, not two separate intervals.
    """
    xa, xb = _sample(a, "a"), _sample(b, "b")
    if xa.size != xb.size:
        raise ValueError(f"a and b must be paired (same length), got {xa.size} and {xb.size}")
    return t_interval(xa - xb, confidence)


def _correct_vector(value: Sequence[bool], name: str) -> np.ndarray:
    x = np.asarray(value)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-d vector of per-image correctness")
    if x.dtype != np.bool_:
        if not np.isin(x, (0, 1)).all():
            raise ValueError(f"{name} must hold booleans (or 0/1), got values {np.unique(x)[:5]}")
        x = x.astype(bool)
    return x


def mcnemar_interval(
    correct_a: Sequence[bool], correct_b: Sequence[bool], confidence: float = CONFIDENCE
) -> Interval:
    """Accuracy of ``a`` minus accuracy of ``b`` on the same test images, with its exact interval.

    Let ``n`` be the number of images, ``k`` the images only ``a`` classifies correctly and ``m``
    those on which the two disagree. The difference is ``(2k - m) / n``. Conditional on ``m``,
    ``k`` is binomial with some ``p``; the Clopper-Pearson interval ``[p_lo, p_hi]`` of ``p`` gives
    ``[(2 p_lo - 1) m / n, (2 p_hi - 1) m / n]`` for the difference (the interval of the exact
    McNemar test; it excludes 0 exactly when that test rejects at ``1 - confidence``). With no
    disagreement the interval is ``[0, 0]``.

    The interval covers the choice of test images only, not another training seed.
    """
    confidence = _confidence(confidence)
    a = _correct_vector(correct_a, "correct_a")
    b = _correct_vector(correct_b, "correct_b")
    if a.size != b.size:
        raise ValueError(
            f"correct_a and correct_b must cover the same test images, got {a.size} and {b.size}"
        )
    n = a.size
    k = int(np.count_nonzero(a & ~b))
    m = k + int(np.count_nonzero(~a & b))
    mean = (2 * k - m) / n
    if m == 0:
        return Interval(0.0, 0.0, 0.0, n, "test_images", confidence)
    alpha = 1 - confidence
    p_lo = 0.0 if k == 0 else float(_scipy_stats.beta.ppf(alpha / 2, k, m - k + 1))
    p_hi = 1.0 if k == m else float(_scipy_stats.beta.ppf(1 - alpha / 2, k + 1, m - k))
    return Interval(
        mean, (2 * p_lo - 1) * m / n, (2 * p_hi - 1) * m / n, n, "test_images", confidence
    )


def verdict(low: float, high: float) -> str:
    """``"benefit"`` when the whole interval is above 0, ``"harm"`` when below, else ``"unclear"``
    (an interval that touches 0 or cannot be computed, NaN, is unclear)."""
    if low > 0 and high > 0:  # False for NaN
        return "benefit"
    if low < 0 and high < 0:
        return "harm"
    return "unclear"

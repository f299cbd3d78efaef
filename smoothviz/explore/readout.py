"""What the explorers say about a measurement: the readouts' HTML and the figure's title.

A measurement on the drag subset is an *estimate* of the test accuracy: the readout and the figure
say so, give its 95 % binomial (Wilson score) interval over the subset's images, and say when the
full test set will follow. Parameters and FLOPs are shown together, each with its reduction.
Pure functions of a measurement (the dict :meth:`~smoothviz.explore.base.Explorer.measure`
returns), so the tests read them without a widget.
"""

from __future__ import annotations

import math
from typing import Any

Z95 = 1.959963984540054  # two-sided 95 % normal quantile


def wilson_halfwidth(accuracy: float, n: int) -> float:
    """Half the width of the 95 % Wilson score interval of an accuracy measured on ``n`` images.

    The sampling error of the drag subset: the interval in which the accuracy on the whole test
    split lies for 95 % of random subsets of that size (binomial; the Wilson form stays above 0
    at an accuracy of 0 or 1, where the plain normal interval collapses).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    z2 = Z95 * Z95
    spread = Z95 * math.sqrt(accuracy * (1 - accuracy) / n + z2 / (4 * n * n))
    return spread / (1 + z2 / n)


def si(value: float) -> str:
    """``9687360`` -> ``"9.69 M"``: three significant digits and a unit (k, M, G)."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.0f}"


def seconds_text(seconds: float) -> str:
    """``"under 1 s"``, ``"about 3 s"``: how long something will take, in words."""
    return "under 1 s" if seconds < 1 else f"about {seconds:.0f} s"


def accuracy_html(
    result: dict[str, Any], n_full: int, full_seconds: float | None, settle_seconds: float | None
) -> str:
    """The accuracy readout: the full-set number, or the estimate with its ± and when the full
    test set follows."""
    acc = 100 * result["test_acc"]
    if result["full"]:
        return f"<b>test accuracy: {acc:.2f} %</b> (full test set, {result['n_test']:,} images)"
    half = 100 * wilson_halfwidth(result["test_acc"], result["n_test"])
    when = "once the slider stops"
    if full_seconds is not None:
        when = f"{seconds_text(full_seconds + (settle_seconds or 0))} after the slider stops"
    return (
        f"<b>test accuracy: {acc:.1f} % ± {half:.1f}</b> <i>estimate</i> (subset while "
        f"moving: {result['n_test']:,} images; ± is the 95 % binomial interval) · the full "
        f"test set ({n_full:,} images) follows {when}"
    )


def size_html(result: dict[str, Any]) -> str:
    """The size readout: parameters and FLOPs per image, each with its reduction."""
    text = (
        f"parameters: <b>{result['params']:,}</b> of {result['total_params']:,} "
        f"({100 * result['param_reduction']:.1f} % fewer)"
    )
    if result.get("flops") is not None:
        text += (
            f" · FLOPs per image: <b>{si(result['flops'])}</b> of {si(result['total_flops'])} "
            f"({100 * result['flop_reduction']:.1f} % fewer)"
        )
        if result.get("sparse"):
            text += " (zeroed weights still run in dense kernels)"
    return text


def measurement_title(result: dict[str, Any]) -> str:
    """The figure's words for a measurement: the accuracy (marked as an estimate, with its ±,
    until the full test set is measured), then the reductions."""
    if result.get("test_acc") is None:
        return "measuring…"
    acc = 100 * result["test_acc"]
    if result["full"]:
        words = f"test accuracy {acc:.2f} % (all {result['n_test']:,} test images)"
    else:
        half = 100 * wilson_halfwidth(result["test_acc"], result["n_test"])
        words = (
            f"test accuracy ≈ {acc:.1f} ± {half:.1f} % (estimate on {result['n_test']:,} "
            "images; the full test set follows)"
        )
    words += f"; {100 * result['param_reduction']:.1f} % fewer parameters"
    if result.get("flops") is not None:
        words += f", {100 * result['flop_reduction']:.1f} % fewer FLOPs"
    return words

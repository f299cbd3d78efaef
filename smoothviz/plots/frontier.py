"""The trained-small frontier as a grey reference line under the compression results."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.lines import Line2D

from smoothviz._validation import check_number
from smoothviz.plots.common import axes_or_new, require_columns
from smoothviz.stats import t_interval

FRONTIER_COLOR = "0.55"
FRONTIER_GID = "trained-small frontier"  # the line's gid, so a figure can find it for its legend


def frontier_label(frontier: pd.DataFrame) -> str:
    """The legend text: ``"trained from scratch (narrower widths)"``, saying when the frontier is
    a committed measurement rather than a training of this run, and how many seeds it has."""
    label = "trained from scratch (narrower widths)"
    sources = [s for s in frontier.get("source", pd.Series(dtype=object)).dropna().unique()]
    if any(str(s).startswith("committed") for s in sources):
        label += ", committed measurement"
    seeds = frontier["seed"].nunique() if "seed" in frontier.columns else 1
    return label + (f", {seeds} seeds" if seeds > 1 else "")


def plot_frontier(
    frontier: pd.DataFrame,
    *,
    params_uncompressed: int | None = None,
    scale: float = 1.0,
    annotate: bool = True,
    ax: Axes | None = None,
    **style: Any,
) -> Axes:
    """The trained-small frontier: test accuracy of the narrower networks at their parameters.

    Parameters
    ----------
    frontier
        From :func:`smoothviz.frontier.reference_frontier` (columns ``width``, ``seed``,
        ``params``, ``test_acc``; ``source`` when committed).
    params_uncompressed
        The compressed models' uncompressed parameter count: x is then the parameter reduction
        ``1 - params / params_uncompressed`` (times ``scale``), the trade-off plots' axis; points
        with more parameters than that are not drawn. None: x is the parameter count (log axis).
    scale
        Multiplies the reduction (``100`` for an axis in %).
    annotate
        Write each width beside its point (``w3``, ...).
    **style
        Passed to ``Axes.plot`` (colour, line style, ...).

    With several seeds the line is the mean over seeds and the band its 95 % Student-t
    interval (:func:`smoothviz.stats.t_interval`, as the trade-off plots' bands).
    """
    require_columns(frontier, ["width", "params", "test_acc"], "plot_frontier")
    check_number("scale", scale, low=0, low_open=True)
    ax = axes_or_new(ax)
    agg = (
        frontier.groupby(["width", "params"], as_index=False)["test_acc"]
        .agg(mean="mean", low=_t_low, high=_t_high)
        .sort_values("params")
    )
    if params_uncompressed is not None:
        agg = agg[agg["params"] <= params_uncompressed]
        x = (1.0 - agg["params"] / float(params_uncompressed)) * scale
    else:
        x = agg["params"].astype(float)
        ax.set_xscale("log")
    kwargs = {"color": FRONTIER_COLOR, "marker": "s", "markersize": 4, "linewidth": 1.5}
    kwargs.update(style)
    kwargs.setdefault("label", frontier_label(frontier))
    if (agg["high"] > agg["low"]).any():  # NaN (one seed) compares False: no band
        ax.fill_between(x, agg["low"], agg["high"], color=kwargs["color"], alpha=0.2, linewidth=0)
    (line,) = ax.plot(x, agg["mean"], zorder=1.5, **kwargs)
    line.set_gid(FRONTIER_GID)
    if annotate:
        for xi, yi, w in zip(x, agg["mean"], agg["width"], strict=True):
            ax.annotate(
                f"w{int(w)}",
                (xi, yi),
                textcoords="offset points",
                xytext=(3, -9),
                fontsize="xx-small",
                color=kwargs["color"],
            )
    return ax


def _t_low(values: pd.Series) -> float:
    return t_interval(list(values)).low


def _t_high(values: pd.Series) -> float:
    return t_interval(list(values)).high


def frontier_lines(ax: Axes) -> list[Line2D]:
    """The frontier line(s) :func:`plot_frontier` drew on ``ax`` (for a legend)."""
    return [line for line in ax.get_lines() if line.get_gid() == FRONTIER_GID]


def params_reference(results: pd.DataFrame) -> int | None:
    """The uncompressed parameter count of a sweep frame (``params_uncompressed``), if it has one."""
    if "params_uncompressed" not in results.columns:
        return None
    values = results["params_uncompressed"].dropna()
    return int(np.max(values)) if len(values) else None

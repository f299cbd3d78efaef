"""Per-layer pictures of a model: weights, singular-value spectra, roughness, kept ranks and weights.

:func:`plot_spectrum`, :func:`plot_kept_ranks` and :func:`plot_kept_weights` are what the explorers
(:mod:`smoothviz.explore`) draw; they update the bars and the rank marker in place afterwards
(:func:`place_rank_label` keeps a moved rank label inside its axes).

Labels are laid out so that none is clipped or drawn over another: the per-layer bars are
horizontal (one layer name per row, never slanted into its neighbours), a rank label sits on the
side of its line that has room, and :func:`spectra_grid` has one legend for the whole figure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from torch import nn

from smoothviz.layers import matrix_view
from smoothviz.plots.common import Y_LABELS, axes_or_new, require_columns


def plot_weights(
    weights: Mapping[str, nn.Module | torch.Tensor],
    layer: str | None = None,
    *,
    ax: Axes | None = None,
    cmap: str = "RdBu_r",
    max_rows: int | None = 64,
    max_cols: int | None = 144,
) -> Axes:
    """A layer's matrix view as an image, one panel per training side by side (e.g. smooth, baseline).

    Each panel is scaled by its own largest absolute weight (colour range ``[-1, 1]``), so the
    pattern, not the scale, is compared.

    Parameters
    ----------
    weights
        ``{training_name: model}`` (then ``layer`` names the module) or ``{training_name: weight}``.
    layer
        Dotted module name of the layer; required when the values are models.
    max_rows, max_cols
        Show only the top-left corner of larger matrices (``None``: all of it).
    """
    if not isinstance(weights, Mapping) or not weights:
        raise TypeError("weights must be a non-empty mapping name -> model or weight tensor")
    ax = axes_or_new(ax)
    x0, centres = 0.0, []
    height = 0
    for name, value in weights.items():
        if isinstance(value, nn.Module):
            if layer is None:
                raise ValueError("plot_weights: pass layer= to pick a layer from the models")
            value = value.get_submodule(layer).weight
        m = matrix_view(value.detach().float().cpu())[:max_rows, :max_cols].numpy()
        m = m / max(float(np.abs(m).max()), 1e-12)
        rows, cols = m.shape
        ax.imshow(
            m,
            cmap=cmap,
            vmin=-1,
            vmax=1,
            aspect="auto",
            interpolation="nearest",
            extent=(x0, x0 + cols, rows, 0),
        )
        centres.append((x0 + cols / 2, str(name)))
        height = max(height, rows)
        x0 += cols + max(2.0, 0.05 * cols)
    ax.set_xlim(0, x0)
    ax.set_ylim(height, 0)
    ax.set_xticks([c for c, _ in centres], [n for _, n in centres])
    ax.set_ylabel("output channel")
    ax.set_title(f"{layer} (matrix view, scaled to max |w|)" if layer else "matrix view")
    return ax


def weights_grid(
    models: Mapping[str, nn.Module],
    layers: Sequence[str],
    *,
    width: float = 11.0,
    row_height: float = 2.8,
) -> Figure:
    """One :func:`plot_weights` panel per layer, stacked; returns the Figure."""
    if not layers:
        raise ValueError("weights_grid: no layers to draw")
    fig, axes = plt.subplots(
        len(layers),
        1,
        figsize=(width, row_height * len(layers)),
        squeeze=False,
        layout="constrained",
    )
    for ax, layer in zip(axes[:, 0], layers):
        plot_weights(models, layer, ax=ax)
    return fig


def plot_spectra(
    spectra: pd.DataFrame,
    layer: str | None = None,
    *,
    y: str = "sigma_normalized",
    ranks: int | Mapping[str, int] | pd.DataFrame | None = None,
    ax: Axes | None = None,
    legend: bool = True,
    **style: Any,
) -> Axes:
    """Singular-value spectrum (or energy curve) of one layer, trainings overlaid.

    Parameters
    ----------
    spectra
        A :func:`smoothviz.analysis.singular_spectra` frame (with or without ``training``).
    layer
        The layer to draw; may be omitted when the frame holds a single layer.
    y
        ``"sigma_normalized"`` (default, log scale), ``"sigma"`` (log scale), ``"energy"`` (log
        scale) or ``"cumulative_energy"`` (linear).
    ranks
        The chosen rank(s) to mark with vertical lines: an int, ``{layer: rank}``, or a
        :func:`smoothviz.analysis.chosen_ranks` frame (one line per training, in its colour).
    legend
        Draw the trainings' legend in this Axes (:func:`spectra_grid` draws one for the figure).
    **style
        Passed to :meth:`matplotlib.axes.Axes.plot`.
    """
    require_columns(spectra, ["layer", "index", y], "plot_spectra")
    layers = list(dict.fromkeys(spectra["layer"]))
    if layer is None:
        if len(layers) != 1:
            raise ValueError(f"plot_spectra: pass layer=, the frame holds layers {layers}")
        layer = layers[0]
    if layer not in layers:
        raise ValueError(f"plot_spectra: layer {layer!r} not in the frame; it has {layers}")
    ax = axes_or_new(ax)
    df = spectra[spectra["layer"] == layer]
    hue = "training" if "training" in df.columns else None
    # One plain line per training (seaborn's aggregation machinery costs ~10x more per panel, and
    # a spectra grid draws one panel per layer).
    trainings = list(dict.fromkeys(df[hue])) if hue else [None]
    for colour, training in zip(sns.color_palette(n_colors=len(trainings)), trainings):
        part = df if training is None else df[df[hue] == training]
        ax.plot(part["index"], part[y], color=colour, label=training, **style)
    if hue and legend:
        ax.legend(title=hue)
    if y != "cumulative_energy":
        ax.set_yscale("log")
    _mark_ranks(ax, ranks, layer, hue_order=trainings if hue else None)
    ax.set_xlabel("rank position i")
    ax.set_ylabel(Y_LABELS.get(y, y))
    ax.set_title(layer)
    return ax


def _mark_ranks(ax: Axes, ranks: Any, layer: str, hue_order: list[str] | None) -> None:
    if ranks is None:
        return
    if isinstance(ranks, pd.DataFrame):
        require_columns(ranks, ["layer", "rank"], "plot_spectra(ranks=...)")
        rows = ranks[ranks["layer"] == layer]
        marks = [(r.get("training"), int(r["rank"])) for _, r in rows.iterrows()]
    elif isinstance(ranks, Mapping):
        marks = [(None, int(ranks[layer]))] if layer in ranks else []
    else:
        marks = [(None, int(ranks))]
    palette = sns.color_palette(n_colors=max(len(hue_order or []), 1))
    # Every label on one side of the outermost line, so that no label crosses another's line.
    ranks_marked = [rank for _, rank in marks]
    lo, hi = ax.get_xlim()
    right = bool(marks) and (max(ranks_marked) - lo) <= 0.6 * (hi - lo)
    for i, (training, rank) in enumerate(marks):
        colour = "0.3"
        if training is not None and hue_order and training in hue_order:
            colour = palette[hue_order.index(training)]
        ax.axvline(rank, color=colour, linestyle="--", linewidth=1)
        label = ax.annotate(
            "",
            xy=(rank, 1),
            xycoords=("data", "axes fraction"),
            color=colour,
            xytext=(3, -12),
            textcoords="offset points",
            fontsize="small",
        )
        anchor = max(ranks_marked) if right else min(ranks_marked)
        place_rank_label(label, rank, row=i, anchor=anchor)


def place_rank_label(label: Any, rank: int, *, row: int = 0, anchor: float | None = None) -> None:
    """Put a rank mark's ``"r=…"`` label (an ``Annotation`` at the top of the axes) beside its
    line, on the side with room: right of the line in the left 60 % of the axes, left of it beyond,
    so the label never runs past the axes' edge.

    ``row`` stacks several marks' labels; ``anchor`` (default ``rank``) is the x the label sits
    beside, e.g. the outermost of several lines, so that no label crosses another's line.
    """
    x = rank if anchor is None else anchor
    lo, hi = label.axes.get_xlim()
    right = (x - lo) <= 0.6 * (hi - lo)
    label.xy = (x, 1)
    label.set_text(f"r={rank}")
    label.set_horizontalalignment("left" if right else "right")
    label.xyann = (3 if right else -3, -12 - 11 * row)


def spectra_grid(
    spectra: pd.DataFrame,
    *,
    y: str = "sigma_normalized",
    ranks: Mapping[str, int] | pd.DataFrame | None = None,
    layers: Sequence[str] | None = None,
    ncols: int = 3,
    size: float = 3.2,
) -> Figure:
    """One :func:`plot_spectra` panel per layer, in a grid, with one legend for the whole figure.

    Parameters
    ----------
    spectra, y, ranks
        As for :func:`plot_spectra`.
    layers
        The layers to draw, in this order (``None``: every layer in the frame); e.g. the layers
        a budget cuts most, :func:`smoothviz.analysis.layers_cut_most`.
    ncols, size
        Panels per row, and each panel's height in inches.

    Returns
    -------
    Figure
        The figure; its legend (above the panels) names the trainings and the rank marks.
    """
    require_columns(spectra, ["layer"], "spectra_grid")
    present = list(dict.fromkeys(spectra["layer"]))
    if layers is None:
        layers = present
    else:
        layers = list(layers)
        missing = [name for name in layers if name not in present]
        if missing or not layers:
            raise ValueError(
                f"spectra_grid: layers {missing or layers} are not in the frame; it has {present}"
            )
    ncols = max(1, min(ncols, len(layers)))
    nrows = math.ceil(len(layers) / ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(size * ncols * 1.2, size * nrows + 0.5),
        squeeze=False,
        layout="constrained",
    )
    for ax, layer in zip(axes.flat, layers):
        plot_spectra(spectra, layer, y=y, ranks=ranks, ax=ax, legend=False)
    for ax in axes.flat[len(layers) :]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if ranks is not None:
        handles.append(Line2D([], [], color="0.3", linestyle="--", linewidth=1))
        labels.append("rank chosen (r=…)")
    if handles:
        fig.legend(handles, labels, loc="outside upper center", ncols=len(handles), frameon=False)
    return fig


def plot_smoothness(
    smoothness: pd.DataFrame,
    *,
    order: int = 1,
    ax: Axes | None = None,
    **style: Any,
) -> Axes:
    """Roughness per layer (mean over the channel axes) as bars, one colour per training.

    Parameters
    ----------
    smoothness
        A :func:`smoothviz.analysis.weight_smoothness` frame.
    order
        Which difference order to show (1 or 2).
    """
    require_columns(smoothness, ["layer", "order", "roughness"], "plot_smoothness")
    ax = axes_or_new(ax)
    df = smoothness[smoothness["order"] == order]
    if df.empty:
        raise ValueError(f"plot_smoothness: no rows of order {order}")
    hue = "training" if "training" in df.columns else None
    sns.barplot(data=df, x="layer", y="roughness", hue=hue, errorbar=None, ax=ax, **style)
    ax.axhline(1.0, color="0.5", linestyle=":", linewidth=1)
    ax.set_ylabel(f"order-{order} roughness (1 = white noise)")
    ax.tick_params(axis="x", labelrotation=45)
    return ax


# Bar colours of plot_kept_ranks and plot_kept_weights (an explorer recolours its bars in place).
FACTORIZED_COLOR = "C0"  # a layer cut to its rank
DENSE_COLOR = "0.6"  # a layer left dense: at that rank a factorisation saves nothing
PRUNED_COLOR = "C1"


def plot_spectrum(
    sigma: torch.Tensor | Sequence[float],
    layer: str = "",
    *,
    rank: int | None = None,
    ax: Axes | None = None,
    **style: Any,
) -> Axes:
    """One layer's singular values ``σ_i / σ_1`` (log scale), the chosen rank marked.

    The form of :func:`plot_spectra` for singular values at hand (e.g. cached factors' ``s``)
    rather than a :func:`smoothviz.analysis.singular_spectra` frame.

    Parameters
    ----------
    sigma
        The singular values, largest first.
    layer
        The layer's name (the panel's title).
    rank
        The rank to mark with a dashed line and its value; ``None``: no mark.
    **style
        Passed to :meth:`matplotlib.axes.Axes.plot`.
    """
    if isinstance(sigma, torch.Tensor):
        s = sigma.detach().to("cpu", torch.float64)
    else:
        s = torch.tensor(np.asarray(sigma, dtype=np.float64))
    if s.ndim != 1 or len(s) == 0:
        raise ValueError(
            f"plot_spectrum: sigma must be a non-empty 1-d sequence, got shape {tuple(s.shape)}"
        )
    spectrum = pd.DataFrame(
        {
            "layer": layer,
            "index": np.arange(1, len(s) + 1),
            "sigma_normalized": (s / s[0].clamp_min(1e-300)).numpy(),
        }
    )
    ranks = None if rank is None else {layer: rank}
    return plot_spectra(spectrum, layer, ranks=ranks, ax=ax, **style)


def _layer_bars(ax: Axes, layers: Sequence[str], widths: Sequence[float], color: Any) -> None:
    """One horizontal bar per layer on a [0, 1] axis, the first layer on top, its name beside it
    (horizontal names never overlap their neighbours the way slanted ones below bars do)."""
    positions = range(len(layers))
    ax.barh(positions, list(widths), color=color, height=0.7)
    ax.set_yticks(positions, list(layers), fontsize="x-small" if len(layers) > 12 else "small")
    ax.set_ylim(len(layers) - 0.5, -0.5)
    ax.set_xlim(0, 1)


# How plot_kept_ranks draws a layer left dense (an explorer restyles its bars in place with it).
DENSE_HATCH = "////"


def style_rank_bar(bar: Any, fraction: float, factorized: bool) -> None:
    """Set one bar of :func:`plot_kept_ranks`: width ``rank / full rank`` and blue where the layer
    is factorised; full width, grey and hatched where it stays dense (the whole layer is kept)."""
    bar.set_width(fraction if factorized else 1.0)
    bar.set_facecolor(FACTORIZED_COLOR if factorized else DENSE_COLOR)
    bar.set_hatch(None if factorized else DENSE_HATCH)
    bar.set_edgecolor("white" if not factorized else FACTORIZED_COLOR)


def plot_kept_ranks(ranks: pd.DataFrame, *, ax: Axes | None = None) -> Axes:
    """Per layer, the kept rank as a fraction of the full rank; layers left dense drawn apart.

    A layer whose rank is above its break-even rank stays dense (two factors would hold more
    weights than the layer): its bar is full width, grey and hatched, since the whole layer is
    kept. The legend above the bars names both kinds.

    Parameters
    ----------
    ranks
        One row per layer: ``layer``, ``rank``, ``full_rank`` and, optionally, ``factorized``
        (False: the layer stays dense), e.g. one training's rows of
        :func:`smoothviz.analysis.chosen_ranks`.

    Returns
    -------
    Axes
        The Axes drawn into; its last container holds the (horizontal) bars, one per row in
        order, the first row on top.
    """
    require_columns(ranks, ["layer", "rank", "full_rank"], "plot_kept_ranks")
    if "training" in ranks.columns and ranks["training"].nunique() > 1:
        raise ValueError(
            f"plot_kept_ranks: the frame holds trainings {list(ranks['training'].unique())}; "
            "pass the rows of one"
        )
    factorized = ranks["factorized"] if "factorized" in ranks.columns else [True] * len(ranks)
    ax = axes_or_new(ax)
    fractions = list(ranks["rank"] / ranks["full_rank"])
    _layer_bars(ax, ranks["layer"], fractions, FACTORIZED_COLOR)
    for bar, fraction, f in zip(ax.containers[-1], fractions, factorized, strict=True):
        style_rank_bar(bar, fraction, bool(f))
    ax.set_xlabel("kept rank / full rank")
    ax.legend(
        handles=[
            Patch(facecolor=FACTORIZED_COLOR, label="factorised at that rank"),
            Patch(
                facecolor=DENSE_COLOR,
                hatch=DENSE_HATCH,
                edgecolor="white",
                label="left dense (factors save nothing)",
            ),
        ],
        loc="lower left",
        bbox_to_anchor=(0, 1.0),
        ncols=2,
        fontsize="x-small",
        frameon=False,
        borderaxespad=0.2,
    )
    return ax


def plot_kept_weights(
    kept: pd.DataFrame, *, ax: Axes | None = None, color: Any = PRUNED_COLOR
) -> Axes:
    """Per layer, the fraction of its weights that a pruned model keeps.

    Parameters
    ----------
    kept
        One row per layer: ``layer`` and ``kept_fraction`` (non-zero weights after pruning over
        weights before, in [0, 1]).
    color
        The bars' colour.

    Returns
    -------
    Axes
        The Axes drawn into; its last container holds the (horizontal) bars, one per row in
        order, the first row on top.
    """
    require_columns(kept, ["layer", "kept_fraction"], "plot_kept_weights")
    ax = axes_or_new(ax)
    _layer_bars(ax, kept["layer"], kept["kept_fraction"], color)
    ax.set_xlabel("kept weights / original")
    return ax

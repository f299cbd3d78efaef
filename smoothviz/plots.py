"""Plot helpers with matplotlib's recommended signature: ``plot_*(data, *, ax=None, **style) -> Axes``.

Each helper draws into ``ax`` (a new figure when ``None``) and returns that Axes, so it composes with
subplots, seaborn and the widgets. :func:`spectra_grid` and :func:`weights_grid` are the figure-level
helpers: one Axes per layer, each drawn by :func:`plot_spectra` / :func:`plot_weights`;
:func:`tradeoff_grid` and :func:`lambda_sweep_grid` draw one panel per compression method.
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
from torch import nn

from smoothviz._validation import is_number
from smoothviz.layers import matrix_view

Y_LABELS = {
    "sigma": "singular value σ",
    "sigma_normalized": "σ / σ₁",
    "energy": "energy share σ² / Σσ²",
    "cumulative_energy": "cumulative energy",
    "test_acc": "test accuracy",
    "test_loss": "test loss",
    "train_loss": "training loss",
    "param_reduction": "parameter reduction",
}


def _axes(ax: Axes | None) -> Axes:
    return plt.subplots()[1] if ax is None else ax


def _require_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{what} needs a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{what}: the DataFrame lacks column(s) {missing}; it has {list(df.columns)}"
        )


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
    ax = _axes(ax)
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
    **style
        Passed to :meth:`matplotlib.axes.Axes.plot`.
    """
    _require_columns(spectra, ["layer", "index", y], "plot_spectra")
    layers = list(dict.fromkeys(spectra["layer"]))
    if layer is None:
        if len(layers) != 1:
            raise ValueError(f"plot_spectra: pass layer=, the frame holds layers {layers}")
        layer = layers[0]
    if layer not in layers:
        raise ValueError(f"plot_spectra: layer {layer!r} not in the frame; it has {layers}")
    ax = _axes(ax)
    df = spectra[spectra["layer"] == layer]
    hue = "training" if "training" in df.columns else None
    # One plain line per training (seaborn's aggregation machinery costs ~10x more per panel, and
    # a spectra grid draws one panel per layer).
    trainings = list(dict.fromkeys(df[hue])) if hue else [None]
    for colour, training in zip(sns.color_palette(n_colors=len(trainings)), trainings):
        part = df if training is None else df[df[hue] == training]
        ax.plot(part["index"], part[y], color=colour, label=training, **style)
    if hue:
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
        _require_columns(ranks, ["layer", "rank"], "plot_spectra(ranks=...)")
        rows = ranks[ranks["layer"] == layer]
        marks = [(r.get("training"), int(r["rank"])) for _, r in rows.iterrows()]
    elif isinstance(ranks, Mapping):
        marks = [(None, int(ranks[layer]))] if layer in ranks else []
    else:
        marks = [(None, int(ranks))]
    palette = sns.color_palette(n_colors=max(len(hue_order or []), 1))
    for i, (training, rank) in enumerate(marks):
        colour = "0.3"
        if training is not None and hue_order and training in hue_order:
            colour = palette[hue_order.index(training)]
        ax.axvline(rank, color=colour, linestyle="--", linewidth=1)
        ax.annotate(
            f"r={rank}",
            xy=(rank, 1),
            xycoords=("data", "axes fraction"),
            color=colour,
            xytext=(3, -12 - 11 * i),
            textcoords="offset points",
            fontsize="small",
        )


def spectra_grid(
    spectra: pd.DataFrame,
    *,
    y: str = "sigma_normalized",
    ranks: Mapping[str, int] | pd.DataFrame | None = None,
    ncols: int = 3,
    size: float = 3.2,
) -> Figure:
    """One :func:`plot_spectra` panel per layer, in a grid; returns the Figure."""
    _require_columns(spectra, ["layer"], "spectra_grid")
    layers = list(dict.fromkeys(spectra["layer"]))
    ncols = max(1, min(ncols, len(layers)))
    nrows = math.ceil(len(layers) / ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(size * ncols * 1.2, size * nrows),
        squeeze=False,
        layout="constrained",
    )
    for ax, layer in zip(axes.flat, layers):
        plot_spectra(spectra, layer, y=y, ranks=ranks, ax=ax)
        if ax is not axes.flat[0] and ax.get_legend() is not None:
            ax.get_legend().remove()
    for ax in axes.flat[len(layers) :]:
        ax.set_visible(False)
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
    _require_columns(smoothness, ["layer", "order", "roughness"], "plot_smoothness")
    ax = _axes(ax)
    df = smoothness[smoothness["order"] == order]
    if df.empty:
        raise ValueError(f"plot_smoothness: no rows of order {order}")
    hue = "training" if "training" in df.columns else None
    sns.barplot(data=df, x="layer", y="roughness", hue=hue, errorbar=None, ax=ax, **style)
    ax.axhline(1.0, color="0.5", linestyle=":", linewidth=1)
    ax.set_ylabel(f"order-{order} roughness (1 = white noise)")
    ax.tick_params(axis="x", labelrotation=45)
    return ax


def _reference_lines(
    ax: Axes,
    results: pd.DataFrame,
    *,
    colours: Mapping[str, Any] | None,
    chance: float | None,
) -> list[Any]:
    """Each training's uncompressed accuracy (dotted) and the chance level (dash-dot).

    Returns the lines, labelled (``"baseline uncompressed 89.4 %"``, ``"chance 10 %"``), for a
    legend: :func:`_extend_legend`.
    """
    lines = []
    if "test_acc_uncompressed" in results.columns:
        per_training = (
            results.drop_duplicates("training").set_index("training")["test_acc_uncompressed"]
            if "training" in results.columns
            else pd.Series({"model": results["test_acc_uncompressed"].iloc[0]})
        )
        for training, acc in per_training.dropna().items():
            colour = (colours or {}).get(training, "0.35")
            lines.append(
                ax.axhline(
                    acc,
                    color=colour,
                    linestyle=":",
                    linewidth=1.3,
                    zorder=1,
                    label=f"{training} uncompressed {100 * acc:.1f} %",
                )
            )
    if chance is not None:
        lines.append(
            ax.axhline(
                chance,
                color="0.5",
                linestyle="-.",
                linewidth=1,
                zorder=1,
                label=f"chance {100 * chance:.0f} %",
            )
        )
    return lines


def _extend_legend(ax: Axes, lines: Sequence[Any], **kwargs: Any) -> None:
    """Add labelled lines to the legend seaborn drew (or make one)."""
    old = ax.get_legend()
    handles = list(old.legend_handles) if old is not None else []
    labels = [t.get_text() for t in old.get_texts()] if old is not None else []
    handles += list(lines)
    labels += [line.get_label() for line in lines]
    ax.legend(handles, labels, **kwargs)


def _check_chance(chance: float | None) -> None:
    if chance is not None and not (is_number(chance) and 0 <= chance <= 1):
        raise ValueError(f"chance must be None or an accuracy in [0, 1], got {chance!r}")


def plot_tradeoff(
    results: pd.DataFrame,
    *,
    x: str = "param_reduction",
    y: str = "test_acc",
    chance: float | None = None,
    reference: bool = True,
    ax: Axes | None = None,
    **style: Any,
) -> Axes:
    """Accuracy vs parameter reduction, with each training's uncompressed accuracy as reference.

    With one method in the frame, colour = training; with several, colour = method and line
    style = training (seaborn).

    Parameters
    ----------
    results
        A :func:`smoothviz.sweep.sweep` frame (columns ``method``, ``training``, ``x``, ``y``).
    chance
        Chance-level accuracy (``1 / number of classes``) drawn as a reference; None: not drawn.
    reference
        Draw each training's uncompressed accuracy (``test_acc_uncompressed``) as a dotted line.
    """
    _require_columns(results, [x, y], "plot_tradeoff")
    _check_chance(chance)
    ax = _axes(ax)
    one_method = "method" not in results.columns or results["method"].nunique() == 1
    has_training = "training" in results.columns
    hue = "training" if (one_method and has_training) else ("method" if not one_method else None)
    style_col = "training" if (has_training and not one_method) else None
    trainings = list(dict.fromkeys(results["training"])) if has_training else []
    palette = dict(zip(trainings, sns.color_palette(n_colors=max(len(trainings), 1))))
    sns.lineplot(
        data=results.sort_values(x),
        x=x,
        y=y,
        hue=hue,
        style=style_col,
        palette=palette if hue == "training" else None,
        markers=True,
        dashes=True,
        ax=ax,
        **style,
    )
    if reference or chance is not None:
        _reference_lines(
            ax,
            results
            if reference
            else results.drop(columns="test_acc_uncompressed", errors="ignore"),
            colours=palette if hue == "training" else None,
            chance=chance,
        )
    ax.set_xlabel(Y_LABELS.get(x, x))
    ax.set_ylabel(Y_LABELS.get(y, y))
    ax.set_title("accuracy without fine-tuning")
    if ax.get_legend() is not None:
        sns.move_legend(ax, "center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    return ax


def tradeoff_grid(
    results: pd.DataFrame,
    *,
    chance: float | None = None,
    ncols: int = 3,
    size: float = 3.3,
) -> Figure:
    """One panel per method: accuracy vs achieved parameter reduction, one colour per training.

    Solid lines are the plain accuracy, dashed ones the accuracy after BatchNorm re-estimation
    (when the sweep measured it). Every panel carries each training's uncompressed accuracy
    (dotted, in its colour) and, when given, the chance level.
    """
    _require_columns(
        results, ["method", "training", "param_reduction", "test_acc"], "tradeoff_grid"
    )
    _check_chance(chance)
    if results.empty:
        raise ValueError("tradeoff_grid: results has no rows (nothing was measured)")
    methods = list(dict.fromkeys(results["method"]))
    trainings = list(dict.fromkeys(results["training"]))
    palette = dict(zip(trainings, sns.color_palette(n_colors=len(trainings))))
    values = {"test_acc": "plain"}
    if (
        "test_acc_bn_reestimated" in results.columns
        and results["test_acc_bn_reestimated"].notna().any()
    ):
        values["test_acc_bn_reestimated"] = "BN re-estimated"
    long = results.melt(
        id_vars=["training", "method", "param_reduction"],
        value_vars=list(values),
        var_name="evaluation",
        value_name="accuracy",
    ).dropna(subset=["accuracy", "param_reduction"])
    long["evaluation"] = long["evaluation"].map(values)
    ncols = max(1, min(ncols, len(methods)))
    nrows = math.ceil(len(methods) / ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(size * ncols * 1.15, size * nrows),
        squeeze=False,
        sharey=True,
        layout="constrained",
    )
    for ax, method in zip(axes.flat, methods):
        sns.lineplot(
            data=long[long["method"] == method].sort_values("param_reduction"),
            x="param_reduction",
            y="accuracy",
            hue="training",
            hue_order=trainings,
            style="evaluation",
            style_order=list(values.values()),
            palette=palette,
            markers=True,
            ax=ax,
        )
        lines = _reference_lines(
            ax, results[results["method"] == method], colours=palette, chance=chance
        )
        ax.set_title(method)
        ax.set_xlabel("parameter reduction (achieved)")
        ax.set_ylabel("test accuracy")
        if ax is axes.flat[0]:  # the references are the same in every panel: one legend
            _extend_legend(ax, lines)
            legend = ax.get_legend()
            handles, labels = legend.legend_handles, [t.get_text() for t in legend.get_texts()]
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    for ax in axes.flat[len(methods) :]:
        ax.set_visible(False)
    # Beside the panels, not on one: lines end anywhere in a panel (outside placement needs the
    # constrained layout the figure was made with).
    fig.legend(handles, labels, loc="outside right center", fontsize="x-small")
    fig.suptitle("Test accuracy without fine-tuning")
    return fig


def plot_lambda_sweep(
    sweep: pd.DataFrame,
    method: str,
    *,
    target: float = 0.7,
    ax: Axes | None = None,
    **style: Any,
) -> Axes:
    """Accuracy at one compression target vs regulariser weight, one line per regulariser.

    Parameters
    ----------
    sweep
        Rows of ``benchmarks/lambda_sweep.py`` (columns ``regulariser``, ``weight``, ``method``,
        ``target_reduction``, ``test_acc``, ``test_acc_uncompressed``); the ``baseline`` rows
        (weight 0) are drawn as horizontal references, since 0 has no place on a log axis.
    method
        Which compression method's accuracy to draw.
    target
        The parameter-reduction target (one of the sweep's).
    """
    _require_columns(
        sweep,
        [
            "regulariser",
            "weight",
            "method",
            "target_reduction",
            "test_acc",
            "test_acc_uncompressed",
        ],
        "plot_lambda_sweep",
    )
    methods = list(dict.fromkeys(sweep["method"]))
    if method not in methods:
        raise ValueError(f"plot_lambda_sweep: method {method!r} not in the sweep; it has {methods}")
    at = sweep[(sweep["method"] == method) & (sweep["target_reduction"] == target)]
    # A target the method could not reach has no accuracy (its row's ``error`` says why): no point.
    at = at.assign(test_acc=pd.to_numeric(at["test_acc"], errors="coerce"))
    if at.empty:
        targets = sorted(set(sweep["target_reduction"]))
        raise ValueError(
            f"plot_lambda_sweep: no rows at target {target!r}; the sweep has {targets}"
        )
    ax = _axes(ax)
    regularised = at[at["regulariser"] != "baseline"].sort_values("weight")
    sns.lineplot(
        data=regularised, x="weight", y="test_acc", hue="regulariser", marker="o", ax=ax, **style
    )
    base = at[at["regulariser"] == "baseline"]
    if len(base):
        acc, unc = float(base["test_acc"].iloc[0]), float(base["test_acc_uncompressed"].iloc[0])
        if acc == acc:  # not NaN: the baseline reached this target
            ax.axhline(acc, color="0.3", linestyle="--", linewidth=1, label="baseline (weight 0)")
        ax.axhline(unc, color="0.3", linestyle=":", linewidth=1, label="baseline uncompressed")
    ax.set_xscale("log")
    ax.set_xlabel("regulariser weight λ")
    ax.set_ylabel(f"test accuracy at {target:.0%} fewer parameters")
    ax.set_title(method)
    ax.legend(fontsize="x-small")
    return ax


def lambda_sweep_grid(
    sweep: pd.DataFrame,
    *,
    target: float = 0.7,
    size: float = 3.3,
    missing: Sequence[Mapping[str, Any]] | None = None,
) -> Figure:
    """One :func:`plot_lambda_sweep` panel per compression method, side by side; the Figure.

    ``missing``: the grid points a stopped sweep did not measure (dicts with a ``regulariser``
    key, as :func:`smoothviz.analysis.load_lambda_sweep` returns them); when there are any, the
    title says the sweep is partial.
    """
    _require_columns(sweep, ["method"], "lambda_sweep_grid")
    methods = list(dict.fromkeys(sweep["method"]))
    fig, axes = plt.subplots(
        1,
        len(methods),
        figsize=(size * 1.1 * len(methods), size),
        squeeze=False,
        sharey=True,
        layout="constrained",
    )
    for ax, method in zip(axes[0], methods):
        plot_lambda_sweep(sweep, method, target=target, ax=ax)
        if ax is not axes[0][0] and ax.get_legend() is not None:
            ax.get_legend().remove()
    title = f"Test accuracy at {target:.0%} fewer parameters vs regulariser weight"
    if missing:  # a stopped sweep: say so on the figure, not only in lambda_sweep.md
        title += (
            f"\nPARTIAL sweep: {len(missing)} grid points not measured "
            f"({', '.join(sorted({m['regulariser'] for m in missing}))}; see lambda_sweep.md)"
        )
    fig.suptitle(title)
    return fig


def plot_history(
    histories: pd.DataFrame,
    *,
    y: str = "test_acc",
    ax: Axes | None = None,
    **style: Any,
) -> Axes:
    """A per-epoch metric of one or several trainings (a ``training_histories`` frame)."""
    _require_columns(histories, ["epoch", y], "plot_history")
    ax = _axes(ax)
    hue = "training" if "training" in histories.columns else None
    sns.lineplot(data=histories, x="epoch", y=y, hue=hue, marker="o", ax=ax, **style)
    ax.set_xlabel("epoch")
    ax.set_ylabel(Y_LABELS.get(y, y))
    return ax

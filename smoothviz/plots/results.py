"""Pictures of measured results: accuracy against parameter reduction (means over seeds with
their 95 % t interval when there are several), the regulariser-weight sweep and training
histories."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from smoothviz._validation import check_number
from smoothviz.plots.common import Y_LABELS, axes_or_new, require_columns
from smoothviz.plots.frontier import frontier_lines, params_reference, plot_frontier
from smoothviz.stats import t_interval


def _reference_lines(
    ax: Axes,
    results: pd.DataFrame,
    *,
    colours: Mapping[str, Any] | None,
    chance: float | None,
) -> list[Any]:
    """Each training's uncompressed accuracy (dotted; its mean over seeds) and the chance level
    (dash-dot), each labelled at its right end (``"baseline uncompressed 89.4 %"``) rather than in
    the legend; labels of lines closer than a few percent of the axis apart go one above, one
    below their line. Returns the lines."""
    lines: list[tuple[Any, str, Any]] = []
    if "test_acc_uncompressed" in results.columns:
        per_training = (
            results.groupby("training", sort=False)["test_acc_uncompressed"].mean()
            if "training" in results.columns
            else pd.Series({"model": results["test_acc_uncompressed"].iloc[0]})
        )
        for training, acc in per_training.dropna().items():
            colour = (colours or {}).get(training, "0.35")
            line = ax.axhline(acc, color=colour, linestyle=":", linewidth=1.3, zorder=1)
            lines.append((line, f"{training} uncompressed {100 * acc:.1f} %", colour))
    if chance is not None:
        line = ax.axhline(chance, color="0.5", linestyle="-.", linewidth=1, zorder=1)
        lines.append((line, f"chance {100 * chance:.0f} %", "0.4"))
    low, high = ax.get_ylim()
    close = 0.06 * (high - low)
    ys = [float(line.get_ydata()[0]) for line, _, _ in lines]
    for i, (_, text, colour) in enumerate(lines):
        # Below when another line lies just above; of two equal lines, the later one goes below.
        below = any(
            ys[i] < y <= ys[i] + close or (y == ys[i] and j < i) for j, y in enumerate(ys) if j != i
        )
        ax.annotate(
            text,
            xy=(0.99, ys[i]),
            xycoords=("axes fraction", "data"),
            xytext=(0, -2 if below else 2),
            textcoords="offset points",
            ha="right",
            va="top" if below else "bottom",
            fontsize="x-small",
            color=colour,
        )
    return [line for line, _, _ in lines]


def _t_band(values: Any) -> tuple[float, float]:
    """The 95 % Student-t interval of a mean over seeds, as seaborn's ``errorbar`` callable."""
    ci = t_interval(list(values))
    return (ci.mean, ci.mean) if ci.n < 2 else (ci.low, ci.high)


def _n_seeds(results: pd.DataFrame) -> int:
    return int(results["seed"].nunique()) if "seed" in results.columns else 1


def _percent_axis(ax: Axes, targets: Sequence[float] | None) -> None:
    """Both axes in %; a tick at every measured target on x."""
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    if targets:
        ax.set_xticks(list(targets))


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
    style = training (seaborn). With several seeds (column ``seed``) each line is the mean over
    seeds with its 95 % Student-t interval as a band (then use ``x="target_reduction"``: the
    achieved reductions differ slightly between seeds).

    Parameters
    ----------
    results
        A :func:`smoothviz.sweep.sweep` frame (columns ``method``, ``training``, ``x``, ``y``).
    chance
        Chance-level accuracy (``1 / number of classes``) drawn as a reference; None: not drawn.
    reference
        Draw each training's uncompressed accuracy (``test_acc_uncompressed``) as a dotted line,
        labelled at its end.
    """
    require_columns(results, [x, y], "plot_tradeoff")
    check_number("chance", chance, low=0, high=1, allow_none=True)
    ax = axes_or_new(ax)
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
        errorbar=_t_band if _n_seeds(results) > 1 else None,
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
    frontier: pd.DataFrame | None = None,
) -> Figure:
    """One panel per method: accuracy vs parameters removed, one colour per training.

    The x axis is the target reduction in %, with a tick at every target measured (the reduction
    reached is within the budget's 1 pp of it; the tables give it); a frame without
    ``target_reduction`` is drawn at the achieved ``param_reduction``. Solid lines are the plain
    accuracy, dashed ones the accuracy after BatchNorm re-estimation (when the sweep measured
    it). With several seeds (column ``seed``) each line is the mean over seeds and its band the
    95 % Student-t interval of that mean (our own t interval, the one the report's tables give,
    not seaborn's bootstrap). Every panel carries each training's uncompressed accuracy (dotted,
    in its colour, labelled at its end) and, when given, the chance level and the trained-small
    ``frontier`` (grey, at its own parameter reduction, in the legend:
    :func:`~smoothviz.plots.frontier.plot_frontier`).
    """
    require_columns(results, ["method", "training", "test_acc"], "tradeoff_grid")
    x = "target_reduction" if "target_reduction" in results.columns else "param_reduction"
    require_columns(results, [x], "tradeoff_grid")
    check_number("chance", chance, low=0, high=1, allow_none=True)
    if results.empty:
        raise ValueError("tradeoff_grid: results has no rows (nothing was measured)")
    methods = list(dict.fromkeys(results["method"]))
    trainings = list(dict.fromkeys(results["training"]))
    palette = dict(zip(trainings, sns.color_palette(n_colors=len(trainings))))
    n_seeds = _n_seeds(results)
    uncompressed = params_reference(results)
    if frontier is not None and uncompressed is None:
        raise ValueError("tradeoff_grid: a frontier needs the results' params_uncompressed column")
    values = {"test_acc": "plain"}
    if (
        "test_acc_bn_reestimated" in results.columns
        and results["test_acc_bn_reestimated"].notna().any()
    ):
        values["test_acc_bn_reestimated"] = "BN re-estimated"
    keep = ["training", "method", x] + (["seed"] if "seed" in results.columns else [])
    long = results.melt(
        id_vars=keep, value_vars=list(values), var_name="evaluation", value_name="accuracy"
    ).dropna(subset=["accuracy", x])
    long["evaluation"] = long["evaluation"].map(values)
    targets = sorted(set(long[x])) if x == "target_reduction" else None
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
            data=long[long["method"] == method].sort_values(x),
            x=x,
            y="accuracy",
            hue="training",
            hue_order=trainings,
            style="evaluation",
            style_order=list(values.values()),
            palette=palette,
            markers=True,
            errorbar=_t_band if n_seeds > 1 else None,
            ax=ax,
        )
        _reference_lines(ax, results[results["method"] == method], colours=palette, chance=chance)
        if frontier is not None:  # the trained-small reference, at its own reduction on the same x
            plot_frontier(frontier, params_uncompressed=uncompressed, ax=ax)
        _percent_axis(ax, targets)
        ax.set_title(method)
        ax.set_xlabel("parameters removed (target)" if targets else "parameters removed")
        ax.set_ylabel("test accuracy")
        if ax is axes.flat[0]:  # the same trainings and styles in every panel: one legend
            legend = ax.get_legend()
            handles, labels = legend.legend_handles, [t.get_text() for t in legend.get_texts()]
            handles += frontier_lines(ax)  # the same in every panel, not horizontal: the legend
            labels += [line.get_label() for line in frontier_lines(ax)]
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    for ax in axes.flat[len(methods) :]:
        ax.set_visible(False)
    # Beside the panels, not on one: lines end anywhere in a panel (outside placement needs the
    # constrained layout the figure was made with).
    fig.legend(handles, labels, loc="outside right center", fontsize="x-small")
    seeds = f"mean of {n_seeds} seeds with its 95 % t interval" if n_seeds > 1 else "one seed"
    fig.suptitle(f"Test accuracy without fine-tuning ({seeds})")
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
    require_columns(
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
    ax = axes_or_new(ax)
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
    require_columns(sweep, ["method"], "lambda_sweep_grid")
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
    require_columns(histories, ["epoch", y], "plot_history")
    ax = axes_or_new(ax)
    hue = "training" if "training" in histories.columns else None
    sns.lineplot(data=histories, x="epoch", y=y, hue=hue, marker="o", ax=ax, **style)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no "1.2"
    ax.set_ylabel(Y_LABELS.get(y, y))
    return ax

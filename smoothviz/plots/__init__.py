"""Plot helpers with matplotlib's recommended signature: ``plot_*(data, *, ax=None, **style) -> Axes``.

Each helper draws into ``ax`` (a new figure when ``None``) and returns that Axes, so it composes with
subplots, seaborn and the widgets. :func:`spectra_grid` and :func:`weights_grid` are the figure-level
helpers: one Axes per layer, each drawn by :func:`plot_spectra` / :func:`plot_weights`;
:func:`tradeoff_grid` and :func:`lambda_sweep_grid` draw one panel per compression method.

Module map: ``layers.py`` (per-layer pictures of a model: weights, spectra, roughness, and what
the explorers draw: one spectrum with its rank, kept ranks, kept weights), ``results.py`` (accuracy
against parameter reduction, the regulariser-weight sweep, training histories), ``common.py``
(column labels and checks), ``frontier.py`` (the trained-small frontier, a grey reference line
under the compression results).
"""

from smoothviz.plots.common import Y_LABELS
from smoothviz.plots.frontier import plot_frontier
from smoothviz.plots.layers import (
    DENSE_COLOR,
    FACTORIZED_COLOR,
    PRUNED_COLOR,
    plot_kept_ranks,
    plot_kept_weights,
    plot_smoothness,
    plot_spectra,
    plot_spectrum,
    plot_weights,
    spectra_grid,
    weights_grid,
)
from smoothviz.plots.results import (
    lambda_sweep_grid,
    plot_history,
    plot_lambda_sweep,
    plot_tradeoff,
    tradeoff_grid,
)

__all__ = [
    "DENSE_COLOR",
    "FACTORIZED_COLOR",
    "PRUNED_COLOR",
    "Y_LABELS",
    "lambda_sweep_grid",
    "plot_frontier",
    "plot_history",
    "plot_kept_ranks",
    "plot_kept_weights",
    "plot_lambda_sweep",
    "plot_smoothness",
    "plot_spectra",
    "plot_spectrum",
    "plot_tradeoff",
    "plot_weights",
    "spectra_grid",
    "tradeoff_grid",
    "weights_grid",
]

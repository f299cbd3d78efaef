"""The explorers' figures as plot helpers: data in, the Axes out, bars and marks as the data say."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402

from smoothviz import analysis, plots  # noqa: E402
from smoothviz.models import build_model  # noqa: E402
from smoothviz.plots.layers import place_rank_label  # noqa: E402

RANKS = pd.DataFrame(
    {
        "layer": ["features.0", "features.3", "head"],
        "rank": [2, 8, 5],
        "full_rank": [4, 8, 10],
        "factorized": [True, False, True],
    }
)


def _bars(ax):
    return list(ax.containers[-1])


def test_plot_spectrum_normalises_and_marks_the_rank():
    fig, ax = plt.subplots()
    sigma = torch.tensor([4.0, 2.0, 1.0, 0.5])
    assert plots.plot_spectrum(sigma, "conv", rank=2, ax=ax) is ax
    curve, marker = ax.lines
    np.testing.assert_allclose(curve.get_ydata(), [1.0, 0.5, 0.25, 0.125])
    np.testing.assert_allclose(curve.get_xdata(), [1, 2, 3, 4])
    assert list(marker.get_xdata()) == [2, 2] and ax.texts[-1].get_text() == "r=2"
    assert ax.get_yscale() == "log" and ax.get_title() == "conv"
    plt.close(fig)
    ax = plots.plot_spectrum([3.0, 1.0])  # a plain sequence, no rank, a new figure
    assert len(ax.lines) == 1 and not ax.texts
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="sigma must be a non-empty 1-d"):
        plots.plot_spectrum(torch.ones(2, 2))


def test_plot_spectrum_draws_what_plot_spectra_draws_for_the_same_layer():
    torch.manual_seed(0)
    model = build_model("cnn", width=8)
    spectra = analysis.singular_spectra(model)
    layer = spectra["layer"].iloc[0]
    fig, (a, b) = plt.subplots(1, 2)
    plots.plot_spectra(spectra, layer, ranks={layer: 3}, ax=a)
    plots.plot_spectrum(spectra[spectra["layer"] == layer]["sigma"].to_numpy(), layer, rank=3, ax=b)
    np.testing.assert_allclose(a.lines[0].get_ydata(), b.lines[0].get_ydata(), rtol=1e-6)
    assert a.get_title() == b.get_title() and a.texts[-1].get_text() == b.texts[-1].get_text()
    plt.close(fig)


def test_plot_kept_ranks_widths_and_dense_layers_drawn_apart():
    fig, ax = plt.subplots()
    assert plots.plot_kept_ranks(RANKS, ax=ax) is ax
    bars = _bars(ax)
    # Horizontal bars, the first layer on top; a dense layer keeps all of itself: full width.
    assert [b.get_width() for b in bars] == pytest.approx([0.5, 1.0, 0.5])
    assert [b.get_y() + b.get_height() / 2 for b in bars] == pytest.approx([0, 1, 2])
    assert ax.yaxis_inverted()
    assert [b.get_facecolor() for b in bars] == [
        to_rgba(plots.FACTORIZED_COLOR),
        to_rgba(plots.DENSE_COLOR),
        to_rgba(plots.FACTORIZED_COLOR),
    ]
    assert [b.get_hatch() for b in bars] == [None, "////", None]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(RANKS["layer"])
    assert ax.get_xlim() == (0, 1) and ax.get_xlabel() == "kept rank / full rank"
    # Both kinds of bar are in the legend, the dense one hatched like its bars.
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == [
        "factorised at that rank",
        "left dense (factors save nothing)",
    ]
    assert legend.legend_handles[1].get_hatch() == "////"
    plt.close(fig)
    # Without a factorized column every bar counts as factorised; ax=None makes a figure.
    ax = plots.plot_kept_ranks(RANKS.drop(columns="factorized"))
    assert {b.get_facecolor() for b in _bars(ax)} == {to_rgba(plots.FACTORIZED_COLOR)}
    plt.close(ax.figure)


def test_a_rank_label_sits_on_the_side_of_its_line_with_room():
    fig, ax = plt.subplots()
    plots.plot_spectrum(torch.linspace(1, 0.01, 40), "conv", rank=3, ax=ax)
    label = ax.texts[-1]
    assert label.get_text() == "r=3" and label.get_horizontalalignment() == "left"
    place_rank_label(label, 38)  # near the right edge: the label goes left of the line
    assert label.get_text() == "r=38" and label.get_horizontalalignment() == "right"
    assert label.xy == (38, 1) and label.xyann[0] < 0
    fig.canvas.draw()
    assert label.get_window_extent().x1 <= ax.get_window_extent().x1
    plt.close(fig)


def test_plot_kept_ranks_takes_a_chosen_ranks_frame_of_one_training():
    torch.manual_seed(0)
    models = {"a": build_model("cnn", width=8), "b": build_model("cnn", width=8)}
    ranks = analysis.chosen_ranks(models, 0.5)
    one = ranks[ranks["training"] == "a"]
    ax = plots.plot_kept_ranks(one)
    expected = [
        r / full if f else 1.0
        for r, full, f in zip(one["rank"], one["full_rank"], one["factorized"])
    ]
    assert [b.get_width() for b in _bars(ax)] == pytest.approx(expected)
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="holds trainings"):
        plots.plot_kept_ranks(ranks)
    with pytest.raises(ValueError, match="lacks column"):
        plots.plot_kept_ranks(one.drop(columns="full_rank"))


def test_plot_kept_weights_heights_and_colour():
    kept = pd.DataFrame({"layer": ["a", "b"], "kept_fraction": [0.25, 0.9]})
    fig, ax = plt.subplots()
    assert plots.plot_kept_weights(kept, ax=ax) is ax
    bars = _bars(ax)
    assert [b.get_width() for b in bars] == pytest.approx([0.25, 0.9])
    assert {b.get_facecolor() for b in bars} == {to_rgba(plots.PRUNED_COLOR)}
    assert ax.get_xlim() == (0, 1) and ax.get_xlabel() == "kept weights / original"
    plt.close(fig)
    ax = plots.plot_kept_weights(kept, color="k")
    assert {b.get_facecolor() for b in _bars(ax)} == {to_rgba("k")}
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="plot_kept_weights: the DataFrame lacks"):
        plots.plot_kept_weights(kept.rename(columns={"kept_fraction": "kept"}))
    with pytest.raises(TypeError, match="needs a pandas DataFrame"):
        plots.plot_kept_weights({"layer": ["a"], "kept_fraction": [1.0]})

"""No figure text is clipped or drawn over another: every text's bounding box lies inside the
figure, and the labels that could collide (tick labels of one axis, rank labels) do not overlap.

Covers the explorers' live figures in every state a move can bring (an estimate, the full set,
ranks at either end, a long model name) and notebook 03's spectra grids.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from unittest.mock import patch  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from smoothviz import analysis, plots  # noqa: E402
from smoothviz.models import build_model  # noqa: E402
from smoothviz.widgets import PRUNE_METHODS, PruneExplorer, RankExplorer  # noqa: E402


def _drawn_texts(fig) -> list[tuple[Text, object]]:
    """Every text the figure draws, with its bounding box in pixels: a full drawing, then the
    artists a live figure blits on top (those are left out of a full drawing)."""
    drawn = []
    plain_draw = Text.draw

    def draw(self, renderer):
        plain_draw(self, renderer)
        if self.get_visible() and self.get_text().strip():
            drawn.append((self, self.get_window_extent(renderer)))

    with patch.object(Text, "draw", draw):
        fig.canvas.draw()
        for t in fig.findobj(Text):
            if t.get_animated():
                fig.draw_artist(t)
    return drawn


def _outside(fig, drawn) -> list[str]:
    """The drawn texts whose box reaches beyond the figure (1 px of anti-aliasing allowed)."""
    box = fig.bbox
    return [
        repr(t.get_text())
        for t, b in drawn
        if b.x0 < box.x0 - 1 or b.y0 < box.y0 - 1 or b.x1 > box.x1 + 1 or b.y1 > box.y1 + 1
    ]


def _overlapping(boxes: list[tuple[Text, object]]) -> list[tuple[str, str]]:
    return [
        (a.get_text(), b.get_text())
        for i, (a, box_a) in enumerate(boxes)
        for b, box_b in boxes[i + 1 :]
        if box_a.overlaps(box_b)
    ]


def _check(fig) -> None:
    drawn = _drawn_texts(fig)
    assert _outside(fig, drawn) == []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        for labels in (ax.get_xticklabels(), ax.get_yticklabels(), ax.texts):
            ids = {id(t) for t in labels}
            assert _overlapping([(t, b) for t, b in drawn if id(t) in ids]) == []


@pytest.fixture(scope="module")
def resnet():
    """The notebooks' default architecture (19 explored layers, long names), untrained and narrow
    (the width changes no label)."""
    torch.manual_seed(0)
    return build_model("resnet18", 1, 10, width=4).eval()


@pytest.fixture(scope="module")
def small_test_set(mini_data):
    return mini_data.subset(n_test=100, seed=0)


def test_the_rank_explorers_figure_fits_in_every_state(resnet, small_test_set):
    name = "a rather long model name, as a user may give one"
    ex = RankExplorer(
        {name: resnet}, small_test_set, param_reduction=0.5, drag_subset=30, settle_seconds=None
    )
    fig = ex._live[1].figure
    _check(fig)
    layers = list(ex.rank_sliders)
    ex.layer_select.value = layers[-1]  # a wide layer: its rank marker near the left
    fig = ex._live[1].figure
    for rank in (ex.rank_sliders[layers[-1]].max, 1):  # the marker at either end
        ex.rank_sliders[layers[-1]].value = rank
        _check(fig)
    ex.update(full=False)  # the drag subset: the title says "estimate" with its ±
    assert "estimate" in ex._live[2]["title"].get_text()
    _check(fig)
    _check(ex.figure())  # the figure drawn afresh, as saved


@pytest.mark.parametrize("method", list(PRUNE_METHODS))
def test_the_prune_explorers_figure_and_title_fit(resnet, small_test_set, method):
    ex = PruneExplorer(
        {"baseline": resnet}, small_test_set, param_reduction=0.8, drag_subset=30,
        settle_seconds=None,
    )  # fmt: skip
    ex.method.value = method
    fig = ex._live[1].figure
    title = ex._live[2]["title"].get_text()
    assert "test accuracy" in title and "(all 100 test images)" in " ".join(title.split())
    _check(fig)
    ex.update(full=False)
    _check(fig)


@pytest.mark.parametrize(
    "y, reduction",
    [("sigma_normalized", 0.0), ("sigma_normalized", 0.9), ("cumulative_energy", 0.5)],
)
def test_notebook_03s_spectra_grids_fit(y, reduction):
    torch.manual_seed(0)
    models = {"smooth": build_model("cnn", width=8), "baseline": build_model("cnn", width=8)}
    spectra = analysis.singular_spectra(models)
    ranks = analysis.chosen_ranks(models, reduction)
    layers = analysis.layers_cut_most(models, ranks, 6)
    fig = plots.spectra_grid(spectra, y=y, ranks=ranks, layers=layers)
    _check(fig)
    # One legend for the figure: the trainings and what a dashed line means.
    assert [a.get_legend() for a in fig.axes] == [None] * len(fig.axes)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "smooth",
        "baseline",
        "rank chosen (r=…)",
    ]
    plt.close(fig)


@pytest.mark.parametrize(
    "n_seeds, bn, uncompressed",
    [(1, False, (0.891, 0.8912)), (3, True, (0.891, 0.8912)), (1, False, (0.5825, 0.5825))],
)
def test_notebook_04s_tradeoff_grid_fits(n_seeds, bn, uncompressed):
    """The trade-off figure at the default six targets (a tick at each), two methods, both
    trainings, reference lines labelled at their ends (uncompressed accuracies close together, as
    seen: "uncompressed 89.1 %" twice; or equal, as on 400 test images) and chance: no label outside the figure or over another."""
    import pandas as pd

    from smoothviz.presets import DEFAULT_REDUCTIONS

    rows = []
    for seed in range(n_seeds):
        for training, unc in zip(("baseline", "smooth"), uncompressed):
            for method in ("svd", "a data-aware method with a long name"):
                for target in DEFAULT_REDUCTIONS:
                    acc = unc - target**3 * 0.6 + 0.005 * seed
                    rows.append(
                        {
                            "training": training,
                            "seed": seed,
                            "method": method,
                            "target_reduction": target,
                            "param_reduction": target,
                            "test_acc": acc,
                            "test_acc_bn_reestimated": acc + 0.03 if bn else float("nan"),
                            "test_acc_uncompressed": unc,
                        }
                    )
    fig = plots.tradeoff_grid(pd.DataFrame(rows), chance=0.1)
    _check(fig)
    (ax, *_) = [a for a in fig.axes if a.get_visible() and a.has_data()]
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "50%",
        "60%",
        "70%",
        "80%",
        "85%",
        "90%",
    ]
    plt.close(fig)

"""analysis.py gives tidy frames with the documented columns and values; plots.py returns Axes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from smoothviz import analysis, plots  # noqa: E402
from smoothviz.models import build_model  # noqa: E402


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {"baseline": build_model("cnn", width=8), "smooth": build_model("cnn", width=8)}


def test_smoothness_is_zero_for_weights_constant_along_the_channel_axes():
    net = nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 4), nn.Linear(4, 3))
    with torch.no_grad():
        net[1].weight.fill_(0.7)
    df = analysis.weight_smoothness(net)
    assert list(df.columns) == ["layer", "order", "axis", "roughness"]
    assert set(df["layer"]) == {"1"}
    assert df["roughness"].abs().max() < 1e-12


def test_smoothness_of_white_noise_is_about_one(models):
    df = analysis.weight_smoothness(models)
    assert {"training", "layer", "order", "axis", "roughness"} <= set(df.columns)
    assert set(df["order"]) == {1, 2} and set(df["axis"]) == {"output", "input"}
    assert 0.7 < df["roughness"].mean() < 1.3
    table = analysis.smoothness_table(df)
    assert {"baseline_order_1", "smooth_order_2"} <= set(table.columns)
    assert len(table) == df["layer"].nunique()


def test_spectra_are_normalised_and_energy_accumulates_to_one(models):
    df = analysis.singular_spectra(models)
    for _, g in df.groupby(["training", "layer"]):
        assert g["sigma_normalized"].iloc[0] == pytest.approx(1.0)
        assert g["sigma"].is_monotonic_decreasing
        assert g["cumulative_energy"].iloc[-1] == pytest.approx(1.0)
        assert g["energy"].sum() == pytest.approx(1.0)
        assert len(g) == g["full_rank"].iloc[0]


def test_effective_and_stable_rank_of_known_spectra():
    u, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))
    net = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8))
    with torch.no_grad():  # a rank-2 layer with equal singular values
        net[1].weight.copy_(u[:, :2] @ u[:, 2:4].T)
    row = analysis.spectrum_summary(net).iloc[0]
    assert row["effective_rank"] == pytest.approx(2.0, abs=1e-6)
    assert row["stable_rank"] == pytest.approx(2.0, abs=1e-6)
    assert row["rank_90"] == 2 and row["rank_99"] == 2
    assert analysis.rank_for_energy([3.0, 1.0], 0.9) == 1
    assert analysis.relative_error([3.0, 4.0], 1) == pytest.approx(0.6)


def test_chosen_ranks_meet_the_budget(models):
    from smoothviz.compress import svd_compress
    from smoothviz.measure import count_params

    ranks = analysis.chosen_ranks(models, 0.4)
    assert {"training", "layer", "rank", "full_rank", "kept_energy", "factorized"} <= set(
        ranks.columns
    )
    small = svd_compress(models["smooth"], param_reduction=0.4)
    used = small.compression_info["ranks"]
    mine = ranks[ranks["training"] == "smooth"].set_index("layer")
    for layer, r in used.items():
        if r is not None:
            assert mine.loc[layer, "rank"] == r
    assert 1 - count_params(small) / count_params(models["smooth"]) == pytest.approx(0.4, abs=0.011)


def test_training_histories_stack_with_a_training_column():
    h = pd.DataFrame({"epoch": [1, 2], "test_acc": [0.5, 0.6], "seconds": [1.0, 2.0]})
    df = analysis.training_histories({"a": h, "b": h.assign(test_acc=[0.4, 0.7])})
    assert list(df.columns[:2]) == ["training", "epoch"] and len(df) == 4
    final = analysis.final_metrics(df)
    assert final.set_index("training")["test_acc"].to_dict() == {"a": 0.6, "b": 0.7}
    assert final["train_seconds"].tolist() == [3.0, 3.0]
    with pytest.raises(TypeError):
        analysis.training_histories({"a": 3})


def test_every_plot_helper_returns_the_axes_it_drew_on(models):
    spectra = analysis.singular_spectra(models)
    smooth = analysis.weight_smoothness(models)
    hist = analysis.training_histories(
        {"a": pd.DataFrame({"epoch": [1, 2], "test_acc": [0.5, 0.6]})}
    )
    tradeoff = pd.DataFrame(
        {
            "training": ["a", "a", "b", "b"],
            "method": ["svd"] * 4,
            "param_reduction": [0.3, 0.5, 0.3, 0.5],
            "test_acc": [0.8, 0.7, 0.8, 0.75],
        }
    )
    layer = spectra["layer"].iloc[0]
    calls = [
        lambda ax: plots.plot_weights(models, layer, ax=ax),
        lambda ax: plots.plot_spectra(
            spectra, layer, ranks=analysis.chosen_ranks(models, 0.3), ax=ax
        ),
        lambda ax: plots.plot_spectra(spectra, layer, y="cumulative_energy", ranks=3, ax=ax),
        lambda ax: plots.plot_smoothness(smooth, order=2, ax=ax),
        lambda ax: plots.plot_tradeoff(tradeoff, ax=ax),
        lambda ax: plots.plot_history(hist, ax=ax),
    ]
    for call in calls:
        fig, ax = plt.subplots()
        assert call(ax) is ax
        assert ax.has_data() or ax.images
        plt.close(fig)
    ax = plots.plot_history(hist)  # ax=None makes a new figure
    assert ax.figure is not None
    plt.close(ax.figure)
    fig = plots.weights_grid(models, list(spectra["layer"].unique()[:2]))
    assert len(fig.axes) == 2
    plt.close(fig)
    fig = plots.spectra_grid(spectra, ranks={layer: 2})
    assert sum(a.get_visible() for a in fig.axes) == spectra["layer"].nunique()
    plt.close(fig)


def test_plot_helpers_name_what_is_missing():
    with pytest.raises(ValueError, match="test_acc"):
        plots.plot_tradeoff(pd.DataFrame({"param_reduction": [0.1]}))
    with pytest.raises(ValueError, match="layer="):
        plots.plot_spectra(
            pd.DataFrame({"layer": ["a", "b"], "index": [1, 1], "sigma_normalized": [1.0, 1.0]})
        )


def test_tradeoff_table_keeps_the_compared_columns_and_adds_the_accuracy_drop():
    results = pd.DataFrame(
        {
            "training": ["b", "a"],
            "method": ["svd", "svd"],
            "target_reduction": [0.5, 0.5],
            "param_reduction": [0.5, 0.49],
            "params": [10, 11],
            "test_acc": [0.7, 0.8],
            "test_acc_uncompressed": [0.9, 0.85],
            "device": ["cpu", "cpu"],
            "error": [None, None],
        }
    )
    table = analysis.tradeoff_table(results)
    assert list(table["training"]) == ["a", "b"]
    assert "device" not in table.columns and "error" not in table.columns
    assert table["acc_drop"].tolist() == pytest.approx([0.05, 0.2])


def _horizontal_lines(ax):
    """y of every horizontal reference line (axhline) on ``ax``."""
    return sorted(
        round(float(line.get_ydata()[0]), 6)
        for line in ax.get_lines()
        if len(set(line.get_ydata())) == 1 and list(line.get_xdata()) == [0, 1]
    )


TRADEOFF = pd.DataFrame(
    {
        "training": ["baseline"] * 4 + ["smooth"] * 4,
        "method": ["svd", "svd", "interpolative", "interpolative"] * 2,
        "param_reduction": [0.5, 0.7] * 4,
        "test_acc": [0.85, 0.62, 0.87, 0.71, 0.88, 0.86, 0.87, 0.80],
        "test_acc_bn_reestimated": [0.86, 0.7, 0.87, 0.75, 0.885, 0.87, 0.875, 0.82],
        "test_acc_uncompressed": [0.894] * 4 + [0.892] * 4,
    }
)


def test_tradeoff_plots_carry_each_trainings_uncompressed_accuracy_and_chance():
    fig = plots.tradeoff_grid(TRADEOFF, chance=0.1)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.has_data()]
    assert [ax.get_title() for ax in panels] == ["svd", "interpolative"]
    for ax in panels:
        assert _horizontal_lines(ax) == [0.1, 0.892, 0.894]
    assert [ax.get_legend() for ax in panels] == [None, None]
    (figure_legend,) = fig.legends  # one legend for the figure, beside the panels, on none of them
    legend = [t.get_text() for t in figure_legend.get_texts()]
    assert "plain" in legend and "BN re-estimated" in legend
    # the references are labelled at their right end, in every panel, not stacked in the legend
    assert not any("uncompressed" in t or "chance" in t for t in legend)
    for ax in panels:
        labels = {t.get_text(): t for t in ax.texts}
        assert {"baseline uncompressed 89.4 %", "smooth uncompressed 89.2 %", "chance 10 %"} <= set(
            labels
        )
        # 89.4 and 89.2 are close: one label above its line, the other below
        assert labels["baseline uncompressed 89.4 %"].get_va() == "bottom"
        assert labels["smooth uncompressed 89.2 %"].get_va() == "top"
    fig.canvas.draw()
    box = figure_legend.get_window_extent()
    assert not any(box.overlaps(ax.get_window_extent()) for ax in panels)
    plt.close(fig)
    fig, ax = plt.subplots()
    plots.plot_tradeoff(TRADEOFF, chance=0.1, ax=ax)
    assert _horizontal_lines(ax) == [0.1, 0.892, 0.894]
    plt.close(fig)
    fig, ax = plt.subplots()
    plots.plot_tradeoff(TRADEOFF, reference=False, ax=ax)
    assert _horizontal_lines(ax) == []
    plt.close(fig)
    with pytest.raises(ValueError, match="chance"):
        plots.tradeoff_grid(TRADEOFF, chance=10)
    with pytest.raises(ValueError, match="no rows"):
        plots.tradeoff_grid(TRADEOFF.iloc[:0])


def test_tradeoff_grid_with_seeds_draws_mean_lines_with_t_bands_and_a_percent_axis():
    from smoothviz.stats import t_interval

    rows = []
    for seed, shift in enumerate((0.0, 0.02, 0.01)):
        for training, base in (("baseline", 0.80), ("smooth", 0.84)):
            for target in (0.5, 0.6, 0.7, 0.85):
                rows.append(
                    {
                        "training": training,
                        "seed": seed,
                        "method": "svd",
                        "target_reduction": target,
                        "param_reduction": target + 0.001 * seed,  # differs a little per seed
                        "test_acc": base - target / 4 + shift,
                        "test_acc_uncompressed": 0.9,
                    }
                )
    frame = pd.DataFrame(rows)
    fig = plots.tradeoff_grid(frame)
    (ax,) = [a for a in fig.axes if a.get_visible() and a.has_data()]
    assert list(ax.get_xticks()) == [0.5, 0.6, 0.7, 0.85]  # a tick at every measured target
    fig.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["50%", "60%", "70%", "85%"]
    bands = [c for c in ax.collections if len(c.get_paths())]
    assert len(bands) == 2  # one band per training (plain accuracy only)
    smooth = frame[(frame.training == "smooth") & (frame.target_reduction == 0.5)].test_acc
    ci = t_interval(smooth.to_numpy())
    ys = np.concatenate([p.vertices[:, 1] for b in bands for p in b.get_paths()])
    assert np.isclose(ys, ci.low).any() and np.isclose(ys, ci.high).any()
    assert "mean of 3 seeds" in fig.get_suptitle()
    plt.close(fig)
    one = plots.tradeoff_grid(frame[frame.seed == 0])
    assert not [c for a in one.axes for c in a.collections if len(c.get_paths())]  # no band
    assert "one seed" in one.get_suptitle()
    plt.close(one)


LAMBDA = pd.DataFrame(
    [
        {
            "regulariser": reg,
            "weight": w,
            "method": method,
            "target_reduction": 0.7,
            "test_acc": acc,
            "test_acc_uncompressed": 0.89,
        }
        for method in ("svd", "interpolative")
        for reg, w, acc in (
            ("baseline", 0.0, 0.6),
            ("first_order", 0.01, 0.7),
            ("first_order", 0.1, 0.8),
            ("nuclear", 0.001, 0.65),
            ("nuclear", 0.01, 0.75),
        )
    ]
)


def test_lambda_sweep_plot_draws_one_line_per_regulariser_on_a_log_axis():
    fig, ax = plt.subplots()
    assert plots.plot_lambda_sweep(LAMBDA, "svd", ax=ax) is ax
    assert ax.get_xscale() == "log"
    assert _horizontal_lines(ax) == [0.6, 0.89]  # the baseline, compressed and uncompressed
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"first_order", "nuclear", "baseline (weight 0)"} <= set(legend)
    plt.close(fig)
    fig = plots.lambda_sweep_grid(LAMBDA)
    assert [a.get_title() for a in fig.axes] == ["svd", "interpolative"]
    plt.close(fig)
    with pytest.raises(ValueError, match="method 'nope' not in the sweep"):
        plots.plot_lambda_sweep(LAMBDA, "nope")
    with pytest.raises(ValueError, match="no rows at target 0.5"):
        plots.plot_lambda_sweep(LAMBDA, "svd", target=0.5)

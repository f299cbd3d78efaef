"""The trained-small frontier: trained at narrower widths, placed against, drawn, committed."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from smoothviz.config import ConfigError, TrainConfig
from smoothviz.frontier import (
    FRONTIER_COLUMNS,
    committed_frontier,
    compare_to_frontier,
    frontier_at,
    frontier_configs,
    frontier_for,
    recipe,
    reference_frontier,
)
from smoothviz.notebook_params import TradeoffParams
from smoothviz.plots import plot_frontier, tradeoff_grid
from smoothviz.plots.frontier import FRONTIER_GID, frontier_lines
from smoothviz.stats import t_interval


def _frontier(seeds=(0,), shift=0.0):
    rows = []
    for s in seeds:
        for width, params, acc in ((2, 1_000, 0.70), (4, 4_000, 0.80), (8, 16_000, 0.85)):
            rows.append({"width": width, "seed": s, "params": params, "test_acc": acc + s * shift})
    return pd.DataFrame(rows)


def test_interpolation_is_linear_in_log_parameters_and_never_extrapolates():
    curve = frontier_at(_frontier(), [1_000, 2_000, 4_000, 8_000, 500, 20_000])[0].to_numpy()
    assert curve[0] == pytest.approx(0.70) and curve[2] == pytest.approx(0.80)
    assert curve[1] == pytest.approx(0.75)  # halfway in log between 1,000 and 4,000
    assert curve[3] == pytest.approx(0.825)
    assert np.isnan(curve[4]) and np.isnan(curve[5])


def test_one_seed_verdicts_say_one_seed_and_outside_the_range_says_so():
    results = pd.DataFrame(
        {
            "training": ["a", "a", "a"],
            "method": ["svd"] * 3,
            "target_reduction": [0.5, 0.7, 0.99],
            "params": [2_000, 4_000, 100],
            "test_acc": [0.76, 0.79, 0.5],
        }
    )
    placed = compare_to_frontier(results, _frontier())
    assert list(placed["versus_frontier"]) == [
        "above (one seed)",
        "below (one seed)",
        "outside the frontier's measured range",
    ]
    assert placed["frontier_gap"].iloc[0] == pytest.approx(0.01)
    assert placed["gap_low"].isna().all() and not placed["paired"].any()


def test_seeds_are_paired_and_the_words_follow_the_interval():
    frontier = _frontier(seeds=(0, 1, 2), shift=0.01)
    results = pd.DataFrame(
        {
            "training": ["a"] * 6,
            "method": ["svd"] * 3 + ["id"] * 3,
            "target_reduction": [0.5] * 6,
            "seed": [0, 1, 2] * 2,
            "params": [4_000] * 6,
            # svd: 2, 3, 2.5 pp above its own seed's frontier; id: -1, +1, 0 pp
            "test_acc": [0.82, 0.84, 0.845, 0.79, 0.82, 0.82],
        }
    )
    placed = compare_to_frontier(results, frontier).set_index("method")
    assert placed.loc["svd", "paired"] and placed.loc["svd", "seeds"] == 3
    assert placed.loc["svd", "frontier_gap"] == pytest.approx(0.025)
    assert placed.loc["svd", "gap_low"] > 0 and placed.loc["svd", "versus_frontier"] == "above"
    assert placed.loc["id", "versus_frontier"] == "no clear difference"


def test_configs_keep_the_recipe_and_reject_what_has_no_width():
    base = TrainConfig(model="resnet18", width=16, epochs=2, first_order=0.01, seed=3)
    configs = frontier_configs(base, [4, 8], seeds=[0, 1])
    assert [(c.width, c.seed) for c in configs] == [(4, 0), (4, 1), (8, 0), (8, 1)]
    assert all(recipe(c) == recipe(base) for c in configs)
    assert [c.seed for c in frontier_configs(base, [4])] == [3]
    with pytest.raises(ConfigError, match="widths"):
        frontier_configs(base, [])
    with pytest.raises(ConfigError, match="widths"):
        frontier_configs(base, [0])
    with pytest.raises(ConfigError, match="no width"):
        frontier_configs(TrainConfig(model="torchvision:resnet18"), [4])


@pytest.mark.slow  # trains two small models
def test_reference_frontier_trains_through_the_cache(cache_dir, mini_data):
    base = TrainConfig(model="cnn", width=8, epochs=1, train_subset=256, batch_size=64)
    data = mini_data.subset(n_test=200)
    frontier = reference_frontier(base, [2, 3], data=data)
    assert list(frontier.columns) == FRONTIER_COLUMNS
    assert list(frontier["width"]) == [2, 3] and frontier["params"].is_monotonic_increasing
    assert frontier["test_acc"].between(0, 1).all() and (frontier["source"] == "trained").all()
    assert len(list((cache_dir / "checkpoints").glob("*.pt"))) == 2
    again = frontier_for(base, [2, 3], data=data)  # from the cache: the same numbers
    pd.testing.assert_frame_equal(frontier, again)


def test_a_committed_measurement_is_used_only_for_its_own_recipe(tmp_path):
    config = TrainConfig(model="resnet18", width=8, epochs=4, dataset="fashion-mnist")
    path = tmp_path / "trained_small_frontier.json"
    assert committed_frontier(config, path) is None
    rows = _frontier().assign(config_hash="x", source="trained").to_dict(orient="records")
    payload = {
        "provenance": {"date": "2026-12-01T10:00:00Z", "device": "CPU: test"},
        "recipe": recipe(config),
        "rows": rows,
    }
    path.write_text(json.dumps(payload))
    found = committed_frontier(config.replace(width=16, device="cpu"), path)
    assert list(found.columns) == FRONTIER_COLUMNS and len(found) == 3
    assert found["source"].str.startswith("committed measurement").all()
    assert "2026-12-01" in found["source"].iloc[0]
    assert committed_frontier(config.replace(epochs=8), path) is None
    assert frontier_for(config, None, path=path) is not None


def test_a_report_trains_the_frontier_with_the_other_trainings():
    from smoothviz import report

    (point,) = report.plan("default", {"seeds": [0, 1], "frontier_widths": [4, 8]})
    configs = point.training_configs()  # what a cluster trains before the notebooks run
    frontier = [(c.width, c.seed) for c in configs if c.first_order == 0 and c.width == 4]
    assert sorted(frontier) == [(4, 0), (4, 1)]
    assert len(configs) == len(set(configs)) == 2 * 2 + 2  # width 8 is the baseline: not twice
    assert TradeoffParams(frontier_widths=None).all_training_configs() == (
        TradeoffParams().all_training_configs()
    )


def test_the_frontier_is_drawn_grey_with_its_own_legend_entry():
    frontier = _frontier(seeds=(0, 1), shift=0.01)
    ax = plot_frontier(frontier, params_uncompressed=16_000)
    (line,) = frontier_lines(ax)
    assert line.get_gid() == FRONTIER_GID and "2 seeds" in line.get_label()
    assert list(line.get_xdata()) == pytest.approx([1 - 1 / 16, 0.75, 0.0])
    plt.close("all")
    # Several seeds: the band is the 95 % t interval of the mean, as the result lines' bands.
    three = _frontier(seeds=(0, 1, 2), shift=0.01)
    (band,) = plot_frontier(three).collections
    ci = t_interval([0.70, 0.71, 0.72])
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(ci.low) and ci.low < 0.70
    plt.close("all")
    assert not plot_frontier(_frontier()).collections  # one seed: no band
    plt.close("all")
    committed = _frontier().assign(source="committed measurement (x.json, 2026-12-01, cpu)")
    assert "committed" in frontier_lines(plot_frontier(committed))[0].get_label()
    plt.close("all")


def test_the_trade_off_grid_draws_the_frontier_in_every_panel():
    results = pd.DataFrame(
        {
            "training": ["baseline", "baseline", "smooth", "smooth"] * 2,
            "method": ["svd"] * 4 + ["hybrid"] * 4,
            "param_reduction": [0.5, 0.75] * 4,
            "test_acc": [0.8, 0.7, 0.82, 0.75] * 2,
            "test_acc_uncompressed": [0.86] * 8,
            "params_uncompressed": [16_000] * 8,
        }
    )
    fig = tradeoff_grid(results, frontier=_frontier())
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert len(panels) == 2 and all(frontier_lines(ax) for ax in panels)
    texts = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert any(t.startswith("trained from scratch") for t in texts)
    with pytest.raises(ValueError, match="params_uncompressed"):
        tradeoff_grid(results.drop(columns="params_uncompressed"), frontier=_frontier())
    plt.close("all")


@pytest.mark.slow  # a Dask cluster
def test_on_a_dask_cluster_the_workers_train_into_the_shared_cache(cache_dir, mini_data):
    from distributed import Client, LocalCluster

    base = TrainConfig(model="cnn", width=8, epochs=1, train_subset=256, batch_size=64)
    data = mini_data.subset(n_test=200)
    env = {"SMOOTHVIZ_CACHE": str(cache_dir), "OMP_NUM_THREADS": "1"}
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, dashboard_address=":0", env=env, silence_logs=40
    )
    client = Client(cluster)
    try:
        frontier = reference_frontier(base, [2, 3], data=data, client=client, log=None)
    finally:
        client.close()
        cluster.close()
    assert len(list((cache_dir / "checkpoints").glob("*.pt"))) == 2  # trained by the workers
    pd.testing.assert_frame_equal(frontier, reference_frontier(base, [2, 3], data=data))

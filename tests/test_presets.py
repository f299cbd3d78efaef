"""The defaults come from the committed measurements, and the full preset shows the weight sweep."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from smoothviz.analysis import LAMBDA_SWEEP_RESULTS, load_lambda_sweep  # noqa: E402
from smoothviz.models import build_model  # noqa: E402
from smoothviz.notebook_params import TradeoffParams, TrainParams  # noqa: E402
from smoothviz.plots import lambda_sweep_grid  # noqa: E402
from smoothviz.presets import BENCHMARK_MODEL, MAIN_JOB, PRESETS  # noqa: E402

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"


def _sweep():
    return json.loads((RESULTS / "lambda_sweep.json").read_text())


def test_full_preset_is_the_benchmark_model_with_the_weight_the_sweep_chose():
    sweep = _sweep()
    full = PRESETS["full"]
    assert sweep["benchmark_model"] == BENCHMARK_MODEL
    for name, value in sweep["benchmark_model"].items():
        assert full[name] == value, name
    assert full["first_order"] == sweep["chosen"]["first_order"]["weight"]
    assert full["show_lambda_sweep"] is True


def test_main_job_weight_is_the_one_its_own_sweep_chose_and_both_trainings_reach_089():
    sweep = json.loads((RESULTS / "lambda_sweep_main_job.json").read_text())
    configs = TrainParams().training_configs()
    assert sweep["complete"] and sweep["methods"] == list(TradeoffParams().methods)
    for name, value in sweep["benchmark_model"].items():  # swept on the main job's own trainings
        assert getattr(configs["baseline"], name) == value, name
    assert TrainParams().first_order == sweep["chosen"]["first_order"]["weight"]
    assert not sweep["chosen"]["first_order"]["fallback"]
    # The notebooks' defaults are the main job's, field by field.
    assert {name: getattr(TrainParams(), name) for name in MAIN_JOB} == MAIN_JOB
    hashes = sweep["config_hashes"]
    assert hashes["baseline=0"] == configs["baseline"].config_hash()
    assert hashes[f"first_order={TrainParams().first_order:g}"] == configs["smooth"].config_hash()
    uncompressed = {
        (r["regulariser"], r["weight"]): r["test_acc_uncompressed"] for r in sweep["rows"]
    }
    assert uncompressed[("baseline", 0.0)] >= 0.89
    assert uncompressed[("first_order", TrainParams().first_order)] >= 0.89


def test_the_committed_lambda_sweep_draws_one_log_panel_per_method(tmp_path):
    assert LAMBDA_SWEEP_RESULTS == RESULTS / "lambda_sweep.csv"
    rows, missing = load_lambda_sweep()
    fig = lambda_sweep_grid(rows, missing=missing)
    assert len(fig.axes) >= 4 and all(ax.get_xscale() == "log" for ax in fig.axes)
    plt.close(fig)
    with pytest.raises(FileNotFoundError, match="show_lambda_sweep"):
        load_lambda_sweep(tmp_path / "nope.csv")
    # The trade-off notebook draws it only when asked (the full preset asks).
    assert TradeoffParams().show_lambda_sweep is False


def test_a_partial_sweep_says_so_and_chooses_only_among_measured_weights():
    sweep = _sweep()
    measured = {(r["regulariser"], r["weight"]) for r in sweep["rows"]}
    for m in sweep["missing"]:
        assert (m["regulariser"], m["weight"]) not in measured
    assert sweep["complete"] is (not sweep["missing"])
    for reg, chosen in sweep["chosen"].items():
        assert (reg, chosen["weight"]) in measured
        assert chosen["weights_measured"] == sorted(w for r, w in measured if r == reg)
        assert chosen["grid_complete"] is (
            len(chosen["weights_measured"]) == len(sweep["grid"][reg])
        )
    # The full preset's weight is one the sweep measured its whole grid for.
    assert sweep["chosen"]["first_order"]["grid_complete"]
    markdown = (RESULTS / "lambda_sweep.md").read_text()
    if sweep["missing"]:
        assert "PARTIAL" in markdown.splitlines()[0]
        for m in sweep["missing"]:
            assert f"- {m['regulariser']} {m['weight']:g}: " in markdown
        rows, missing = load_lambda_sweep()
        assert missing == sweep["missing"]
        fig = lambda_sweep_grid(rows, missing=missing)
        assert "PARTIAL" in fig.get_suptitle()
        plt.close(fig)


def test_the_readme_states_the_main_jobs_measured_numbers():
    """The README quotes the measured main-job run: its time, accuracies and headline numbers."""
    run = json.loads((RESULTS / "main_job_time.json").read_text())
    readme = " ".join((RESULTS.parent.parent / "README.md").read_text().split())
    assert f"the main job took {run['wall_seconds']:.0f} s" in readme
    assert run["wall_seconds"] <= run["limit_seconds"]
    for training in ("baseline", "smooth"):
        acc = run["test_acc_uncompressed"][training]
        assert acc >= 0.89 and f"{acc:.4f} ({training})" in readme
    (sentence,) = run["headline_sentence"].values()
    for number in re.findall(r"\d+\.\d %", sentence)[:2] + re.findall(r"\d+\.\d pp more", sentence):
        assert number in readme, number
    assert f"first-order smoothness weight {TrainParams().first_order:g}" in readme
    params = TrainParams()
    model = build_model(params.model, 1, 10, width=params.width)  # Fashion-MNIST: 1 channel
    assert f"{sum(p.numel() for p in model.parameters()):,} parameters" in readme


def test_the_default_methods_are_measured_ones_and_the_full_preset_runs_every_method():
    from smoothviz.compress import METHODS
    from smoothviz.presets import DEFAULT_METHODS
    from smoothviz.report import plan

    assert set(DEFAULT_METHODS) <= set(METHODS) and len(set(DEFAULT_METHODS)) == len(
        DEFAULT_METHODS
    )
    assert TradeoffParams().method_list == list(DEFAULT_METHODS)
    cost = json.loads((RESULTS / "report_methods_cost.json").read_text())
    assert set(DEFAULT_METHODS) <= {r["method"] for r in cost["methods"]}
    for preset in ("full", "cifar10"):
        tradeoff = [nb for nb in plan(preset)[0].notebooks if nb.name == "04_tradeoff"][0]
        assert TradeoffParams.from_dict(tradeoff.parameters).method_list == list(METHODS)


def test_the_committed_seed_spread_is_of_the_main_jobs_configuration_with_five_seeds():
    """A one-seed report quotes seed_spread.json only when it is of the same configuration: after a
    change to the main job's trainings this fails until the spread is measured again."""
    from smoothviz.headline import load_seed_spread

    record = json.loads((RESULTS / "seed_spread.json").read_text())
    params = TradeoffParams()
    spread = load_seed_spread(params.training_configs(), params.dataset, 10_000)
    assert spread is not None, "seed_spread.json is not of the main job's configuration"
    assert len(record["seeds"]) >= 5
    for training in ("baseline", "smooth"):
        assert len(record["uncompressed"][training]["per_seed"]) == len(record["seeds"])
    assert {(m, t) for m in params.method_list for t in params.reductions} <= set(spread.per_seed)

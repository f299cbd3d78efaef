"""Tables for people: rounded, labelled numbers, smooth beside baseline, a caption per column."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest

from smoothviz.tables import (
    best_methods_summary,
    count,
    decimal,
    differences_summary,
    explorer_summary,
    history_summary,
    integer,
    interval,
    latency,
    pct,
    pp,
    ranks_table,
    side_by_side,
    smoothness_summary,
    spectrum_table,
    tradeoff_summary,
    training_summary,
)


def test_number_formats():
    assert pct(0.88313) == "88.3" and pct(0.7, 0) == "70" and pct(math.nan) == "—"
    assert pp(0.021) == "+2.1" and pp(-0.0349) == "-3.5" and pp(None) == "—"
    assert count(812) == "812" and count(52_912) == "52.9 k" and count(1_204_000) == "1.20 M"
    assert count(3.4e9) == "3.4 G" and count(math.nan) == "—"
    assert latency(1.23456, 0.049) == "1.23 ms (IQR 0.05)" and latency(2.0) == "2.00 ms"
    assert interval(0.883, 0.871, 0.895) == "88.3 [87.1 to 89.5]"
    assert interval(0.883, math.nan, math.nan) == "88.3"  # one seed: no interval
    assert interval(0.02, -0.01, 0.05, signed=True) == "+2.0 [-1.0 to +5.0]"


def _results(seeds=(0, 1, 2)):
    rows = []
    for seed in seeds:
        for training, acc in (("baseline", 0.80), ("smooth", 0.83)):
            for target in (0.5, 0.7):
                rows.append(
                    {
                        "training": training,
                        "seed": seed,
                        "method": "svd_data_aware",
                        "target_reduction": target,
                        "param_reduction": target + 0.002,
                        "params": 52_912 + seed,
                        "flops": 12_345_678,
                        "latency_ms": 1.5 + 0.1 * seed,
                        "latency_iqr_ms": 0.05,
                        "test_acc": acc - target / 10 + 0.01 * seed,
                        "test_acc_bn_reestimated": acc,
                        "test_acc_uncompressed": 0.89,
                    }
                )
    return pd.DataFrame(rows)


def test_tradeoff_summary_puts_the_trainings_side_by_side_with_a_caption():
    table = tradeoff_summary(_results())
    frame = table.frame
    assert list(frame.columns.get_level_values(0).unique()) == [
        "",
        "baseline",
        "smooth",
        "smooth − baseline",
    ]
    for training in ("baseline", "smooth"):
        assert set(frame[training].columns) == {
            "removed %",
            "params",
            "FLOPs",
            "latency",
            "test acc %",
            "BN re-est. %",
        }
    row = frame.iloc[0]
    assert row[("", "method")] == "svd_data_aware" and row[("", "target %")] == "50"
    assert row[("baseline", "params")] == "52.9 k" and row[("baseline", "FLOPs")] == "12.35 M"
    assert row[("baseline", "latency")] == "1.60 ms (IQR 0.05)"  # the mean over seeds
    assert row[("baseline", "test acc %")].startswith("76.0 [")  # 0.75 + mean(0, .01, .02)
    assert row[("smooth − baseline", "pp")] == "+3.0 [+3.0 to +3.0]"
    assert row[("smooth − baseline", "verdict")] == "benefit"
    for words in (
        "target %",
        "removed %",
        "FLOPs",
        "latency",
        "BN re-est. %",
        "3 seeds",
        "verdict",
    ):
        assert words in table.caption
    html = table.to_html()
    assert "<caption>" in html and "52.9 k" in html
    assert str(table).startswith(table.caption)
    one = tradeoff_summary(_results(seeds=(0,)))
    assert "one seed" in one.caption and "[" not in one.frame[("smooth", "test acc %")].iloc[0]


def test_differences_summary_names_what_the_interval_covers():
    table = differences_summary(_results())
    assert list(table.frame["interval over"]) == ["seeds", "seeds"]
    assert list(table.frame["verdict"]) == ["benefit", "benefit"]
    assert list(table.frame["difference pp"]) == ["+3.0", "+3.0"]
    one = differences_summary(_results(seeds=(0,)))  # no per-image results: no interval
    assert list(one.frame["interval over"]) == ["none", "none"]
    assert "McNemar" in one.caption


# --- every notebook's tables --------------------------------------------------------------------
RAW_FLOAT = re.compile(r"\d\.\d{4,}")  # what an unformatted float looks like (0.698612)


def _assert_for_people(table, labels):
    """String cells only, none a raw float; baseline before smooth; every label in the caption."""
    cells = table.frame.to_numpy().ravel()
    assert all(isinstance(c, str) for c in cells), [c for c in cells if not isinstance(c, str)]
    assert not [c for c in cells if RAW_FLOAT.search(c)]
    tops = list(table.frame.columns.get_level_values(0).unique())
    if "baseline" in tops:
        assert tops.index("baseline") < tops.index("smooth")
    for label in labels:
        assert f"{label}:" in table.caption or f"{label} /" in table.caption, label
    assert not RAW_FLOAT.search(table.to_html())


def test_side_by_side_keeps_rows_in_order_and_marks_what_is_missing():
    frame = pd.DataFrame(
        {
            "training": ["smooth", "baseline", "smooth"],
            "layer": ["b", "b", "a"],
            "x": [0.123456, 0.5, 0.25],
        }
    )
    out = side_by_side(frame, ["layer"], {"x": ("x %", pct)})
    assert list(out.columns) == [("", "layer"), ("baseline", "x %"), ("smooth", "x %")]
    assert out.values.tolist() == [["b", "50.0", "12.3"], ["a", "—", "25.0"]]
    with pytest.raises(ValueError, match="lacks the columns \\['y'\\]"):
        side_by_side(frame, ["layer"], {"y": ("y", pct)})


def test_decimal_and_integer():
    assert decimal(0.93544) == "0.94" and decimal(15.503, 1) == "15.5"
    assert decimal(2e-07, 4) == "2.0e-07" and decimal(math.nan) == "—"
    assert integer(24000) == "24,000" and integer(None) == "—"


def _histories():
    rows = []
    for training, reg in (("baseline", math.nan), ("smooth", 30.132614)):
        for epoch in (1, 2):
            rows.append(
                {
                    "training": training,
                    "seed": 0,
                    "epoch": epoch,
                    "train_loss": 2.171263,
                    "test_loss": 1.736183,
                    "test_acc": 0.389,
                    "lr": 2.0e-07 if epoch == 2 else 0.0375,
                    "seconds": 19.235021,
                    "reg_first_order": reg,
                }
            )
    return pd.DataFrame(rows)


def test_training_tables():
    from smoothviz.analysis import final_metrics

    histories = _histories()
    summary = training_summary(final_metrics(histories))
    _assert_for_people(summary, ["epochs", "test acc %", "test loss", "time"])
    assert summary.frame[("smooth", "time")].iloc[0] == "38.5 s"  # summed over the epochs
    per_epoch = history_summary(histories)
    _assert_for_people(per_epoch, ["train loss", "lr", "time"])
    assert "first-order penalty" in per_epoch.frame["smooth"].columns
    assert per_epoch.frame[("baseline", "first-order penalty")].iloc[0] == "—"
    assert per_epoch.frame[("smooth", "lr")].tolist() == ["3.75e-02", "2.00e-07"]


def test_smoothness_spectrum_and_ranks_tables():
    smooth = pd.DataFrame(
        {
            "layer": ["conv1", "fc"],
            "baseline_order_1": [0.993242, 1.010739],
            "smooth_order_1": [0.935439, 0.957103],
            "baseline_order_2": [1.002048, 1.008787],
            "smooth_order_2": [0.921551, 0.938039],
        }
    )
    table = smoothness_summary(smooth)
    _assert_for_people(table, ["1st diff.", "2nd diff."])
    assert table.frame.values.tolist()[0] == ["conv1", "0.99", "1.00", "0.94", "0.92"]
    spectrum = pd.DataFrame(
        [
            {
                "training": t,
                "layer": "conv1",
                "rows": 16,
                "cols": 72,
                "full_rank": 16,
                "effective_rank": 15.503001,
                "stable_rank": 8.618386,
                "rank_90": 13,
                "rank_99": 16,
                "nuclear_norm": 9.189653,
            }
            for t in ("baseline", "smooth")
        ]
    )
    table = spectrum_table(spectrum)
    _assert_for_people(
        table, ["matrix", "full rank", "eff. rank", "stable rank", "r 90 %", "nuclear norm"]
    )
    assert table.frame[("", "matrix")].iloc[0] == "16 × 72"
    ranks = pd.DataFrame(
        {
            "training": ["baseline", "smooth"],
            "layer": ["conv1", "conv1"],
            "rank": [12, 15],
            "full_rank": [16, 16],
            "kept_energy": [0.886993, 0.970525],
            "factorized": [True, False],
        }
    )
    table = ranks_table(ranks)
    _assert_for_people(table, ["rank", "energy kept %", "kept as"])
    assert table.frame.values.tolist()[0] == [
        "conv1",
        "12 / 16",
        "88.7",
        "factorised",
        "15 / 16",
        "97.1",
        "left dense",
    ]


def test_best_methods_and_explorer_tables():
    from smoothviz.headline import best_methods, headline_table

    table = best_methods_summary(best_methods(headline_table(_results())))
    _assert_for_people(table, ["target %", "best method", "test acc %"])
    assert table.frame[("smooth", "best method")].tolist() == ["svd_data_aware"] * 2
    summary = pd.DataFrame(
        [
            {
                "model": "baseline",
                "method": "svd · global σ² threshold",
                "ranks": {"3": 12, "7": 15},
                "test_acc": 0.226667,
                "n_test": 10000,
                "params": 8962,
                "total_params": 17890,
                "param_reduction": 0.49905,
                "flops": 3782656,
                "total_flops": 5532544,
                "flop_reduction": 0.31629,
            }
        ]
    )
    table = explorer_summary(summary)
    _assert_for_people(table, ["removed %", "params", "FLOPs", "test acc %", "ranks"])
    row = table.frame.iloc[0]
    assert row["params"] == "9.0 k of 17.9 k" and row["FLOPs"] == "3.78 M of 5.53 M"
    assert row["test images"] == "10,000" and row["ranks"] == "3: 12, 7: 15"

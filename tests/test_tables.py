"""Tables for people: rounded, labelled numbers, smooth beside baseline, a caption per column."""

from __future__ import annotations

import math

import pandas as pd

from smoothviz.tables import (
    count,
    differences_summary,
    interval,
    latency,
    pct,
    pp,
    tradeoff_summary,
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

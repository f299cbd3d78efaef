"""The headline table and its sentence: the sentence says what the numbers say, in both outcomes."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest

from smoothviz.headline import (
    HEADLINE_COLUMNS,
    best_methods,
    describe_test_split,
    headline_sentence,
    headline_table,
    key_target,
    load_results,
    save_results,
)


def _sweep(acc: dict[tuple[str, str, float], float], uncompressed: dict[str, float]):
    """A sweep-shaped frame from ``{(training, method, target): test_acc}``."""
    rows = [
        {
            "training": training,
            "method": method,
            "target_reduction": target,
            "param_reduction": target + 0.001,
            "params": 1000,
            "test_acc": a,
            "test_acc_bn_reestimated": None if a is None else a + 0.01,
            "test_acc_uncompressed": uncompressed[training],
            "error": None if a is not None else "budget not reachable",
        }
        for (training, method, target), a in acc.items()
    ]
    return pd.DataFrame(rows)


BENEFIT = _sweep(
    {
        ("baseline", "svd", 0.5): 0.85,
        ("baseline", "svd", 0.7): 0.62,
        ("baseline", "interpolative", 0.5): 0.87,
        ("baseline", "interpolative", 0.7): 0.71,
        ("smooth", "svd", 0.5): 0.88,
        ("smooth", "svd", 0.7): 0.864,
        ("smooth", "interpolative", 0.5): 0.87,
        ("smooth", "interpolative", 0.7): 0.80,
    },
    {"baseline": 0.894, "smooth": 0.892},
)
NO_BENEFIT = _sweep(
    {
        ("baseline", "svd", 0.5): 0.85,
        ("baseline", "svd", 0.7): 0.80,
        ("baseline", "prune_channels", 0.5): 0.70,
        ("baseline", "prune_channels", 0.7): None,
        ("smooth", "svd", 0.5): 0.84,
        ("smooth", "svd", 0.7): 0.795,
        ("smooth", "prune_channels", 0.5): 0.75,
        ("smooth", "prune_channels", 0.7): None,
    },
    {"baseline": 0.90, "smooth": 0.89},
)


def _numbers(sentence: str) -> list[float]:
    return [float(x) for x in re.findall(r"[-+]?\d+\.\d+", sentence)]


def test_table_has_the_report_json_fields_in_sweep_order():
    table = headline_table(BENEFIT.iloc[::-1])  # reversed: order comes from first appearance
    assert list(table.columns) == HEADLINE_COLUMNS
    assert list(table.training.unique()) == ["smooth", "baseline"]
    assert table.groupby(["training", "method"]).target_reduction.is_monotonic_increasing.all()
    assert len(table) == len(BENEFIT)


def test_best_method_per_target_skips_unreached_targets():
    best = best_methods(headline_table(NO_BENEFIT)).set_index(["training", "target_reduction"])
    assert best.loc[("baseline", 0.5), "method"] == "svd"
    assert best.loc[("baseline", 0.7), "method"] == "svd"  # prune_channels did not reach 70 %
    assert best.loc[("smooth", 0.7), "test_acc"] == pytest.approx(0.795)
    bn = best_methods(headline_table(NO_BENEFIT), "test_acc_bn_reestimated")
    assert bn.test_acc_bn_reestimated.max() == pytest.approx(0.86)


@pytest.mark.parametrize("frame", [BENEFIT, NO_BENEFIT], ids=["benefit", "no-benefit"])
def test_sentence_matches_the_table(frame):
    table = headline_table(frame)
    sentence = headline_sentence(table)
    at = table[table.target_reduction == 0.7].dropna(subset=["test_acc"])
    best = at.loc[at.groupby("training").test_acc.idxmax()].set_index("training")
    gain_pp = 100 * (best.test_acc["smooth"] - best.test_acc["baseline"])
    assert sentence.startswith("At 70 % fewer parameters")
    assert best.method["smooth"] in sentence
    numbers = _numbers(sentence)
    # Every accuracy the sentence quotes is in the table, in percent with one decimal.
    for training in ("smooth", "baseline"):
        assert round(100 * best.test_acc[training], 1) in numbers
        assert round(100 * at.test_acc_uncompressed[at.training == training].iloc[0], 1) in numbers
    if gain_pp >= 1.0:
        assert "smoothing keeps" in sentence and "no benefit" not in sentence
        assert f"{gain_pp:.1f} pp more" in sentence
    else:
        assert "no benefit measured in this run" in sentence and "keeps" not in sentence
        assert f"{gain_pp:+.1f} pp" in sentence


def test_the_two_fixtures_cover_both_outcomes():
    assert "smoothing keeps 15.4 pp more" in headline_sentence(headline_table(BENEFIT))
    assert "no benefit measured in this run" in headline_sentence(headline_table(NO_BENEFIT))


def test_the_sentence_goes_on_with_the_largest_target_and_its_own_verdict():
    # No benefit at 70 % (a data-aware method closes the gap), a clear one at 85 %.
    frame = _sweep(
        {
            ("baseline", "svd", 0.7): 0.86,
            ("baseline", "svd", 0.85): 0.62,
            ("smooth", "svd", 0.7): 0.865,
            ("smooth", "svd", 0.85): 0.79,
        },
        {"baseline": 0.894, "smooth": 0.892},
    )
    sentence = headline_sentence(headline_table(frame))
    first, second = sentence.split("; at 85 %, ")
    assert first.startswith("At 70 % fewer parameters") and "no benefit measured" in first
    assert "+0.5 pp" in first and "86.5 %" in first and "86.0 %" in first
    assert second.startswith("smoothing keeps 17.0 pp more") and "79.0 %" in second
    assert "62.0 %" in second and sentence.endswith(").")
    # The same table with the gain reversed at 85 % says no benefit in both clauses.
    flipped = frame.assign(
        test_acc=frame.test_acc.where(frame.target_reduction != 0.85, frame.test_acc[::-1].values)
    )
    assert headline_sentence(headline_table(flipped)).count("no benefit measured") == 2


def test_a_gain_below_the_threshold_is_no_benefit_and_the_threshold_is_a_parameter():
    frame = BENEFIT.copy()
    frame.loc[(frame.training == "smooth") & (frame.target_reduction == 0.7), "test_acc"] = 0.715
    table = headline_table(frame)
    assert "no benefit measured" in headline_sentence(table)  # +0.5 pp < 1 pp
    assert "keeps 0.5 pp more" in headline_sentence(table, min_benefit=0.004)


def test_different_best_methods_are_both_named():
    frame = BENEFIT.copy()
    frame.loc[(frame.training == "baseline") & (frame.method == "svd"), "test_acc"] = 0.3
    frame.loc[(frame.training == "smooth") & (frame.method == "interpolative"), "test_acc"] = 0.5
    sentence = headline_sentence(headline_table(frame))
    assert "(smooth with svd 86.4 %, the baseline at best 71.0 % with interpolative;" in sentence


def test_key_target_falls_back_to_the_closest_target_and_the_sentence_says_which():
    frame = BENEFIT.replace({"target_reduction": {0.7: 0.75}})
    assert key_target(frame) == 0.75
    assert headline_sentence(headline_table(frame)).startswith("At 75 % fewer parameters")


def test_no_method_reaching_the_target_is_no_benefit():
    frame = NO_BENEFIT[NO_BENEFIT.method == "prune_channels"]
    assert "no method reached the target" in headline_sentence(headline_table(frame))


def test_missing_training_or_column_is_a_clear_error():
    with pytest.raises(ValueError, match="smooth training 'smooth' not in the table"):
        headline_sentence(headline_table(BENEFIT[BENEFIT.training == "baseline"]))
    with pytest.raises(ValueError, match="lacks column"):
        headline_table(BENEFIT.drop(columns="test_acc_uncompressed"))
    with pytest.raises(TypeError, match="DataFrame"):
        headline_table([1, 2])


def test_results_round_trip_with_the_test_split(tmp_path, mini_data):
    path = save_results(NO_BENEFIT, mini_data, tmp_path / "tradeoff.csv")
    back = load_results(path)
    assert back.error.isna().sum() == 6 and back.error.iloc[3] == "budget not reachable"
    assert back.error.iloc[0] is None
    assert math.isnan(back.test_acc.iloc[3])
    assert describe_test_split(back) == "the embedded Fashion-MNIST subset's test split, 500 images"
    assert describe_test_split(back.assign(dataset="fashion-mnist", test_images=10000)) == (
        "Fashion-MNIST test split, all 10,000 images"
    )
    assert list(tmp_path.iterdir()) == [path]  # written atomically: no temporary file left

"""The headline: means and intervals over seeds, paired differences, and a sentence whose words
follow the interval (benefit, loss, no clear difference; one seed said so)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from smoothviz.headline import (
    DIFFERENCE_COLUMNS,
    HEADLINE_COLUMNS,
    SeedSpread,
    best_methods,
    comparison_configuration,
    describe_test_split,
    differences,
    headline_sentence,
    headline_table,
    key_target,
    load_results,
    load_seed_spread,
    save_results,
)
from smoothviz.notebook_params import TradeoffParams
from smoothviz.results_file import correctness_path

T_975_2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)  # Student t, 97.5 %, 2 degrees of freedom


def _sweep(acc: dict, uncompressed: dict[str, float]) -> pd.DataFrame:
    """A sweep-shaped frame from ``{(training, method, target, seed): test_acc}``."""
    rows = [
        {
            "training": training,
            "seed": seed,
            "method": method,
            "target_reduction": target,
            "param_reduction": target + 0.001,
            "params": 1000,
            "test_acc": a,
            "test_acc_bn_reestimated": None if a is None else a + 0.01,
            "test_acc_uncompressed": uncompressed[training],
            "error": None if a is not None else "budget not reachable",
        }
        for (training, method, target, seed), a in acc.items()
    ]
    return pd.DataFrame(rows)


UNCOMPRESSED = {"baseline": 0.894, "smooth": 0.892}


def _seeded(smooth: list[float], baseline: list[float], target=0.7, method="svd_data_aware"):
    acc = {}
    for seed, (s, b) in enumerate(zip(smooth, baseline)):
        acc[("baseline", method, target, seed)] = b
        acc[("smooth", method, target, seed)] = s
    return acc


# Three seeds each, differences (pp): benefit +2, +2.5, +1.5; harm -3, -2, -4; unclear +5, -4, +1.
BENEFIT = _sweep(_seeded([0.88, 0.865, 0.875], [0.86, 0.84, 0.86]), UNCOMPRESSED)
HARM = _sweep(_seeded([0.83, 0.84, 0.82], [0.86, 0.86, 0.86]), UNCOMPRESSED)
UNCLEAR = _sweep(_seeded([0.91, 0.82, 0.87], [0.86, 0.86, 0.86]), UNCOMPRESSED)


def _numbers(sentence: str) -> list[float]:
    return [float(x) for x in re.findall(r"[-+]?\d+\.\d+", sentence)]


def test_table_has_means_and_t_intervals_over_seeds_in_sweep_order():
    frame = pd.concat([BENEFIT, BENEFIT.assign(method="svd", test_acc=BENEFIT.test_acc - 0.2)])
    table = headline_table(frame.iloc[::-1])  # reversed: order comes from first appearance
    assert list(table.columns) == HEADLINE_COLUMNS
    assert list(table.training.unique()) == ["smooth", "baseline"]
    assert list(table.method.unique()) == ["svd", "svd_data_aware"]
    row = table[(table.training == "smooth") & (table.method == "svd_data_aware")].iloc[0]
    # smooth: 0.88, 0.865, 0.875 -> mean 0.8733, sd 0.00764
    sd = float(np.std([0.88, 0.865, 0.875], ddof=1))
    assert row.n_seeds == 3 and row.test_acc == row.test_acc_mean == pytest.approx(0.873333, 1e-5)
    assert row.test_acc_ci95_high - row.test_acc == pytest.approx(T_975_2 * sd / math.sqrt(3))
    assert row.test_acc_uncompressed == 0.892 and row.param_reduction == pytest.approx(0.701)


def test_one_seed_has_no_interval_over_seeds_and_unreached_targets_none_at_all():
    one = headline_table(BENEFIT[BENEFIT.seed == 0].drop(columns="seed"))  # a pre-seed sweep
    assert (one.n_seeds == 1).all() and one.test_acc_ci95_low.isna().all()
    frame = _sweep(
        {("baseline", "svd", 0.9, 0): None, ("smooth", "svd", 0.9, 0): 0.5}, UNCOMPRESSED
    )
    table = headline_table(frame).set_index("training")
    assert table.loc["baseline", "n_seeds"] == 0 and math.isnan(table.loc["baseline", "test_acc"])


@pytest.mark.parametrize(
    "frame, verdict, mean_pp",
    [(BENEFIT, "benefit", 2.0), (HARM, "harm", -3.0), (UNCLEAR, "unclear", 2 / 3)],
    ids=["benefit", "harm", "unclear"],
)
def test_the_three_verdicts_from_paired_seeds(frame, verdict, mean_pp):
    d = differences(frame)
    assert list(d.columns) == DIFFERENCE_COLUMNS and len(d) == 1
    row = d.iloc[0]
    assert row.verdict == verdict and row.ci_source == "seeds" and row.n_seeds == 3
    assert 100 * row.difference_mean == pytest.approx(mean_pp)
    per_seed = (
        frame[frame.training == "smooth"].test_acc.to_numpy()
        - frame[frame.training == "baseline"].test_acc.to_numpy()
    )
    half = T_975_2 * per_seed.std(ddof=1) / math.sqrt(3)
    assert row.difference_ci95_low == pytest.approx(per_seed.mean() - half)
    assert row.difference_ci95_high == pytest.approx(per_seed.mean() + half)


def test_sentence_words_follow_the_interval():
    benefit = headline_sentence(BENEFIT)
    assert benefit.startswith("At 70 % fewer parameters (no fine-tuning), smoothing keeps 2.0 pp")
    assert "with svd_data_aware (95 % CI" in benefit and "pp, 3 seeds;" in benefit
    assert "87.3 % vs 85.3 %" in benefit and "uncompressed 89.2 % vs 89.4 %" in benefit
    harm = headline_sentence(HARM)
    assert "smoothing loses 3.0 pp of test accuracy against the baseline" in harm
    assert re.search(r"95 % CI -\d\.\d to -\d\.\d pp, 3 seeds", harm)
    unclear = headline_sentence(UNCLEAR)
    assert "no clear difference between smoothing and the baseline (+0.7 pp)" in unclear
    assert re.search(r"95 % CI -\d+\.\d to \d+\.\d pp, 3 seeds", unclear)
    for sentence in (benefit, harm, unclear):  # a loss is called a loss, never "no benefit"
        assert "no benefit" not in sentence and sentence.endswith(").")
    assert "keeps" not in harm and "keeps" not in unclear and "loses" not in benefit


def _correct(n: int, right: int, offset: int = 0) -> np.ndarray:
    v = np.zeros(n, dtype=bool)
    v[offset : offset + right] = True
    return v


def test_one_seed_wording_uses_the_test_images_and_says_seeds_are_not_in_it():
    frame = BENEFIT[BENEFIT.seed == 0].copy()
    # 200 test images: smooth right on 176 (88 %), baseline on 172 (86 %); they disagree on 4.
    frame["test_correct"] = [_correct(200, 172), _correct(200, 176)]  # baseline, smooth rows
    d = differences(frame).iloc[0]
    assert d.ci_source == "test_images" and d.n_seeds == 1 and d.test_images == 200
    assert d.difference_mean == pytest.approx(0.02) and d.verdict == "unclear"
    sentence = headline_sentence(frame)
    assert "no clear difference" in sentence
    assert (
        "over the 200 test images, exact McNemar; one seed, so seed-to-seed variation is not in"
        in sentence
    )
    # Without per-image results there is no interval, and the sentence says so.
    bare = headline_sentence(frame.drop(columns="test_correct"))
    assert "no interval" in bare and "no verdict" in bare and "+2.0 pp" in bare
    # A clear one-seed benefit: smooth right on 50 more of 1,000 images, never worse.
    frame["test_correct"] = [_correct(1000, 860), _correct(1000, 910)]
    frame["test_acc"] = [0.86, 0.91]
    assert "smoothing keeps 5.0 pp more" in headline_sentence(frame)


def test_one_seed_quotes_the_committed_spread_and_says_whether_this_run_is_within():
    frame = BENEFIT[BENEFIT.seed == 0].copy()
    frame["test_correct"] = [_correct(200, 172), _correct(200, 176)]
    spread = SeedSpread("seed_spread.md", {("svd_data_aware", 0.7): [-0.013, 0.0, 0.034, 0.012]})
    inside = headline_sentence(frame, spread=spread)
    assert "the committed 4-seed measurement of this configuration (seed_spread.md)" in inside
    assert "per-seed differences from -1.3 to +3.4 pp" in inside
    assert "this run's +2.0 pp lies within that spread" in inside
    narrow = SeedSpread("s.md", {("svd_data_aware", 0.7): [0.001, 0.005, 0.003]})
    assert "lies outside that spread" in headline_sentence(frame, spread=narrow)
    other = SeedSpread("s.md", {("svd", 0.7): [0.001, 0.005]})  # another method: nothing quoted
    assert "committed" not in headline_sentence(frame, spread=other)


def test_the_sentence_goes_on_with_the_largest_target_and_its_best_method():
    frame = pd.concat(
        [
            BENEFIT,
            _sweep(_seeded([0.70, 0.60, 0.80], [0.72, 0.62, 0.81], target=0.9), UNCOMPRESSED),
            _sweep(
                _seeded([0.2, 0.2, 0.2], [0.1, 0.1, 0.1], target=0.9, method="svd"), UNCOMPRESSED
            ),
        ]
    )
    sentence = headline_sentence(frame)
    first, second = sentence.split("; at 90 %, ")
    assert first.startswith("At 70 % fewer parameters") and "keeps 2.0 pp more" in first
    # at 90 % the best method by mean accuracy is svd_data_aware (about 70 %, not svd's 15 %)
    assert second.startswith("smoothing loses 1.7 pp") and "with svd_data_aware" in second


def test_best_methods_and_key_target():
    frame = pd.concat([BENEFIT, BENEFIT.assign(method="svd", test_acc=BENEFIT.test_acc - 0.2)])
    best = best_methods(headline_table(frame)).set_index("training")
    assert best.loc["smooth", "method"] == "svd_data_aware"
    assert key_target(BENEFIT.replace({"target_reduction": {0.7: 0.75}})) == 0.75
    assert headline_sentence(BENEFIT.replace({"target_reduction": {0.7: 0.75}})).startswith(
        "At 75 % fewer parameters"
    )


def test_no_method_reaching_the_target_and_bad_tables_are_clear():
    frame = _sweep(
        {("baseline", "svd", 0.9, 0): None, ("smooth", "svd", 0.9, 0): 0.5}, UNCOMPRESSED
    )
    assert "no method reached the target for both trainings" in headline_sentence(frame)
    with pytest.raises(ValueError, match="smooth training 'smooth' not in the table"):
        headline_sentence(BENEFIT[BENEFIT.training == "baseline"])
    with pytest.raises(ValueError, match="appears more than once"):
        differences(pd.concat([BENEFIT, BENEFIT.iloc[:1]]))
    with pytest.raises(ValueError, match="not a headline table of several seeds"):
        headline_sentence(headline_table(BENEFIT))
    with pytest.raises(ValueError, match="lacks column"):
        headline_table(BENEFIT.drop(columns="test_acc_uncompressed"))
    with pytest.raises(TypeError, match="DataFrame"):
        headline_table([1, 2])


def test_results_round_trip_with_per_image_correctness(tmp_path, mini_data):
    frame = BENEFIT.copy()
    n = len(mini_data.y_test)
    frame["test_correct"] = [_correct(n, 100 + i, offset=i) for i in range(len(frame))]
    frame.loc[2, "test_correct"] = None  # a row that measured nothing
    path = save_results(frame, mini_data, tmp_path / "tradeoff.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tradeoff.csv", "tradeoff_correct.npz"]
    assert "test_correct" not in path.read_text().splitlines()[0]
    back = load_results(path)
    assert back.test_correct.iloc[2] is None
    for i in (0, 1, 5):
        assert np.array_equal(back.test_correct.iloc[i], frame.test_correct.iloc[i])
    assert describe_test_split(back) == "the embedded Fashion-MNIST subset's test split, 500 images"
    # A correctness file of other rows is refused; saving without correctness removes a stale one.
    other = frame.assign(seed=frame.seed + 7)
    save_results(other, mini_data, tmp_path / "other.csv")
    correctness_path(tmp_path / "other.csv").replace(correctness_path(path))
    with pytest.raises(ValueError, match="does not match"):
        load_results(path)
    save_results(BENEFIT, mini_data, path)
    assert not correctness_path(path).exists() and "test_correct" not in load_results(path)
    bad = BENEFIT.copy()
    bad.loc[0, "error"] = "budget not reachable"
    back = load_results(save_results(bad, mini_data, path))
    assert back.error.iloc[0] == "budget not reachable" and back.error.iloc[1] is None


def test_the_seed_spread_is_found_only_for_the_same_configuration(tmp_path):
    params = TradeoffParams()
    configs = params.training_configs()
    record = {
        "configuration": comparison_configuration(configs, "fashion-mnist", 10000),
        "differences": [
            {
                "method": "svd_data_aware",
                "target_reduction": 0.7,
                "per_seed": {"0": 0.01, "1": 0.02},
            }
        ],
    }
    path = tmp_path / "seed_spread.json"
    path.write_text(json.dumps(record))
    # another seed of the same trainings is the same configuration
    spread = load_seed_spread(params.training_configs(3), "fashion-mnist", 10000, path)
    assert spread is not None and spread.at("svd_data_aware", 0.7) == [0.01, 0.02]
    assert spread.at("svd", 0.7) is None
    assert load_seed_spread(configs, "fashion-mnist", 2000, path) is None  # another test split
    wider = TradeoffParams(width=16).training_configs()
    assert load_seed_spread(wider, "fashion-mnist", 10000, path) is None
    assert load_seed_spread(configs, "fashion-mnist", 10000, tmp_path / "none.json") is None

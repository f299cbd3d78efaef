"""Seeds as an axis: the ``seeds`` parameter, ``--seeds N``, every row with its seed, and the
report's differences over seeds end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

from smoothviz import report
from smoothviz.cli import main
from smoothviz.config import ConfigError
from smoothviz.models import build_model
from smoothviz.notebook_params import TradeoffParams, TrainParams
from smoothviz.sweep import COLUMNS, sweep_seeds

ROOT = Path(__file__).resolve().parent.parent


def test_seeds_parameter_default_and_trainings_per_seed():
    params = TrainParams()
    assert params.seeds == (0,) and params.seed is None
    two = TrainParams(seeds=[0, 1])
    assert [c.seed for c in two.all_training_configs()] == [0, 0, 1, 1]
    assert two.training_configs()["smooth"].seed == 0  # the first seed's, for 02/03/05
    assert two.training_configs(1)["baseline"].seed == 1
    point = report.plan("default", {"seeds": [3, 4]})[0]
    assert sorted({c.seed for c in point.training_configs()}) == [3, 4]
    assert len(point.training_configs()) == 4  # each seed's baseline and smooth, on the cluster


@pytest.mark.parametrize(
    "seeds, words",
    [
        ([0, 1, 0], "seed(s) [0] more than once ([0, 1, 0])"),
        ([], "non-empty list of ints >= 0, got []"),
        ([2, -1], "non-empty list of ints >= 0, got [2, -1]"),
        ("x", "'seeds' must be list[int]"),
    ],
)
def test_bad_seeds_lists_are_clear_errors_naming_the_value(seeds, words):
    with pytest.raises(ConfigError) as err:
        report.plan("default", {"seeds": seeds})
    assert words in str(err.value) and "seeds" in str(err.value)


@pytest.mark.parametrize(
    "value, words",
    [
        ("0", "must be >= 1 (seeds 0..N-1), got 0"),
        ("-1", "must be >= 1 (seeds 0..N-1), got -1"),
        ("x", "expected a whole number of seeds >= 1 (seeds 0..N-1), got 'x'"),
    ],
)
def test_bad_seeds_option_exits_2_naming_the_value(value, words, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["report", "--out", str(tmp_path / "r"), "--seeds", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--seeds" in err and words in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_seeds_option_and_parameter_together_is_an_error(capsys, tmp_path):
    code = main(["report", "--out", str(tmp_path / "r"), "--seeds", "2", "-p", "seeds=[0]"])
    assert code == 2 and "give --seeds or -p/--grid seeds, not both" in capsys.readouterr().err


def test_the_old_seed_parameter_still_works_for_one_release_with_a_warning():
    with pytest.warns(DeprecationWarning, match="seed=3 is taken as seeds=\\[3\\]"):
        params = TrainParams(seed=3)
    assert params.seeds == (3,) and params.seed is None
    assert params.training_configs()["baseline"].seed == 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        point = report.plan("default", {"seed": 5})[0]
        with pytest.raises(ConfigError, match="disagree"):
            TrainParams(seed=2, seeds=[1])
    # the notebooks are given what it means, never the deprecated name
    assert all(nb.parameters.get("seeds") == [5] for nb in point.notebooks)
    assert all("seed" not in nb.parameters for nb in point.notebooks)


def test_sweep_seeds_rows_carry_their_seed_and_each_seed_its_own_calibration(mini_data):
    data = mini_data.subset(n_train=200, n_test=100)
    models = {}
    for seed in (0, 1):
        torch.manual_seed(seed)
        models[seed] = {
            "baseline": build_model("cnn", 1, 10, width=4).eval(),
            "smooth": build_model("cnn", 1, 10, width=4).eval(),
        }
    df = sweep_seeds(
        models,
        ["prune_magnitude", "svd"],
        [0.3, 0.95],  # 95 % is out of reach of svd for this cnn: those rows measure nothing
        data,
        calibration_size=32,
        bn_images=32,
        latency_repeats=1,
        latency_batch=2,
        per_image=True,
        progress=False,
    )
    assert list(df.columns) == COLUMNS + ["test_correct"]
    assert sorted(df.seed.unique()) == [0, 1] and len(df) == 2 * 2 * 2 * 2
    ok = df[df.error.isna()]
    assert ((ok.method == "prune_magnitude") & (ok.target_reduction == 0.3)).sum() == 4
    assert all(len(v) == 100 for v in ok.test_correct)
    assert (ok.test_correct.map(lambda v: v.mean()) == ok.test_acc).all()
    out_of_reach = df[(df.method == "svd") & (df.target_reduction == 0.95)]
    assert (
        out_of_reach.error.notna().all()
        and out_of_reach.test_correct.map(lambda v: v is None).all()
    )
    with pytest.raises(TypeError, match="seed="):
        sweep_seeds(models, ["svd"], [0.3], data, seed=1)


def test_tradeoff_defaults_span_50_to_90_percent_with_at_least_six_targets():
    targets = TradeoffParams().reductions
    assert len(targets) >= 6 and min(targets) <= 0.5 and max(targets) >= 0.9


SMALL = {  # the notebook tests' tiny report (tests/test_notebooks.py), two targets
    "dataset": "fashion-mnist-mini",
    "model": "cnn",
    "width": 8,
    "epochs": 2,
    "train_subset": 2048,
    "eval_subset": 300,
    "reductions": [0.3, 0.5],
    "methods": ["svd", "prune_magnitude"],
    "bn_reestimate": False,
}


@pytest.mark.slow
def test_report_with_two_seeds_end_to_end(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("seeds")
    # the notebook tests' cache: their seed-0 trainings are the same configs
    env = {**os.environ, "SMOOTHVIZ_CACHE": str(tmp_path_factory.getbasetemp() / "train-cache")}
    args = [sys.executable, "-m", "smoothviz", "report", "--out", str(tmp / "r"), "--quiet"]
    args += ["--seeds", "2", "--notebooks", "01_train,04_tradeoff"]
    for name, value in SMALL.items():
        args += ["-p", f"{name}={value}"]
    out = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    index = Path(out.stdout.strip().splitlines()[-1])
    record = json.loads((index.parent / "report.json").read_text())
    cache = Path(env["SMOOTHVIZ_CACHE"]) / "checkpoints"
    trained = [json.loads(p.read_text())["config"] for p in cache.glob("*.json")]
    mine = [c for c in trained if c["model"] == "cnn" and c["train_subset"] == 2048]
    assert {(c["seed"], c["first_order"] > 0) for c in mine} >= {
        (s, smooth) for s in (0, 1) for smooth in (False, True)
    }  # two seeds trained, baseline and smooth each
    rows = pd.read_csv(index.parent / "00-defaults" / "tradeoff.csv")
    assert sorted(rows.seed.unique()) == [0, 1]
    assert len(rows) == 2 * 2 * 2 * 2  # seeds x trainings x methods x targets
    assert record["differences"] and all(d["ci_source"] == "seeds" for d in record["differences"])
    assert all(d["n_seeds"] == 2 for d in record["differences"])
    assert all(len(d["difference_ci95"]) == 2 for d in record["differences"])
    assert all(r["n_seeds"] == 2 for r in record["headline"])
    (sentence,) = record["headline_sentence"].values()
    assert "2 seeds" in sentence

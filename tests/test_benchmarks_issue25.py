"""Issue 25's benchmark scripts: their analysis and Markdown (fast) and tiny real runs (slow).

The long measurements are the lead's, on an idle machine; here the scripts run at tiny sizes.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pandas as pd
import pytest

from smoothviz.frontier import committed_frontier, compare_to_frontier, recipe

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
ENV = {"device": "CPU: test", "torch": "2", "torchvision": "0", "git_sha": "abc", "date": "today"}


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module


# -------------------------------------------------------------------- compression_tradeoff.py
def _tradeoff_rows():
    rows = []
    accs = {  # (training, target) -> {method: acc}
        ("baseline", 0.85): {"svd_data_aware": 0.86, "interpolative": 0.80, "hybrid": 0.865},
        ("baseline", 0.9): {"svd_data_aware": 0.85, "interpolative": 0.78, "hybrid": 0.87},
        ("first_order", 0.85): {"svd_data_aware": 0.885, "interpolative": 0.88, "hybrid": 0.87},
        ("first_order", 0.9): {"svd_data_aware": 0.875, "interpolative": 0.86, "hybrid": 0.88},
    }
    for (training, target), by_method in accs.items():
        for method, acc in by_method.items():
            rows.append(
                {
                    "setup": "resnet18",
                    "model": "resnet18",
                    "training": training,
                    "method": method,
                    "target_reduction": target,
                    "param_reduction": target,
                    "params": round(700_000 * (1 - target)),
                    "params_uncompressed": 700_000,
                    "test_acc": acc,
                    "test_acc_uncompressed": 0.89,
                    "error": None,
                }
            )
    return pd.DataFrame(rows)


def test_merge_keeps_the_stored_rows_of_targets_this_run_did_not_measure(bench):
    tradeoff = bench("compression_tradeoff")
    old = _tradeoff_rows().assign(git_sha="old")
    new = old[old.target_reduction == 0.9].assign(test_acc=0.5, git_sha="new")
    merged = tradeoff.merge_rows(old, new)
    assert len(merged) == len(old)  # the 85 % rows stay, the 90 % rows are replaced
    by_target = merged.groupby("target_reduction")["git_sha"].unique()
    assert list(by_target[0.85]) == ["old"] and list(by_target[0.9]) == ["new"]
    assert (merged[merged.git_sha == "new"].test_acc == 0.5).all()


def test_issue_25_goals_are_marked_met_or_not_from_the_frontier_and_the_losses(bench):
    tradeoff = bench("compression_tradeoff")
    df = _tradeoff_rows()
    frontier = pd.DataFrame(
        {
            "width": [4, 6, 16],
            "seed": 0,
            "params": [44_550, 99_508, 700_000],
            "test_acc": [0.873, 0.89, 0.89],
        }  # fmt: skip
    )
    placement = compare_to_frontier(df, frontier).assign(setup="resnet18")
    goals = {(g["training"], g["target_reduction"], g["kind"]): g for g in tradeoff.check_goals(
        df, placement)}  # fmt: skip
    loss90 = goals[("first_order", 0.9, "loss")]
    assert loss90["best_method"] == "hybrid" and loss90["met"]  # 0.89 - 0.88 = 1.0 pp <= 1.5
    assert goals[("baseline", 0.9, "loss")]["met"]  # 2.0 pp <= 3
    at85 = goals[("first_order", 0.85, "frontier")]
    assert at85["best_method"] == "svd_data_aware" and at85["versus_frontier"].startswith("below")
    assert not at85["met"]
    hybrid = tradeoff.hybrid_against_single(df)
    first = {(h["training"], h["target_reduction"]): h for h in hybrid}
    assert first[("baseline", 0.9)]["best_single"] == "svd_data_aware"
    assert first[("baseline", 0.9)]["difference"] == pytest.approx(0.02)
    payload = {
        "provenance": ENV,
        "arguments": {"width": None, "epochs": None},
        "issue_10_targets": [],
        "sweep_seconds": 1.0,
        "rows": json.loads(df.assign(test_acc_bn_reestimated=df.test_acc, flops=1e6,
                                     latency_ms=1.0, git_sha="abc").to_json(orient="records")),
        "frontier": {"resnet18": {"rows": frontier.to_dict(orient="records")}},
        "frontier_placement": json.loads(placement.to_json(orient="records")),
        "issue_25_goals": list(goals.values()),
        "hybrid_vs_single": hybrid,
    }  # fmt: skip
    text = tradeoff.render(payload)
    for heading in (
        "## Issue 25 goals",
        "## The hybrid method against the best single method",
        "## Trained-small frontier (resnet18",
        "## Against the trained-small frontier",
    ):
        assert heading in text
    assert "| not met |" in text and "| met |" in text and "below (one seed)" in text


# ------------------------------------------------------------------------ compression_speed.py
def test_the_speed_guard_and_a_loaded_machine(bench, monkeypatch, tmp_path):
    speed = bench("compression_speed")
    rows = [
        {"method": "a", "target": 0.7, "call": "first", "seconds": 1, "evaluations": 2.5},
        {"method": "a", "target": 0.8, "call": "further", "seconds": 1, "evaluations": 0.9},
        {"method": "b", "target": 0.7, "call": "first", "seconds": 1, "evaluations": 2.0},
        {"method": "b", "target": 0.8, "call": "further", "seconds": 1, "evaluations": 1.2},
        {"method": "c", "target": 0.7, "call": "first", "seconds": None, "evaluations": None},
    ]
    guard = speed.guard(rows)
    assert guard["a"]["met"] and not guard["b"]["met"] and not guard["c"]["met"]
    assert guard["b"]["further_max"] == 1.2
    load = {"load_1": 3.0, "load_5": 3.0, "load_15": 3.0, "cores": 2, "per_core": 1.5}
    monkeypatch.setattr(speed, "machine_load", lambda: load)
    with pytest.raises(SystemExit, match="loaded"):
        speed.main(["--out", str(tmp_path)])
    assert not list(tmp_path.iterdir())  # nothing measured, nothing written
    payload = {
        "provenance": ENV,
        "arguments": {"model": "resnet18", "width": 16, "epochs": 4, "train_subset": 20000,
                      "dataset": "fashion-mnist", "calibration_size": 512, "max_load": 0.25},
        "threads": 2, "test_images": 10000, "evaluation_runs": [1.0, 1.1, 1.2],
        "evaluation_seconds": 1.1,
        "load": {"before": load, "after": load, "others_after": 1.0, "flagged": True},
        "rows": [{**r, "error": None if r["seconds"] else "no", "param_reduction": r["target"]}
                 for r in rows],
        "guard": guard,
    }  # fmt: skip
    text = speed.render(payload)
    assert "**Loaded machine**" in text and "| b | 2.00 | 1.20 | NOT met |" in text


# ----------------------------------------------------------------------- thread_sharing.py
def test_the_thread_sharing_markdown_compares_before_and_after(bench):
    sharing = bench("thread_sharing")
    load = {"load_1": 0.1, "per_core": 0.05}
    runs = [
        {"mode": "alone", "processes": 1, "workers": [{"seconds": 10.0, "threads": 2}],
         "load_before": load, "load_after": load},
        {"mode": "before", "processes": 2, "load_before": load, "load_after": load,
         "workers": [{"seconds": 100.0, "threads": 2}, {"seconds": 120.0, "threads": 2}]},
        {"mode": "after", "processes": 2, "load_before": load, "load_after": load,
         "workers": [{"seconds": 20.0, "threads": 1}, {"seconds": 22.0, "threads": 1}]},
    ]  # fmt: skip
    payload = {
        "provenance": ENV,
        "arguments": {"target": 0.85, "calibration_size": 512, "model": "resnet18", "width": 16,
                      "dataset": "fashion-mnist", "max_load": 0.25},
        "flagged": False, "runs": runs,
    }  # fmt: skip
    text = sharing.render(payload)
    assert "| after | 2 | 1, 1 | 20.0, 22.0 | 21.0 |" in text
    assert "from 110.0 s to 21.0 s (5.24x)" in text


# ----------------------------------------------------------------------- calibration_size.py
def test_the_suggested_calibration_size_is_the_smallest_near_the_best(bench):
    calib = bench("calibration_size")
    rows = []
    for size, acc in ((128, 0.80), (512, 0.851), (2048, 0.852)):
        for target in (0.85, 0.9):
            rows.append({"method": "hybrid", "training": "baseline", "target_reduction": target,
                         "calibration_size": size, "test_acc": acc, "error": None})  # fmt: skip
    df = pd.DataFrame(rows)
    suggested = calib.suggest(df, within_pp=0.2)
    assert suggested["hybrid"]["suggested"] == 512
    payload = {
        "provenance": ENV,
        "arguments": {"model": "resnet18", "width": 16, "epochs": 4, "train_subset": 20000,
                      "dataset": "fashion-mnist", "within": 0.2},
        "test_images": 10000, "seconds": 5.0,
        "rows": json.loads(df.to_json(orient="records")),
        "suggested": json.loads(json.dumps(suggested)),
    }  # fmt: skip
    text = calib.render(payload)
    assert "| hybrid | 0.8000 | 0.8510 | 0.8520 | 512 |" in text


# ------------------------------------------------------------------ trained_small_frontier.py
def test_the_committed_frontier_matches_the_main_jobs_own_baseline(bench, tmp_path):
    script = bench("trained_small_frontier")
    from smoothviz.notebook_params import TradeoffParams

    notebook_baseline = TradeoffParams().training_configs()["baseline"]
    committed = script.baseline_config("main_job", "cpu")
    assert recipe(committed) == recipe(notebook_baseline)
    rows = [
        {"width": w, "seed": 0, "params": p, "test_acc": a, "config_hash": "x", "source": "trained"}
        for w, p, a in ((3, 25243, 0.8672), (8, 176258, 0.8908))
    ]
    payload = {"provenance": ENV, "arguments": {"recipe": "main_job"},
               "recipe": recipe(committed), "rows": rows}  # fmt: skip
    path = tmp_path / "trained_small_frontier.json"
    path.write_text(json.dumps(payload))
    shown = committed_frontier(notebook_baseline, path)
    assert shown is not None and shown["source"].str.startswith("committed").all()
    assert "| 3 | 25243 | 0.8672 |" in script.render(payload)


# ------------------------------------------------------------------------ tiny real runs (slow)
TINY = ["--dataset", "fashion-mnist-mini", "--model", "cnn", "--width", "4", "--epochs", "1",
        "--train-subset", "512", "--test-images", "100", "--calibration-size", "32"]  # fmt: skip


@pytest.mark.slow
def test_compression_speed_runs_tiny(bench, cache_dir, tmp_path):
    speed = bench("compression_speed")
    args = [*TINY, "--evaluations", "1", "--targets", "0.5", "0.7", "--methods",
            "svd_data_aware", "hybrid", "--allow-loaded", "--out", str(tmp_path)]  # fmt: skip
    speed.main(args)
    payload = json.loads((tmp_path / "compression_speed.json").read_text())
    assert [r["call"] for r in payload["rows"]] == ["first", "further"] * 2
    assert set(payload["guard"]) == {"svd_data_aware", "hybrid"}
    assert {"before", "after", "flagged"} <= set(payload["load"])
    assert (tmp_path / "compression_speed.md").read_text().startswith("# Compression speed")


@pytest.mark.slow
def test_thread_sharing_runs_tiny(bench, cache_dir, tmp_path):
    sharing = bench("thread_sharing")
    sharing.main([*TINY, "--target", "0.5", "--allow-loaded", "--out", str(tmp_path)])
    payload = json.loads((tmp_path / "thread_sharing.json").read_text())
    runs = {r["mode"]: r for r in payload["runs"]}
    cores = payload["cores"]
    assert [w["threads"] for w in runs["after"]["workers"]] == [max(1, cores // 2)] * 2
    assert [w["threads"] for w in runs["alone"]["workers"]] == [cores]


@pytest.mark.slow
def test_calibration_size_runs_tiny(bench, cache_dir, tmp_path):
    calib = bench("calibration_size")
    calib.main([*TINY[:-2], "--sizes", "16", "32", "--targets", "0.5", "--methods",
                "svd_data_aware", "hybrid", "--trainings", "baseline", "--out", str(tmp_path)])  # fmt: skip
    payload = json.loads((tmp_path / "calibration_size.json").read_text())
    assert {r["calibration_size"] for r in payload["rows"]} == {16, 32}
    assert set(payload["suggested"]) == {"svd_data_aware", "hybrid"}

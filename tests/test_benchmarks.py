"""benchmarks/_common.py (result files, the resume store) and each script's --render-only path."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
RESULTS = BENCHMARKS / "results"


@pytest.fixture
def bench(monkeypatch):
    """Import a benchmark script (or ``_common``) by name, as the scripts import each other."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module


# ---------------------------------------------------------------------------------- resume store
def test_the_last_record_of_a_key_wins_and_clear_removes_the_store(bench, tmp_path):
    common = bench("_common")
    store = common.ResumeStore(tmp_path / "sub" / "run.partial.jsonl", key=lambda r: r["k"])
    assert store.records() == {} and store.get("a") is None
    store.put({"k": "a", "v": 1})
    store.put({"k": "b", "v": 2})
    store.put({"k": "a", "v": 3})
    again = common.ResumeStore(store.path, key=lambda r: r["k"])  # a restarted run
    assert again.records() == {"a": {"k": "a", "v": 3}, "b": {"k": "b", "v": 2}}
    assert list(again.records()) == ["a", "b"]
    again.clear()
    assert not store.path.exists() and store.records() == {}


def test_a_line_cut_short_is_skipped_and_the_next_record_starts_a_fresh_line(bench, tmp_path):
    common = bench("_common")
    path = tmp_path / "run.partial.jsonl"
    path.write_text('{"k": "a", "v": 1}\n{"k": "b", "v"')  # stopped while writing "b"
    store = common.ResumeStore(path, key=lambda r: r["k"])
    with pytest.warns(UserWarning, match="not JSON"):
        assert store.records() == {"a": {"k": "a", "v": 1}}
    store.put({"k": "c", "v": 3})
    with pytest.warns(UserWarning, match=r"run.partial.jsonl:2"):
        assert set(store.records()) == {"a", "c"}


def test_tuple_keys_from_the_records_fields(bench, tmp_path):
    common = bench("_common")
    store = common.ResumeStore(tmp_path / "rows.jsonl", key=lambda r: (r["model"], r["target"]))
    store.put({"model": "cnn", "target": 0.5, "acc": 0.8})
    assert store.get(("cnn", 0.5))["acc"] == 0.8
    assert store.get(("cnn", 0.7)) is None


# -------------------------------------------------------------------------------- result files
def test_results_are_written_under_out_with_the_scripts_layout(bench, tmp_path):
    common = bench("_common")
    results = common.Results(tmp_path / "new", "thing")
    results.write_csv(pd.DataFrame({"a": [1, 2]}))
    results.write_json({"b": [1]}, indent=2, final_newline=True)
    results.write_markdown("# title\n")
    assert (tmp_path / "new" / "thing.csv").read_text() == "a\n1\n2\n"
    assert (tmp_path / "new" / "thing.json").read_text() == '{\n  "b": [\n    1\n  ]\n}\n'
    assert results.read_json() == {"b": [1]}
    assert results.path("md").read_text() == "# title\n"
    assert not list((tmp_path / "new").glob(".*.tmp"))  # atomic: no temporary file left


def test_provenance_names_the_command_that_reproduces_the_run(bench):
    common = bench("_common")
    info = common.provenance(script=BENCHMARKS / "svd_choices.py", argv=["--variants", "a b"])
    assert info["command"] == "python benchmarks/svd_choices.py --variants 'a b'"
    for key in ("device", "torch", "git_sha", "date"):
        assert info[key]


# ------------------------------------------------------------------------- --render-only paths
# The committed Markdown of these results is exactly what their script renders from the JSON
# beside it. (channel_methods.md, main_job_time.md, widget_latency.md and lambda_sweep_main_job.md
# carry a paragraph added by hand after the run; the lambda sweeps' JSON predates the invocation's
# wall time, which their Markdown prints.)
RENDERED = {
    "compression_tradeoff": ["--render-only", str(RESULTS / "compression_tradeoff.json")],
    "cuda_check": ["--render-only", str(RESULTS / "cuda_check.json")],
    "grid_scaling": ["--render-only", str(RESULTS / "grid_scaling.json")],
    "main_job_model": ["--render-only", str(RESULTS / "main_job_model.json")],
    "main_job_speedups": ["--render-only", str(RESULTS / "main_job_speedups.json")],
    "regularizer_overhead": ["--render-only", str(RESULTS / "regularizer_overhead.json")],
    "svd_choices": ["--render-only", str(RESULTS / "svd_choices.json")],
}


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_render_only_rewrites_the_committed_markdown_from_its_json(bench, tmp_path, name):
    module = bench(name)
    module.main([*RENDERED[name], "--out", str(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.md"]  # nothing measured
    assert (tmp_path / f"{name}.md").read_text() == (RESULTS / f"{name}.md").read_text()


def test_render_only_without_a_path_reads_the_json_under_out(bench, tmp_path):
    shutil.copy(RESULTS / "svd_choices.json", tmp_path)
    bench("svd_choices").main(["--render-only", "--out", str(tmp_path)])
    assert (tmp_path / "svd_choices.md").read_text() == (RESULTS / "svd_choices.md").read_text()
    with pytest.raises(SystemExit, match="no result JSON"):
        bench("svd_choices").main(["--render-only", str(tmp_path / "nope.json")])


def test_the_lambda_sweep_markdown_is_rendered_from_its_json(bench, tmp_path):
    payload = json.loads((RESULTS / "lambda_sweep.json").read_text())
    analysis = bench("lambda_sweep_analysis")
    # The committed file was written by a --report invocation of 2 s (see its Markdown).
    assert (
        analysis.render(payload | {"invocation_seconds": 2.0})
        == (RESULTS / "lambda_sweep.md").read_text()
    )
    assert "wall time of this invocation not recorded" in analysis.render(payload)
    df = pd.DataFrame(payload["rows"])
    assert analysis.choose_weights(df, payload["grid"]) == payload["chosen"]


# --------------------------------------------------------------------------- seed_spread.py
TINY = [  # a seed spread in seconds: tiny trainings on the embedded data
    *("-p", "dataset=fashion-mnist-mini", "-p", "model=cnn", "-p", "width=4"),
    *("-p", "epochs=1", "-p", "train_subset=512", "-p", "eval_subset=100"),
    *("-p", "methods=prune_magnitude", "-p", "reductions=[0.3,0.5]", "-p", "bn_reestimate=False"),
]


@pytest.mark.slow
def test_seed_spread_end_to_end_resumes_and_feeds_the_headline(bench, tmp_path, monkeypatch):
    from smoothviz.headline import load_seed_spread

    monkeypatch.setenv("SMOOTHVIZ_CACHE", str(tmp_path / "cache"))
    spread = bench("seed_spread")
    out = tmp_path / "results"
    real, calls = spread.measure_seed, []

    def stops_at_seed_1(params, seed, data):
        if seed == 1:
            raise KeyboardInterrupt  # the run is stopped after seed 0 finished
        return real(params, seed, data)

    monkeypatch.setattr(spread, "measure_seed", stops_at_seed_1)
    with pytest.raises(KeyboardInterrupt):
        spread.main(["--seeds", "2", *TINY, "--out", str(out)])
    assert (out / "seed_spread.partial.jsonl").is_file()
    monkeypatch.setattr(spread, "measure_seed", lambda p, s, d: calls.append(s) or real(p, s, d))
    spread.main(["--seeds", "2", *TINY, "--out", str(out)])
    assert calls == [1]  # seed 0 came from the resume store
    assert sorted(p.name for p in out.iterdir()) == [
        "seed_spread.json",
        "seed_spread.md",
        "seed_spread.png",
    ]
    payload = json.loads((out / "seed_spread.json").read_text())
    assert payload["seeds"] == [0, 1]
    assert {r["seed"] for r in payload["rows"]} == {0, 1}
    assert len(payload["differences"]) == 2  # one method at two targets
    for d in payload["differences"]:
        assert set(d["per_seed"]) == {"0", "1"} and d["n_seeds"] == 2
        assert d["ci_source"] == "seeds" and d["verdict"] in ("benefit", "harm", "unclear")
        assert d["difference_mean"] == pytest.approx(np.mean(list(d["per_seed"].values())))
    md = (out / "seed_spread.md").read_text()
    assert "| prune_magnitude | 30 % |" in md and "seed 1" in md
    # the report's one-seed headline finds it for the same configuration, at any seed
    params = spread.make_params("default", spread.parse_parameters(TINY[1::2]))
    found = load_seed_spread(
        params.training_configs(), "fashion-mnist-mini", 100, out / "seed_spread.json"
    )
    assert found is not None and len(found.at("prune_magnitude", 0.3)) == 2
    # --render-only rewrites the Markdown from the JSON, measuring nothing
    (out / "seed_spread.md").unlink()
    spread.main(["--render-only", "--out", str(out)])
    assert (out / "seed_spread.md").read_text() == md


@pytest.mark.slow
def test_seed_spread_search_measures_every_combination(bench, tmp_path, monkeypatch):
    monkeypatch.setenv("SMOOTHVIZ_CACHE", str(tmp_path / "cache"))
    spread = bench("seed_spread")
    out = tmp_path / "results"
    tiny = [a for pair in zip(TINY[::2], TINY[1::2]) if pair[1] != "epochs=1" for a in pair]
    spread.main(["--seeds", "2", *tiny, "--search", "epochs=1,2", "--out", str(out)])
    payload = json.loads((out / "seed_spread_search.json").read_text())
    labels = [c["label"] for c in payload["configurations"]]
    assert labels == ["epochs=1", "epochs=2"]
    assert [c["parameters"]["epochs"] for c in payload["configurations"]] == [1, 2]
    md = (out / "seed_spread_search.md").read_text()
    assert "## epochs=1" in md and "## epochs=2" in md
    with pytest.raises(SystemExit, match="--seeds must be >= 2"):
        spread.main(["--seeds", "1", "--out", str(out)])
    with pytest.raises(SystemExit, match="seeds"):
        spread.main(["--seeds", "2", "-p", "seeds=[0]", "--out", str(out)])


# ----------------------------------------------------------------------- main_job_profile.py
@pytest.mark.slow
def test_main_job_profile_times_each_phase_and_restores_what_it_wrapped(bench, mini_data):
    import torch

    from smoothviz.models import build_model
    from smoothviz.notebook_params import TradeoffParams
    from smoothviz.variant_eval import VariantEvaluator

    profile = bench("main_job_profile")
    torch.manual_seed(0)
    models = {"baseline": build_model("cnn", 1, 10, width=4).eval()}
    params = TradeoffParams(methods=["prune_magnitude"], bn_reestimate=True)
    data = mini_data.subset(n_train=300, n_test=100)
    originals = (VariantEvaluator.evaluate, profile.sweep_module.compress)
    runs = []
    for name, incremental in (("default", True), ("default, no reuse", False)):
        run = profile.one_run(models, params, data, [0.3, 0.5], incremental, profile=True)
        runs.append({"name": name} | run)
    assert (VariantEvaluator.evaluate, profile.sweep_module.compress) == originals
    on, off = runs
    assert set(on["phase_seconds"]) == set(profile.PHASES)
    assert all(v >= 0 for v in on["phase_seconds"].values()) and on["wall_seconds"] > 0
    # the model, then each target plain and BN re-estimated: 1 + 2 x 2 evaluations
    assert on["evaluations"] == {"incremental": 5, "plain": 0}
    assert off["evaluations"] == {"incremental": 0, "plain": 5} and max(off["skipped_share"]) == 0
    assert "sweep" in on["profile_top"]
    extra = [r | {"name": r["name"].replace("default", "extra")} for r in runs]
    payload = {
        "methods": ["prune_magnitude"],
        "default_targets": [0.3, 0.5],
        "extra": 0.4,
        "test_images": 100,
        "forced": True,
        "runs": runs + extra,
        "provenance": {"device": "cpu", "torch": "2", "git_sha": "x", "date": "d", "command": "c"},
    }
    md = profile.markdown(payload)
    assert "One extra target (40%) costs" in md and "upper bounds" in md and "cProfile" in md


# ----------------------------------------------------------------------------------- zoo_accuracy
TINY_ZOO = [
    "--dataset",
    "fashion-mnist-mini",
    "--epochs",
    "1",
    "--vit-width",
    "16",
    "--train-subset",
    "512",  # 4 optimiser steps of 128, the least train() accepts
    "--test-subset",
    "64",
    "--calibration-size",
    "32",
    "--reductions",
    "0.5",
    "--latency-repeats",
    "1",
    "--device",
    "cpu",
]


@pytest.mark.slow
def test_zoo_accuracy_runs_every_method_on_both_architectures_at_a_tiny_size(
    bench, tmp_path, cache_dir
):
    from smoothviz.compress import METHODS

    zoo = bench("zoo_accuracy")
    zoo.main([*TINY_ZOO, "--out", str(tmp_path)])
    payload = json.loads((tmp_path / "zoo_accuracy.json").read_text())
    df = pd.DataFrame(payload["rows"])
    assert set(df.setup) == {"mobilenet_v2", "vit"} and set(df.method) == set(METHODS)
    assert len(df) == 2 * len(METHODS) and payload["test_images"] == 64
    ok = df[df.error.isna()]
    assert len(ok) and ((ok.param_reduction - ok.target_reduction).abs() <= 0.01).all()
    assert df[df.error.notna()].error.str.contains("cannot be reached").all()
    assert payload["configs"]["vit"]["model"] == "vit" and payload["configs"]["vit"]["width"] == 16
    assert not (tmp_path / "zoo_accuracy.partial.jsonl").exists()  # complete: the store is gone
    md = (tmp_path / "zoo_accuracy.md").read_text()
    assert "| vit | svd | 0.50 |" in md and "| mobilenet_v2 | interpolative | 0.50 |" in md
    zoo.main(["--render-only", "--out", str(tmp_path)])
    assert (tmp_path / "zoo_accuracy.md").read_text() == md


def test_zoo_accuracy_resumes_from_its_store_without_training(bench, tmp_path, cache_dir):
    common, zoo = bench("_common"), bench("zoo_accuracy")
    argv = [*TINY_ZOO, "--setups", "vit", "--methods", "prune_magnitude", "--out", str(tmp_path)]
    args = zoo.parse_args(argv)
    sha = common.provenance(script=BENCHMARKS / "zoo_accuracy.py")["git_sha"]
    row = {
        "training": "vit",
        "method": "prune_magnitude",
        "target_reduction": 0.5,
        "param_reduction": 0.5,
        "params": 10,
        "flops": 1e6,
        "latency_ms": 1.0,
        "test_acc": 0.123,
        "test_acc_bn_reestimated": 0.123,
        "test_acc_uncompressed": 0.5,
        "error": None,
        "setup": "vit",
        "model": "vit",
        "git_sha": sha,
    }
    store = common.ResumeStore(tmp_path / "zoo_accuracy.partial.jsonl", key=lambda c: c["key"])
    store.put({"key": zoo.chunk_key("vit", "prune_magnitude", args, sha), "rows": [row]})
    zoo.main(argv)
    out = json.loads((tmp_path / "zoo_accuracy.json").read_text())["rows"]
    assert [r["test_acc"] for r in out] == [0.123]
    assert not cache_dir.exists() or not any(cache_dir.rglob("*.pt"))  # nothing was trained

"""benchmarks/_common.py (result files, the resume store) and each script's --render-only path."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

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

"""benchmarks/lambda_sweep.py at toy scale: serial and on a Dask LocalCluster, resumed from its cache."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("distributed")  # a declared dependency: absent only in a broken install
# Trainings, and a Dask LocalCluster of two worker processes.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
# Seconds per training: an mlp on the embedded subset, one regulariser at one weight.
TOY_MODEL = {"dataset": "fashion-mnist-mini", "model": "mlp", "width": 256, "epochs": 1}
TOY_ARGS = ["--regularisers", "first_order", "--methods", "svd", "prune_channels"]
TOY_ARGS += ["--reductions", "0.5", "0.7"]


@pytest.fixture
def lambda_sweep(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # its sibling modules (_common, ...)
    spec = importlib.util.spec_from_file_location(
        "lambda_sweep", ROOT / "benchmarks/lambda_sweep.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "BENCHMARK_MODEL", TOY_MODEL)
    monkeypatch.setattr(module, "GRID", {**module.GRID, "first_order": (2e-2,)})
    # The serial run and each worker use one torch thread: the same float sums, the same models.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return module


def _run(module, monkeypatch, cache: Path, out: Path, *extra: str) -> dict:
    monkeypatch.setenv("SMOOTHVIZ_CACHE", str(cache))
    module.main([*TOY_ARGS, "--out", str(out), *extra])
    return json.loads((out / "lambda_sweep.json").read_text())


def test_a_cluster_sweep_gives_the_serial_rows_and_says_where_they_were_measured(
    lambda_sweep, monkeypatch, tmp_path
):
    import torch

    torch.set_num_threads(1)
    serial = _run(lambda_sweep, monkeypatch, tmp_path / "c1", tmp_path / "serial")
    dask = _run(lambda_sweep, monkeypatch, tmp_path / "c2", tmp_path / "dask", "--workers", "2")
    cols = ["regulariser", "weight", "method", "target_reduction", "test_acc"]
    a, b = pd.DataFrame(serial["rows"])[cols], pd.DataFrame(dask["rows"])[cols]
    assert len(a) == 8 and a.test_acc.notna().all()  # 2 trainings x 2 methods x 2 targets
    pd.testing.assert_frame_equal(a, b)
    assert dask["complete"] and set(dask["chosen"]) == {"first_order"}
    where = dask["measured_where"]
    assert len(where["trainings"]) == 1 and where["trainings"][0].startswith("CPU: ")
    assert len(where["compression"]) == 1 and where["compression"][0].startswith("CPU: ")
    md = (tmp_path / "dask" / "lambda_sweep.md").read_text()
    assert "- Trained on: CPU: " in md and "- Compression code: git " in md
    assert (tmp_path / "dask" / "lambda_sweep.png").stat().st_size > 0

    # --report rewrites the results from the cached rows without training or compressing again
    ckpts = sorted((tmp_path / "c2" / "checkpoints").glob("*.pt"))
    stamps = [p.stat().st_mtime_ns for p in ckpts]
    again = _run(lambda_sweep, monkeypatch, tmp_path / "c2", tmp_path / "again", "--report")
    assert again["rows"] == dask["rows"]
    assert [p.stat().st_mtime_ns for p in ckpts] == stamps


def test_train_only_fills_the_checkpoint_cache_and_writes_no_results(
    lambda_sweep, monkeypatch, tmp_path
):
    monkeypatch.setenv("SMOOTHVIZ_CACHE", str(tmp_path / "cache"))
    lambda_sweep.main([*TOY_ARGS, "--out", str(tmp_path / "out"), "--train-only"])
    sidecars = list((tmp_path / "cache" / "checkpoints").glob("*.json"))
    assert len(sidecars) == 2  # the baseline and first_order 0.02
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "cache" / "lambda_sweep").exists()

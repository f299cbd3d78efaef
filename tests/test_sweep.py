"""The sweep: one tidy row per (training, method, target), SVDs computed once per model."""

from __future__ import annotations

import pytest
import torch

import smoothviz.sweep as sweep_module
from smoothviz.models import build_model
from smoothviz.sweep import COLUMNS, sweep


@pytest.fixture()
def models():
    torch.manual_seed(0)
    return {
        "a": build_model("cnn", 1, 10, width=4).eval(),
        "b": build_model("cnn", 1, 10, width=4).eval(),
    }


def test_sweep_table(models, mini_data, monkeypatch):
    calls = []
    original = sweep_module.svd_factors
    monkeypatch.setattr(
        sweep_module, "svd_factors", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    data = mini_data.subset(n_train=300, n_test=100)
    df = sweep(
        models,
        ["svd", "prune_magnitude", "prune_channels", "interpolative"],
        [0.5, 0.995],
        data,
        calibration_size=64,
        bn_images=64,
        latency_repeats=2,
        latency_batch=4,
        progress=False,
    )
    assert list(df.columns) == COLUMNS
    assert len(df) == 2 * 4 * 2
    assert len(calls) == 2  # one SVD pass per model, reused for every target
    ok = df[df.error.isna()]
    assert (abs(ok.param_reduction - ok.target_reduction) <= 0.01).all()
    assert ok.test_acc.between(0, 1).all() and ok.test_acc_bn_reestimated.between(0, 1).all()
    assert (ok.flops > 0).all() and (ok.latency_ms > 0).all()
    bad = df[df.target_reduction == 0.995]
    assert bad.error.str.contains("cannot be reached").all() and bad.test_acc.isna().all()
    for m in models.values():  # inputs untouched
        assert all(isinstance(p, torch.nn.Parameter) for p in m.parameters())


def test_sweep_bad_arguments(models, mini_data):
    with pytest.raises(ValueError, match="methods"):
        sweep(models, ["svd", "magic"], [0.5], mini_data, progress=False)
    with pytest.raises(ValueError, match=r"reductions must be in \[0, 1\)"):
        sweep(models, ["svd"], [1.2], mini_data, progress=False)
    with pytest.raises(ValueError, match="calibration_size"):
        sweep(models, ["svd"], [0.5], mini_data, calibration_size=0, progress=False)

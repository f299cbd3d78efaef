"""Per-target reuse in the compression calls: the original model's layer inputs recorded once.

A further target with a warm per-model cache must give the very model a cold cache gives (bit for
bit), and must not run the original model again (what makes it cheaper than the first).
"""

from __future__ import annotations

import pytest
import torch

from smoothviz.compress.layer_inputs import (
    REFERENCE_ENV,
    ReferenceInputs,
    paired_layer_inputs,
    reference_inputs,
)
from smoothviz.models import build_model
from smoothviz.sweep import compress

METHODS = ("svd_data_aware", "interpolative", "hybrid")


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("resnet18", 1, 10, width=4).eval()


@pytest.fixture(scope="module")
def calib():
    return torch.randn(24, 1, 28, 28, generator=torch.Generator().manual_seed(2))


class _Forwards:
    """Counts the forward passes of one module object (not of its deep copies)."""

    def __init__(self, module):
        self.module, self.count = module, 0
        self.handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        if module is self.module:
            self.count += 1


@pytest.mark.parametrize("method", METHODS)
def test_a_further_target_is_bit_identical_and_runs_only_the_compressed_model(model, calib, method):
    cache: dict = {}
    compress(model, method, 0.5, calibration=calib, cache=cache)
    forwards = _Forwards(model)
    try:
        warm = compress(model, method, 0.7, calibration=calib, cache=cache)
        warm_forwards = forwards.count
    finally:
        forwards.handle.remove()
    cold = compress(model, method, 0.7, calibration=calib, cache={})
    assert _same(warm, cold)
    assert warm_forwards == 0  # the original's side came from the recorded inputs


def test_the_fallback_without_recorded_inputs_gives_the_same_model(model, calib, monkeypatch):
    with_reference = compress(model, "svd_data_aware", 0.6, calibration=calib, cache={})
    monkeypatch.setenv(REFERENCE_ENV, "0")  # recording off: the original runs per layer
    without = compress(model, "svd_data_aware", 0.6, calibration=calib, cache={})
    assert _same(with_reference, without)


def test_recorded_inputs_are_what_a_forward_pass_gives_and_respect_the_budget(model, calib):
    ref = ReferenceInputs.record(model, calib, 10)
    assert ref is not None and ref.images == 24 and "layer2.0.conv1" in ref
    current = build_model("resnet18", 1, 10, width=4).eval()
    live = list(paired_layer_inputs(model, current, "layer2.0.conv1", calib, 10))
    replayed = list(paired_layer_inputs(model, current, "layer2.0.conv1", calib, 10, ref))
    assert len(live) == len(replayed) == 3
    for (x, x_hat, b), (y, y_hat, c) in zip(live, replayed, strict=True):
        assert torch.equal(x, y) and torch.equal(x_hat, y_hat) and b == c
    assert ReferenceInputs.record(model, calib, 10, max_bytes=ref.nbytes // 2) is None
    store: dict = {}
    assert reference_inputs(store, model, calib, 10) is reference_inputs(store, model, calib, 10)


def test_the_budget_variable_is_checked(model, calib, monkeypatch):
    monkeypatch.setenv(REFERENCE_ENV, "lots")
    with pytest.raises(ValueError, match=REFERENCE_ENV):
        ReferenceInputs.record(model, calib, 10)


def test_one_recording_serves_every_method_of_a_sweep(model, calib):
    cache: dict = {}
    for method in METHODS:
        compress(model, method, 0.5, calibration=calib, cache=cache)
    recordings = {
        id(v)
        for f in cache.values()
        for k, v in getattr(f, "cache", {}).items()
        if isinstance(k, tuple) and k[0] == "reference_inputs"
    }
    assert len(recordings) == 1

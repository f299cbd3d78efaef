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
    # The original's layer inputs came from the recording; what is left is at most the one-batch
    # probe that finds which layers a forward pass calls (forward_check.probe_model).
    assert warm_forwards <= 1


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


def _forward_inputs(model, names, x, batch_size):
    """What each named layer receives on a plain forward pass, per batch (first call)."""
    seen: dict = {n: [] for n in names}

    def hook(name):
        def record(module, args):
            if len(seen[name]) < batch_index[0] + 1:
                seen[name].append(args[0].detach().clone())

        return record

    batch_index = [0]
    handles = [model.get_submodule(n).register_forward_pre_hook(hook(n)) for n in names]
    with torch.no_grad():
        for i, start in enumerate(range(0, len(x), batch_size)):
            batch_index[0] = i
            model(x[start : start + batch_size])
    for h in handles:
        h.remove()
    return seen


def test_the_stream_gives_what_a_forward_pass_gives_and_uses_replaced_layers(model, calib):
    import copy

    from smoothviz.compress.layer_stream import LayerStream

    new = copy.deepcopy(model)
    stream = LayerStream(new, calib, 10)
    names = ["layer1.0.conv2", "layer2.0.shortcut.0", "layer3.1.conv1", "fc"]
    expected = _forward_inputs(new, names[:2], calib, 10)
    for name in names[:2]:
        got = [x for x, _ in stream.inputs(name)]
        assert all(torch.equal(a, b) for a, b in zip(got, expected[name], strict=True))
    replaced = copy.deepcopy(new.get_submodule("layer2.0.shortcut.0"))
    with torch.no_grad():
        replaced.weight.mul_(0.5)
    stream.replace("layer2.0.shortcut.0", replaced)
    assert new.get_submodule("layer2.0.shortcut.0") is replaced
    expected = _forward_inputs(new, names[2:], calib, 10)  # the forward of the changed model
    for name in names[2:]:
        got = [x for x, _ in stream.inputs(name)]
        assert all(torch.equal(a, b) for a, b in zip(got, expected[name], strict=True))
    with pytest.raises(ValueError, match="forward order"):
        stream.inputs("layer1.0.conv1")


def test_a_model_fx_cannot_trace_is_refitted_layer_by_layer(calib):
    from torch import nn

    from smoothviz.compress import data_aware_svd_compress

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(784, 64), nn.Linear(64, 64)
            self.c = nn.Linear(64, 10)

        def forward(self, x):
            x = torch.relu(self.a(x.flatten(1)))
            if x.sum() > 0:  # data-dependent: torch.fx cannot trace this
                x = torch.relu(self.b(x))
            return self.c(x)

    torch.manual_seed(0)
    net = Branchy().eval()
    small = data_aware_svd_compress(net, calib, ranks={"a": 8, "b": 4}, layers=None)
    assert small.compression_info["ranks"] == {"a": 8, "b": 4}

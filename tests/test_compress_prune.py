"""Magnitude and structured channel pruning: identity at 0 %, closed-form counts, budget, errors.

Bias compensation and residual groups have their own file, ``test_compress_channels.py``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from smoothviz.compress import (
    BudgetError,
    drop_channels,
    find_groups,
    prune_channels,
    prune_magnitude,
)
from smoothviz.layers import select_layers
from smoothviz.measure import count_params
from smoothviz.models import build_model


@pytest.fixture()
def cnn():
    torch.manual_seed(0)
    return build_model("cnn", 1, 10, width=8).eval()


def _x(model_name="cnn"):
    g = torch.Generator().manual_seed(1)
    return (
        torch.randn(2, 3, 32, 32, generator=g)
        if model_name != "cnn"
        else torch.randn(2, 1, 28, 28, generator=g)
    )


def test_zero_pruning_is_identity_tiny(cnn):
    x = _x()
    for new in (
        prune_magnitude(cnn, amount=0.0),
        prune_magnitude(cnn, param_reduction=0.0),
        prune_channels(cnn, amount=0.0),
        prune_channels(cnn, param_reduction=0.0),
    ):
        assert new is not cnn
        torch.testing.assert_close(new(x), cnn(x))
        assert count_params(new) == count_params(cnn)


@pytest.mark.parametrize("arch", ["resnet18", "vgg11_bn", "mobilenet_v2"])
def test_zero_channel_pruning_is_identity_torchvision(zoo, arch):
    model, x = zoo[arch], _x(arch)
    new = prune_channels(model, amount=0.0)
    torch.testing.assert_close(new(x), model(x))
    assert count_params(new) == count_params(model)


def test_magnitude_counts_nonzeros_and_leaves_input(cnn):
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    chosen = select_layers(cnn)
    n_sel = sum(m.weight.numel() for _, m in chosen)
    new = prune_magnitude(cnn, amount=0.5)
    assert count_params(new) == count_params(cnn) - round(0.5 * n_sel)
    assert all(torch.equal(before[k], v) for k, v in cnn.state_dict().items())
    # global scope: every zeroed weight is no larger than every kept one
    kept = torch.cat([new.get_submodule(n).weight.detach().flatten() for n, _ in chosen])
    orig = torch.cat([m.weight.detach().flatten() for _, m in chosen])
    assert orig[kept == 0].abs().max() <= orig[kept != 0].abs().min()


def test_magnitude_layer_scope_prunes_each_layer_equally(cnn):
    new = prune_magnitude(cnn, amount=0.3, scope="layer")
    for _, m in select_layers(new):
        assert (m.weight == 0).sum().item() == round(0.3 * m.weight.numel())


@pytest.mark.parametrize("target", [0.3, 0.7, 0.9])
def test_magnitude_budget(cnn, target):
    new = prune_magnitude(cnn, param_reduction=target)
    assert abs(1 - count_params(new) / count_params(cnn) - target) <= 0.01


def test_channel_count_matches_closed_form(cnn):
    # cnn width 8: convs 1->8 (stem), 8->16, 16->16, 16->32, 32->32, Linear 32->10.
    new = prune_channels(cnn, amount=0.5)
    w = [4, 8, 8, 16, 16]  # kept outputs: every layer (the stem too) keeps half
    expected = (
        (1 * w[0] * 9 + 2 * w[0])
        + sum(w[i - 1] * w[i] * 9 + 2 * w[i] for i in range(1, 5))
        + 16 * 10
        + 10
    )
    assert count_params(new) == expected
    assert new(_x()).shape == (2, 10)


@pytest.mark.parametrize("target", [0.3, 0.5, 0.7, 0.9])
def test_channel_budget_met(cnn, target):
    new = prune_channels(cnn, param_reduction=target)
    assert abs(1 - count_params(new) / count_params(cnn) - target) <= 0.01
    assert new(_x()).shape == (2, 10)


def test_residual_tied_channels_left_alone_without_residual_groups(zoo):
    model = zoo["resnet18"]
    groups = find_groups(model, residual=False).groups
    assert {g.name for g in groups} == {f"layer{s}.{b}.conv1" for s in range(1, 5) for b in (0, 1)}
    new = prune_channels(model, amount=0.5, residual=False)
    for name, m in model.named_modules():
        if name.endswith(("conv2", "downsample.0")) or name in ("conv1", "fc"):
            assert new.get_submodule(name).weight.shape[0] == m.weight.shape[0], name
        if name.endswith("conv1") and name != "conv1":
            assert new.get_submodule(name).out_channels == m.out_channels // 2
    assert new(_x("resnet18")).shape == (2, 10)


def test_residual_streams_are_cut_together_by_default(zoo):
    model = zoo["resnet18"]
    new = prune_channels(model, amount=0.5)
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and name != "conv1":
            assert new.get_submodule(name).in_channels == m.in_channels // 2, name
        if isinstance(m, nn.Conv2d):
            assert new.get_submodule(name).out_channels == m.out_channels // 2, name
    assert new.fc.in_features == 256 and new.fc.out_features == 10
    assert new(_x("resnet18")).shape == (2, 10)


def test_mobilenet_depthwise_and_vgg_flatten_chains(zoo):
    mob = prune_channels(zoo["mobilenet_v2"], amount=0.25)
    dw = mob.get_submodule("features.2.conv.1.0")
    assert dw.groups == dw.in_channels == dw.out_channels == 72  # 96 - 24
    assert mob(_x("mobilenet_v2")).shape == (2, 10)
    groups = {g.name: g for g in find_groups(zoo["vgg11_bn"]).groups}
    assert groups["features.25"].readers[0].features_per_channel == 49  # flatten of a 7x7 map
    assert [r.name for r in groups["classifier.0"].readers] == ["classifier.3"]


@pytest.mark.slow
def test_vgg_channel_budget(zoo):
    model = zoo["vgg11_bn"]
    new = prune_channels(model, param_reduction=0.5)
    assert abs(1 - count_params(new) / count_params(model) - 0.5) <= 0.01
    assert new(_x("vgg11_bn")).shape == (2, 10)


def test_drop_all_kept_is_identity(cnn):
    keep = {g.name: list(range(g.channels)) for g in find_groups(cnn).groups}
    x = _x()
    torch.testing.assert_close(drop_channels(cnn, keep)(x), cnn(x))


def test_unreachable_channel_budget(cnn):
    with pytest.raises(BudgetError, match="most that can be removed"):
        prune_channels(cnn, param_reduction=0.5, layers=["3"])


@pytest.mark.parametrize(
    "fn, kwargs, error, pattern",
    [
        (prune_magnitude, {"amount": 1.0}, ValueError, r"amount must be in \[0, 1\)"),
        (prune_magnitude, {"amount": 0.1, "param_reduction": 0.1}, TypeError, "exactly one"),
        (prune_magnitude, {}, TypeError, "exactly one of amount, param_reduction"),
        (prune_magnitude, {"amount": 0.1, "scope": "net"}, ValueError, "scope must be one of"),
        (prune_magnitude, {"amount": 0.1, "layers": ["zzz"]}, ValueError, "zzz"),
        (prune_channels, {"param_reduction": 1.5}, ValueError, "param_reduction must be in"),
        (prune_channels, {"amount": -0.2}, ValueError, r"amount must be in \[0, 1\)"),
        (prune_channels, {"param_reduction": 0.3, "layers": ["nope"]}, ValueError, "nope"),
        (drop_channels, {"keep": {"7": [0, 99]}}, ValueError, r"keep\['7'\] must be distinct"),
        (drop_channels, {"keep": {"19": [0]}}, ValueError, "keep: \\['19'\\] are not prunable"),
        (drop_channels, {"keep": {"7": [0.5]}}, ValueError, r"keep\['7'\] must be distinct"),
        (drop_channels, {"keep": [0, 1]}, TypeError, "keep must be a dict"),
    ],
)
def test_bad_arguments_are_named(cnn, fn, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        fn(cnn, **kwargs)


def test_untraceable_model_gives_clear_error():
    class Dynamic(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)

        def forward(self, x):
            h = self.b(self.a(x))
            return self.c(h if h.sum() > 0 else -h)

    with pytest.raises(TypeError, match="torch.fx"):
        prune_channels(Dynamic(), amount=0.5)

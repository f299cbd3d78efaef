"""Default layer selection per method (issue 15): an MLP halves with default arguments, stems stay."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from smoothviz.compress import (
    BudgetError,
    data_aware_svd_compress,
    interpolative_compress,
    prune_channels,
    svd_compress,
    svd_factors,
)
from smoothviz.layers import default_layers, left_out, select_layers
from smoothviz.measure import count_params
from smoothviz.models import build_model


def _mlp() -> nn.Sequential:
    """The issue's 784-512-512-10 ReLU MLP (untrained: no accuracy is asserted here)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
        nn.Linear(512, 10),
    ).eval()  # fmt: skip


def _reduction(new: nn.Module, old: nn.Module) -> float:
    return 1 - count_params(new) / count_params(old)


@pytest.fixture(scope="module")
def calib():
    return torch.randn(128, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def test_mlp_reaches_half_with_svd_and_default_arguments():
    model = _mlp()
    new = svd_compress(model, param_reduction=0.5)
    assert abs(_reduction(new, model) - 0.5) <= 0.01
    assert "1" in new.compression_info["ranks"]  # the first layer (784 -> 512) is factorised


def test_mlp_reaches_half_with_prune_channels_and_default_arguments(calib):
    model = _mlp()
    for new in (prune_channels(model, param_reduction=0.5),
                prune_channels(model, calib, param_reduction=0.5)):  # fmt: skip
        assert abs(_reduction(new, model) - 0.5) <= 0.01
        assert len(new.compression_info["kept"]["1"]) < 512  # fc1's neurons were pruned
        assert new(calib[:2]).shape == (2, 10)


def test_mlp_reaches_half_with_interpolative_and_default_arguments(calib):
    model = _mlp()
    new = interpolative_compress(model, calib, param_reduction=0.5)
    assert abs(_reduction(new, model) - 0.5) <= 0.01
    assert new(calib[:2]).shape == (2, 10)
    half = interpolative_compress(model, calib, channels={"1": 256})  # refused before issue 15
    assert half[1].out_features == 256 and half[3].in_features == 256


@pytest.mark.parametrize("in_channels", [1, 3])
def test_cifar_resnet_stem_is_still_left_out_by_svd(in_channels):
    model = build_model("resnet18", in_channels, 10, width=16)
    names = [n for n, _ in select_layers(model, method="svd")]
    assert "conv1" not in names and "fc" not in names and "layer1.0.conv1" in names
    assert "conv1" not in svd_factors(model)
    assert "conv1" in [n for n, _ in select_layers(model, method="channels")]
    assert "left out by default: break-even rank" in left_out(model, names, "svd")["conv1"]


def test_defaults_per_method_on_the_mlp():
    model = _mlp()
    every = ["1", "3", "5"]
    assert [n for n, _ in default_layers(model, "regularizers")] == ["3"]  # unchanged default
    assert [n for n, _ in default_layers(model, "svd")] == ["1", "3"]
    assert [n for n, _ in default_layers(model, "channels")] == every
    assert [n for n, _ in select_layers(model)] == ["3"]  # training's default is unchanged


@pytest.mark.parametrize("method", ["svd", "svd_data_aware"])
def test_svd_budget_error_names_the_left_out_layers_and_the_layers_value(method):
    torch.manual_seed(0)
    model = build_model("cnn", 1, 10, width=8).eval()
    compress = {
        "svd": lambda: svd_compress(model, param_reduction=0.99),
        "svd_data_aware": lambda: data_aware_svd_compress(
            model, torch.randn(8, 1, 28, 28), param_reduction=0.99
        ),
    }[method]
    with pytest.raises(BudgetError) as info:
        compress()
    text = str(info.value)
    assert "0 (first layer, left out by default: break-even rank" in text
    assert "19 (the classifier, left out by default)" in text
    assert "pass layers='all' to include them" in text


def test_unknown_default_method_is_named():
    with pytest.raises(ValueError, match=r"method must be one of \['regularizers', 'svd', 'chann"):
        select_layers(_mlp(), method="prune")

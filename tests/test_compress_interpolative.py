"""Interpolative decomposition: exact when keeping every channel (one-shot and sequential), budget,
folding, residual groups, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from smoothviz.compress import (
    BudgetError,
    drop_channels,
    find_groups,
    interpolative_compress,
    interpolative_factors,
)
from smoothviz.measure import count_params, evaluate
from smoothviz.models import build_model


def _keep_all(model, factors, variant="one_shot"):
    return interpolative_compress(
        model,
        channels={p: q.group.channels for p, q in factors.items()},
        factors=factors,
        variant=variant,
    )


@pytest.mark.parametrize("variant", ["one_shot", "sequential", "corrected"])
@pytest.mark.parametrize("compensate", [True, False])
# resnet18 (the residual streams as groups) runs in the full suite; cnn and mlp in the inner loop.
@pytest.mark.parametrize("name", ["cnn", pytest.param("resnet18", marks=pytest.mark.slow), "mlp"])
def test_keeping_every_channel_reproduces_project_models(name, variant, compensate):
    torch.manual_seed(0)
    model = build_model(name, 1, 10, width=8 if name != "mlp" else 32).eval()
    x = torch.randn(4, 1, 28, 28)
    factors = interpolative_factors(model, torch.randn(16, 1, 28, 28), compensate=compensate)
    assert len(factors) > 0
    if name == "resnet18":  # the residual streams are groups too
        assert any(q.group.residual for q in factors.values())
    full = _keep_all(model, factors, variant)
    assert full.compression_info["variant"] == variant
    torch.testing.assert_close(full(x), model(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "arch",
    [
        pytest.param("resnet18", marks=pytest.mark.slow),
        pytest.param("vgg11_bn", marks=pytest.mark.slow),
        "mobilenet_v2",
    ],
)
def test_keeping_every_channel_reproduces_torchvision(zoo, arch):
    model = zoo[arch]
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    layers = None if arch != "vgg11_bn" else ["features.4", "features.8", "features.25"]
    factors = interpolative_factors(model, torch.randn(8, 3, 32, 32), layers=layers)
    full = _keep_all(model, factors)
    ref = model(x)
    torch.testing.assert_close(full(x), ref, atol=1e-4 * ref.abs().max().item(), rtol=1e-3)


def test_linear_chain_with_redundant_neurons_is_exact_at_its_rank():
    # Hidden neurons 8..15 duplicate 0..7 scaled by 2, so after the ReLU the activations have
    # rank 8: the ID with 8 kept neurons must reproduce the network exactly.
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)
    ).eval()
    with torch.no_grad():
        model[2].weight[8:] = 2 * model[2].weight[:8]
        model[2].bias[8:] = 2 * model[2].bias[:8]
    calib, x = torch.randn(200, 5), torch.randn(50, 5)
    new = interpolative_compress(model, calib, channels={"2": 8})
    assert new[2].out_features == 8 and new[4].in_features == 8
    torch.testing.assert_close(new(x), model(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("target", [0.3, 0.5, 0.7, 0.9])
def test_budget_met(target):
    torch.manual_seed(0)
    model = build_model("cnn", 1, 10, width=8).eval()
    factors = interpolative_factors(model, torch.randn(16, 1, 28, 28))
    new = interpolative_compress(model, param_reduction=target, factors=factors)
    assert abs(1 - count_params(new) / count_params(model) - target) <= 0.01


def test_rtol_and_input_untouched():
    torch.manual_seed(0)
    model = build_model("cnn", 1, 10, width=8).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calib = torch.randn(16, 1, 28, 28)
    loose = interpolative_compress(model, calib, rtol=0.5)
    tight = interpolative_compress(model, calib, rtol=0.0)
    assert count_params(loose) < count_params(tight)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    "calibration, kwargs, error, pattern",
    [
        (
            torch.randn(4, 3, 28, 28),
            {"param_reduction": 0.3},
            ValueError,
            r"calibration must have shape \(N, 1, H, W\)",
        ),
        (torch.randn(4, 28, 28), {"param_reduction": 0.3}, ValueError, "calibration must have"),
        ([1, 2, 3], {"param_reduction": 0.3}, TypeError, "calibration must be a tensor"),
        (
            torch.randn(4, 1, 28, 28),
            {"param_reduction": 1.0},
            ValueError,
            r"param_reduction must be in \[0, 1\)",
        ),
        (
            torch.randn(4, 1, 28, 28),
            {},
            TypeError,
            "exactly one of param_reduction, rtol, channels",
        ),
        (
            torch.randn(4, 1, 28, 28),
            {"channels": {"7": 99}},
            ValueError,
            r"channels\['7'\] must be an int in \[1, 16\]",
        ),
        (torch.randn(4, 1, 28, 28), {"channels": {"x": 1}}, ValueError, "channels: \\['x'\\]"),
        (
            torch.randn(4, 1, 28, 28),
            {"param_reduction": 0.5, "layers": ["3"]},
            BudgetError,
            "most that can be removed",
        ),
        (None, {"param_reduction": 0.3}, TypeError, "calibration is required"),
    ],
)
def test_bad_arguments_are_named(calibration, kwargs, error, pattern):
    model = build_model("cnn", 1, 10, width=8).eval()
    with pytest.raises(error, match=pattern):
        interpolative_compress(model, calibration, **kwargs)


@pytest.mark.slow
def test_id_beats_plain_channel_dropping_on_trained_model(trained_cnn, mini_data):
    calib = mini_data.x_train[:256]
    for target in (0.5, 0.7):
        idc = interpolative_compress(trained_cnn, calib, param_reduction=target)
        dropped = drop_channels(trained_cnn, idc.compression_info["kept"])
        assert count_params(idc) == count_params(dropped)
        acc_id = evaluate(idc, mini_data)["accuracy"]
        acc_drop = evaluate(dropped, mini_data)["accuracy"]
        assert acc_id > acc_drop + 0.02, (target, acc_id, acc_drop)
    assert len(find_groups(trained_cnn).groups) == 5  # the stem is a producer too


@pytest.mark.slow
def test_corrected_sequential_id_beats_one_shot_on_trained_model(trained_cnn, mini_data):
    calib = mini_data.x_train[:256]
    factors = interpolative_factors(trained_cnn, calib)
    acc = {
        v: evaluate(
            interpolative_compress(trained_cnn, param_reduction=0.7, factors=factors, variant=v),
            mini_data,
        )["accuracy"]
        for v in ("one_shot", "corrected")
    }
    assert acc["corrected"] > acc["one_shot"], acc

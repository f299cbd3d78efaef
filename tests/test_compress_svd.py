"""Truncated-SVD compression: invariants on tiny models and torchvision architectures."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from smoothviz.compress import (
    BudgetError,
    Factorized,
    compress_from_factors,
    factorize_layer,
    svd_compress,
    svd_factors,
)
from smoothviz.layers import matrix_view, select_layers
from smoothviz.measure import count_params
from smoothviz.models import build_model


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture()
def cnn():
    torch.manual_seed(0)
    return build_model("cnn", 1, 10, width=8).eval()


@pytest.mark.parametrize(
    "layer",
    [
        nn.Conv2d(6, 10, 3, stride=2, padding=1, dilation=1, bias=True),
        nn.Conv2d(4, 7, (3, 5), padding=(2, 1), dilation=2, bias=False),
        nn.Linear(12, 9),
    ],
)
def test_full_rank_factorisation_reproduces_layer(layer):
    torch.manual_seed(0)
    x = torch.randn(
        2,
        6
        if isinstance(layer, nn.Conv2d) and layer.in_channels == 6
        else (4 if isinstance(layer, nn.Conv2d) else 12),
        *((9, 9) if isinstance(layer, nn.Conv2d) else ()),
    )
    full = factorize_layer(layer, min(matrix_view(layer.weight).shape))
    assert isinstance(full, Factorized)
    torch.testing.assert_close(full(x), layer(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["resnet18", "vgg11_bn", "mobilenet_v2"])
def test_full_rank_reproduces_torchvision_outputs(zoo, arch):
    model = zoo[arch]
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    # Full-rank factorisation of the first dense convs (the big SVDs take minutes on 2 cores).
    layers = [n for n, m in select_layers(model) if isinstance(m, nn.Conv2d) and m.groups == 1][
        : 2 if arch == "vgg11_bn" else 4
    ]
    new = svd_compress(model, ranks={n: 1 for n in layers})  # cheap way to get a copy + names
    for name in layers:
        m = model.get_submodule(name)
        parent, _, child = name.rpartition(".")
        setattr(
            new.get_submodule(parent), child, factorize_layer(m, min(matrix_view(m.weight).shape))
        )
    ref = model(x)
    torch.testing.assert_close(new(x), ref, atol=1e-4 * ref.abs().max().item(), rtol=1e-4)


def test_energy_one_is_identity_and_input_untouched(cnn):
    before = _state(cnn)
    x = torch.randn(2, 1, 28, 28)
    new = svd_compress(cnn, energy=1.0)
    assert new is not cnn
    torch.testing.assert_close(new(x), cnn(x))
    assert _same_state(before, _state(cnn))


def test_param_count_matches_closed_form(cnn):
    chosen = select_layers(cnn)
    ranks = {n: 3 for n, _ in chosen}
    new = svd_compress(cnn, ranks=ranks)
    expected = count_params(cnn)
    for _, m in chosen:
        mat = matrix_view(m.weight)
        rows, cols = mat.shape
        expected += 3 * (rows + cols) - rows * cols
    assert count_params(new) == expected
    for n, _ in chosen:
        assert isinstance(new.get_submodule(n), Factorized)
        assert new.get_submodule(n).rank == 3


def test_rank_above_break_even_stays_dense(cnn):
    name, m = select_layers(cnn)[0]  # 8 -> 16, matrix 16 x 72: break-even rank 13
    new = svd_compress(cnn, ranks={name: 14})
    assert isinstance(new.get_submodule(name), nn.Conv2d)
    assert new.compression_info["ranks"][name] is None
    assert count_params(new) == count_params(cnn)


def test_eckart_young_relative_error(cnn):
    factors = svd_factors(cnn)
    ranks = {n: max(1, f.break_even_rank // 2) for n, f in factors.items()}
    new = compress_from_factors(cnn, factors, ranks)
    for name, r in ranks.items():
        w = matrix_view(cnn.get_submodule(name).weight.detach()).double()
        pair = new.get_submodule(name)
        approx = (
            matrix_view(pair[1].weight.detach()).double()
            @ matrix_view(pair[0].weight.detach()).double()
        )
        s = torch.linalg.svdvals(w)
        expected = (s[r:].pow(2).sum() / s.pow(2).sum()).sqrt()
        actual = torch.linalg.norm(w - approx) / torch.linalg.norm(w)
        assert actual.item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)


def test_cached_factors_match_direct(cnn):
    factors = svd_factors(cnn)
    x = torch.randn(2, 1, 28, 28)
    a = svd_compress(cnn, param_reduction=0.5, factors=factors)
    b = svd_compress(cnn, param_reduction=0.5)
    assert a.compression_info == b.compression_info
    torch.testing.assert_close(a(x), b(x))


@pytest.fixture(scope="module")
def resnet_and_factors():
    torch.manual_seed(0)
    model = build_model("resnet18", 1, 10, width=8)
    return model, svd_factors(model)


@pytest.mark.parametrize("target", [0.0, 0.3, 0.7, 0.85])
def test_budget_met_on_project_resnet(resnet_and_factors, target):
    model, factors = resnet_and_factors
    new = svd_compress(model, param_reduction=target, factors=factors)
    achieved = 1 - count_params(new) / count_params(model)
    assert abs(achieved - target) <= 0.01


@pytest.mark.slow
@pytest.mark.parametrize(
    "arch, layers, target",
    [
        ("mobilenet_v2", None, 0.4),
        # resnet18: only the first two stages (the 512x4608 SVDs cost minutes on a 2-core CPU).
        (
            "resnet18",
            [f"layer{s}.{b}.conv{c}" for s in (1, 2) for b in (0, 1) for c in (1, 2)],
            0.03,
        ),
    ],
)
def test_budget_met_on_torchvision(zoo, arch, layers, target):
    model = zoo[arch]
    new = svd_compress(model, param_reduction=target, layers=layers)
    assert abs(1 - count_params(new) / count_params(model) - target) <= 0.01
    assert new(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_unreachable_budget_says_why(cnn):
    with pytest.raises(BudgetError, match="param_reduction.*most that can be removed"):
        svd_compress(cnn, param_reduction=0.99)


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        ({"param_reduction": 1.0}, ValueError, r"param_reduction must be in \[0, 1\)"),
        ({"param_reduction": -0.1}, ValueError, r"param_reduction must be in \[0, 1\)"),
        ({"param_reduction": "half"}, TypeError, "param_reduction must be a number"),
        ({"energy": 0.0}, ValueError, r"energy must be a number in \(0, 1\]"),
        ({}, TypeError, "exactly one of param_reduction, energy, ranks"),
        ({"energy": 0.9, "ranks": 2}, TypeError, "exactly one of"),
        ({"ranks": {"3": 10_000}}, ValueError, r"ranks\['3'\] must be an int in \[1, 16\]"),
        ({"ranks": {"3": 0}}, ValueError, r"ranks\['3'\]"),
        ({"ranks": {"nope": 2}}, ValueError, "layers: \\['nope'\\].*allowed names"),
        ({"ranks": [1, 2]}, TypeError, "ranks must be a dict"),
        ({"energy": 0.9, "layers": ["3", "bogus"]}, ValueError, "bogus"),
    ],
)
def test_bad_arguments_are_named(cnn, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        svd_compress(cnn, **kwargs)


def test_grouped_conv_named_explicitly_is_rejected(zoo):
    with pytest.raises(ValueError, match="grouped/depthwise"):
        svd_compress(zoo["mobilenet_v2"], energy=0.9, layers=["features.1.conv.0.0"])

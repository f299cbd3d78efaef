"""The floor under both SVDs: one factorisation rule, one request check, one conv geometry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import smoothviz.compress.budget as budget
import smoothviz.compress.channel_request as channel_request
import smoothviz.compress.factorized as factorized
import smoothviz.compress.rank_allocation as rank_allocation
from smoothviz import analysis
from smoothviz.compress import (
    compress_from_factors,
    data_aware_svd_compress,
    interpolative_compress,
    prune_channels,
    svd_compress,
    svd_factors,
)
from smoothviz.compress.factorized import Factorized, LayerFactors
from smoothviz.compress.layer_inputs import conv_padding, conv_patches, tap_sums
from smoothviz.layers import set_submodule
from smoothviz.models import build_model


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return build_model("cnn", 1, 10, width=8).eval()


@pytest.fixture(scope="module")
def calib():
    return torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def test_a_layer_is_factorised_at_most_at_its_break_even_rank_and_below_full():
    f = LayerFactors.of_layer(nn.Linear(10, 6))  # m·n/(m+n) = 3.75: ranks 1..3 pay off
    assert f.max_rank == 6 and f.break_even_rank == 3
    assert [f.factorizes_at(r) for r in range(1, 7)] == [True, True, True, False, False, False]
    assert [f.weights_at(r) for r in (1, 3, 4)] == [16, 48, 60]
    square = LayerFactors.of_layer(nn.Linear(1, 1))  # nothing to gain at any rank
    assert square.break_even_rank == 0 and not square.factorizes_at(1)


def test_compress_and_analysis_follow_the_one_rule(cnn):
    factors = svd_factors(cnn)
    ranks = {n: max(1, f.break_even_rank + (i % 3) - 1) for i, (n, f) in enumerate(factors.items())}
    small = compress_from_factors(cnn, factors, ranks)
    for name, r in ranks.items():
        expected = factors[name].factorizes_at(r)
        assert isinstance(small.get_submodule(name), Factorized) == expected
        assert (small.compression_info["ranks"][name] is not None) == expected
    table = analysis.chosen_ranks(cnn, 0.4)
    for row in table.itertuples():
        assert row.factorized == factors[row.layer].factorizes_at(row.rank)


def test_set_submodule_replaces_by_dotted_name():
    model = build_model("resnet18", 1, 10, width=4)
    new = nn.Identity()
    set_submodule(model, "layer1.0.conv1", new)
    assert model.layer1[0].conv1 is new
    set_submodule(model, "fc", new)
    assert model.fc is new
    with pytest.raises(AttributeError):
        set_submodule(model, "nope.conv", new)


def _count_reduction_checks(monkeypatch) -> list:
    calls = []
    real = budget.check_reduction

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    for module in (budget, factorized, rank_allocation, channel_request):
        if hasattr(module, "check_reduction"):
            monkeypatch.setattr(module, "check_reduction", counting)
    return calls


@pytest.mark.parametrize(
    "call",
    [
        lambda m, x: svd_compress(m, param_reduction=0.5),
        lambda m, x: svd_compress(m, param_reduction=0.5, allocation="output_error", calibration=x),
        lambda m, x: data_aware_svd_compress(m, x, param_reduction=0.5, sequential=False),
        lambda m, x: prune_channels(m, x, param_reduction=0.3, importance="l1"),
        lambda m, x: interpolative_compress(m, x, param_reduction=0.3, variant="one_shot"),
    ],
)
def test_a_request_checks_its_target_once(cnn, calib, monkeypatch, call):
    calls = _count_reduction_checks(monkeypatch)
    call(cnn, calib)
    assert len(calls) == 1, calls


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(2, 3, 3, padding=1),
        nn.Conv2d(2, 3, (3, 5), stride=(2, 1), padding=(2, 1), dilation=(1, 2)),
        nn.Conv2d(2, 3, 3, padding="same", dilation=2),
        nn.Conv2d(2, 3, 3, padding="valid"),
        nn.Conv2d(2, 3, 3, padding=2, padding_mode="reflect"),
        nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular"),
    ],
)
def test_tap_sums_and_patches_see_the_same_input(conv):
    """Both views of a conv's input (the SVD's patches, the channel methods' per-tap means) come
    from one geometry: the tap sums are the patches summed over samples and positions."""
    x = torch.randn(2, 2, 9, 8, generator=torch.Generator().manual_seed(0))
    assert conv_padding(conv) == tuple(conv._reversed_padding_repeated_twice)
    sums, n = tap_sums(x, conv)
    cols = conv_patches(conv, x)  # (N, C·k_h·k_w, L)
    assert n == cols.shape[0] * cols.shape[2]
    torch.testing.assert_close(sums.reshape(-1), cols.double().sum((0, 2)))
    if conv.padding_mode == "zeros" and conv.padding == (1, 1):
        ref = F.unfold(x, conv.kernel_size, conv.dilation, conv.padding, conv.stride)
        assert torch.equal(cols, ref)

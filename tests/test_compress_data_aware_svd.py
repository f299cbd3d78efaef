"""Data-aware SVD: exact whitening, full-rank identity, never worse than weight-only SVD on the
calibration inputs, sequential refit, layers that cannot be whitened skipped with a reason."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from smoothviz.compress import (
    METHODS,
    DataAwareFactors,
    compress_from_factors,
    data_aware_svd_compress,
    data_aware_svd_factors,
    factorize_layer,
    load_compressed,
    save_compressed,
    svd_compress,
    svd_factors,
)
from smoothviz.compress.data_aware_svd import refit_layer
from smoothviz.compress.layer_inputs import collect_input_stats, conv_patches, input_rows
from smoothviz.layers import matrix_view, select_layers
from smoothviz.measure import count_params
from smoothviz.models import build_model


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture()
def cnn():
    torch.manual_seed(0)
    return build_model("cnn", 1, 10, width=8).eval()


@pytest.fixture()
def calib():
    return torch.randn(48, 1, 28, 28, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(3, 5, 3, padding=1),
        nn.Conv2d(3, 5, 3, stride=2, padding=1),
        nn.Conv2d(3, 5, (3, 5), stride=(2, 1), padding=(2, 1), dilation=(1, 2)),
        nn.Conv2d(3, 5, 1, stride=2),
        nn.Conv2d(3, 5, 3, padding="same", dilation=2),
        nn.Conv2d(3, 5, 3, padding="valid"),
        nn.Conv2d(3, 5, 3, padding=2, padding_mode="reflect"),
        nn.Conv2d(3, 5, 3, padding=1, padding_mode="circular"),
    ],
)
def test_patches_are_unfold_and_reproduce_the_convolution(conv):
    x = torch.randn(2, 3, 11, 9, generator=torch.Generator().manual_seed(0))
    cols = conv_patches(conv, x)
    if conv.padding_mode == "zeros" and not isinstance(conv.padding, str):
        ref = F.unfold(x, conv.kernel_size, conv.dilation, conv.padding, conv.stride)
        assert torch.equal(cols, ref)
    # Whatever the padding, (patches @ matrix view) + bias is the layer's output.
    out = conv(x)
    rows = input_rows(conv, x)
    y = rows @ matrix_view(conv.weight).T + conv.bias
    torch.testing.assert_close(y, out.permute(0, 2, 3, 1).reshape(-1, 5), atol=1e-5, rtol=1e-5)


def test_whitening_is_exact_against_numpy():
    """Whitened SVD of a small conv, recomputed independently in NumPy (explicit patch loops)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 4, 3, stride=2, padding=1, bias=False)
    bn = nn.BatchNorm2d(4)
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(0.5, 1.5)
    model = nn.Sequential(nn.Conv2d(1, 2, 1), conv, bn, nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))
    x = torch.randn(6, 1, 7, 7, generator=torch.Generator().manual_seed(2))
    model(x)  # materialise the lazy layer
    model.eval()
    damping = 0.05
    f = data_aware_svd_factors(model, x, layers=["1"], damping=damping)["1"]

    inp = model[0](x).detach().double().numpy()  # (6, 2, 7, 7), the conv's input
    pad = np.pad(inp, ((0, 0), (0, 0), (1, 1), (1, 1)))
    rows = []
    for img in pad:
        for i in range(0, 7, 2):  # output positions of stride 2, padding 1
            for j in range(0, 7, 2):
                rows.append(img[:, i : i + 3, j : j + 3].reshape(-1))
    xs = np.array(rows)  # (6*16, 18)
    cov = xs.T @ xs / 6  # per image
    cov += damping * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
    chol = np.linalg.cholesky(cov)
    w = conv.weight.detach().double().numpy().reshape(4, -1)
    d = bn.weight.detach().double().numpy() / np.sqrt(bn.running_var.double().numpy() + bn.eps)
    u, s, vh = np.linalg.svd(d[:, None] * w @ chol, full_matrices=False)
    np.testing.assert_allclose(f.s.double().numpy(), s, rtol=1e-4, atol=1e-6)
    for r in (1, 2, 4):
        ref = (u[:, :r] / d[:, None]) * s[:r] @ vh[:r] @ np.linalg.inv(chol)
        ours = (f.u[:, :r].double() * f.s[:r].double() @ f.vh[:r].double()).numpy()
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)
        # σ² of the removed terms is the (damped, post-BatchNorm) output error per image.
        err = d[:, None] * (w - ours)
        np.testing.assert_allclose(np.trace(err @ cov @ err.T), (s[r:] ** 2).sum(), atol=1e-4)


def test_full_rank_reproduces_every_layer_and_the_model(cnn, calib):
    before = _state(cnn)
    factors = data_aware_svd_factors(cnn, calib)
    assert isinstance(factors, DataAwareFactors) and list(factors) == ["3", "7", "10", "14"]
    for name, f in factors.items():
        m = cnn.get_submodule(name)
        pair = factorize_layer(m, f.max_rank, f)
        xi = torch.randn(2, m.in_channels, 9, 9)
        torch.testing.assert_close(pair(xi), m(xi), atol=1e-4, rtol=1e-4)
    full = data_aware_svd_compress(cnn, calib, energy=1.0)
    torch.testing.assert_close(full(calib[:4]), cnn(calib[:4]))
    assert all(torch.equal(before[k], v) for k, v in cnn.state_dict().items())


def test_same_shapes_and_params_as_weight_only_svd_at_the_same_ranks(cnn, calib):
    ranks = {"3": 3, "7": 5, "10": 4, "14": 6}
    da = data_aware_svd_compress(cnn, calib, ranks=ranks)
    wo = svd_compress(cnn, ranks=ranks)
    assert count_params(da) == count_params(wo)
    assert [(n, tuple(p.shape)) for n, p in da.named_parameters()] == [
        (n, tuple(p.shape)) for n, p in wo.named_parameters()
    ]
    info = da.compression_info
    assert info["method"] == "svd_data_aware" and info["ranks"] == ranks
    assert info["sequential"] is True and info["skipped"] == {}
    json.dumps(info)  # travels in the JSON sidecar of save_compressed
    # compress_from_factors (what the rank explorer uses) takes data-aware factors as they are.
    factors = data_aware_svd_factors(cnn, calib)
    again = compress_from_factors(cnn, factors, ranks)
    assert again.compression_info["method"] == "svd_data_aware"
    assert count_params(again) == count_params(wo)


def _output_errors(model, name, f, rows, d):
    """Per rank, the (post-BatchNorm) output error of the rank-r factors on the rows."""
    w = matrix_view(model.get_submodule(name).weight.detach().double())
    out = []
    for r in range(1, f.max_rank + 1):
        wr = f.u[:, :r].double() * f.s[:r].double() @ f.vh[:r].double()
        out.append(float((d[:, None] * ((w - wr) @ rows.T)).pow(2).sum()))
    return np.array(out)


@pytest.mark.slow  # trained_cnn: a 3-epoch training, then every rank of every layer
@pytest.mark.parametrize("weighting", ["batchnorm", "none"])
def test_never_worse_than_weight_only_svd_on_the_calibration_inputs(
    trained_cnn, mini_data, weighting
):
    """At every rank of every layer of a trained CNN, the output error on the calibration inputs
    is at most the weight-only SVD's (and clearly smaller somewhere)."""
    calib = mini_data.x_train[:256]
    da = data_aware_svd_factors(trained_cnn, calib, damping=1e-9, output_weighting=weighting)
    wo = svd_factors(trained_cnn)
    captured = {}
    hooks = [
        trained_cnn.get_submodule(n).register_forward_pre_hook(
            lambda m, a, n=n: captured.__setitem__(n, input_rows(m, a[0]).double())
        )
        for n in da
    ]
    with torch.no_grad():
        trained_cnn(calib)
    for h in hooks:
        h.remove()
    gains = []
    for name in da:
        d = da.output_weights[name]
        e_da = _output_errors(trained_cnn, name, da[name], captured[name], d)
        e_wo = _output_errors(trained_cnn, name, wo[name], captured[name], d)
        assert np.all(e_da <= e_wo * (1 + 1e-6) + 1e-6), (name, e_da, e_wo)
        gains.append((e_wo[:-1] / np.maximum(e_da[:-1], 1e-12)).max())
    assert max(gains) > 1.5  # data-awareness matters on a trained model


def test_sequential_refit_keeps_the_weight_when_nothing_upstream_changed(cnn, calib):
    factors = data_aware_svd_factors(cnn, calib)
    same = refit_layer(cnn, copy.deepcopy(cnn), "10", calib, factors, batch_size=16)
    ref = factors["10"]
    torch.testing.assert_close(same.s, ref.s, rtol=1e-4, atol=1e-5)
    w = matrix_view(cnn.get_submodule("10").weight.detach())
    torch.testing.assert_close(same.u * same.s @ same.vh, w, rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # trained_cnn: a 3-epoch training
def test_sequential_refit_reduces_the_next_layers_error(trained_cnn, mini_data):
    """After layer '3' is cut, refitting layer '7' on the new inputs brings its output closer to
    the original network's than truncating it on the original inputs does."""
    calib = mini_data.x_train[:256]
    ranks = {"3": 2, "7": 4}
    seq = data_aware_svd_compress(trained_cnn, calib, ranks=ranks)
    one = data_aware_svd_compress(trained_cnn, calib, ranks=ranks, sequential=False)

    def out7(model):
        got = {}
        h = model.get_submodule("8").register_forward_pre_hook(lambda m, a: got.update(x=a[0]))
        with torch.no_grad():
            model(calib)
        h.remove()
        return got["x"]

    ref = out7(trained_cnn)
    assert (out7(seq) - ref).pow(2).sum() < (out7(one) - ref).pow(2).sum()


def test_param_reduction_is_met_and_the_input_untouched(cnn, calib):
    before = _state(cnn)
    factors = data_aware_svd_factors(cnn, calib)
    base = count_params(cnn)
    for allocation in ("output_error", "energy"):
        for target in (0.3, 0.5):
            small = data_aware_svd_compress(
                cnn, calib, param_reduction=target, factors=factors, allocation=allocation
            )
            assert abs(1 - count_params(small) / base - target) <= 0.01
            assert small.compression_info["allocation"] == allocation
            small(calib[:2])
    assert all(torch.equal(before[k], v) for k, v in cnn.state_dict().items())


def test_singular_covariance_is_damped_not_inverted(cnn):
    """A constant calibration image gives rank-deficient patch covariances: still whitened."""
    flat = torch.full((4, 1, 28, 28), 0.5)
    factors = data_aware_svd_factors(cnn, flat)
    assert list(factors) == ["3", "7", "10", "14"] and factors.skipped == {}
    for name, f in factors.items():
        assert torch.isfinite(f.u).all() and torch.isfinite(f.vh).all()
        m = cnn.get_submodule(name)
        xi = torch.randn(2, m.in_channels, 6, 6)
        torch.testing.assert_close(
            factorize_layer(m, f.max_rank, f)(xi), m(xi), atol=1e-3, rtol=1e-3
        )
    small = data_aware_svd_compress(cnn, flat, param_reduction=0.3)
    assert torch.isfinite(small(torch.randn(2, 1, 28, 28))).all()


class _Blocks(nn.Module):
    """A depthwise conv, a layer the forward never reaches, one fed zeros, one fed NaN."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.dense = nn.Conv2d(8, 8, 3, padding=1)
        self.zero = nn.Conv2d(8, 8, 3, padding=1)
        self.fed_zeros = nn.Conv2d(8, 8, 3, padding=1)
        self.unused = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 3)
        nn.init.zeros_(self.zero.weight)
        nn.init.zeros_(self.zero.bias)

    def forward(self, x):
        x = self.dense(self.depthwise(self.stem(x)))
        x = self.fed_zeros(self.zero(x))
        return self.head(x.mean((2, 3)))


def test_layers_that_cannot_be_whitened_are_skipped_with_a_reason():
    torch.manual_seed(0)
    model = _Blocks().eval()
    x = torch.randn(4, 1, 8, 8)
    factors = data_aware_svd_factors(model, x)
    assert set(factors) == {"dense", "zero"}
    reasons = factors.skipped
    assert "grouped/depthwise" in reasons["depthwise"]
    assert "never reaches" in reasons["unused"]
    assert "all zero" in reasons["fed_zeros"]
    small = data_aware_svd_compress(model, x, ranks={"dense": 2})
    assert small(x).shape == (4, 3)
    small = data_aware_svd_compress(model, x, param_reduction=0.1)
    skipped = small.compression_info["skipped"]
    assert set(skipped) == {"depthwise", "unused", "fed_zeros"}
    with pytest.raises(ValueError, match=r"ranks: these layers cannot be factorised here: .*fed"):
        data_aware_svd_compress(model, x, ranks={"fed_zeros": 2})


def test_non_finite_activations_are_skipped():
    class Overflow(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 6)
            self.b = nn.Linear(6, 6)
            self.c = nn.Linear(6, 2)
            self.a.weight.data.fill_(1e38)

        def forward(self, x):
            return self.c(self.b(self.a(x)))

    model = Overflow().eval()
    factors = data_aware_svd_factors(model, torch.ones(3, 4), layers="all")
    assert "not finite" in factors.skipped["b"] and "a" in factors


def test_grouped_conv_named_explicitly_is_refused_as_svd_does():
    model = _Blocks().eval()
    with pytest.raises(ValueError, match=r"layers: \['depthwise'\] are grouped/depthwise"):
        data_aware_svd_compress(model, torch.randn(2, 1, 8, 8), ranks={"depthwise": 2})


@pytest.mark.slow  # the data-aware factors of every layer of torchvision's MobileNetV2
def test_torchvision_mobilenet_runs_with_its_depthwise_convs_skipped(zoo):
    model = zoo["mobilenet_v2"]
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    factors = data_aware_svd_factors(model, x)  # default selection: depthwise convs skipped
    chosen = [n for n, _ in select_layers(model)]
    grouped = [n for n in chosen if model.get_submodule(n).groups != 1]
    assert len(grouped) == 17 and set(factors.skipped) == set(grouped)
    assert set(factors) == set(chosen) - set(grouped)
    small = data_aware_svd_compress(model, x, param_reduction=0.3, factors=factors)
    assert set(small.compression_info["skipped"]) == set(grouped)
    assert torch.isfinite(small(x)).all()


def test_save_and_load_round_trip(cnn, calib, tmp_path):
    small = data_aware_svd_compress(cnn, calib, param_reduction=0.4)
    save_compressed(small, tmp_path / "m.pt", arch={"name": "cnn", "in_channels": 1, "width": 8})
    back = load_compressed(tmp_path / "m.pt")
    torch.testing.assert_close(back(calib[:3]), small(calib[:3]))
    assert back.compression_info == small.compression_info


def test_collect_input_stats_finds_the_batchnorm_after_each_layer(cnn, calib):
    _, order, followers = collect_input_stats(cnn, calib, ["10", "3", "7"])
    assert order == ["3", "7", "10"]
    assert followers == {"3": "4", "7": "8", "10": "11"}


def test_method_is_listed_and_dispatched_by_the_sweep(cnn, calib):
    from smoothviz.sweep import compress

    assert "svd_data_aware" in METHODS
    cache: dict = {}
    a = compress(cnn, "svd_data_aware", 0.3, calibration=calib, cache=cache)
    b = compress(cnn, "svd_data_aware", 0.5, calibration=calib, cache=cache)
    assert len(cache) == 1  # the factors were computed once for both budgets
    assert count_params(b) < count_params(a)
    c = compress(
        cnn, "svd_data_aware", 0.3, calibration=calib, cache=cache, options={"sequential": False}
    )
    assert c.compression_info["sequential"] is False

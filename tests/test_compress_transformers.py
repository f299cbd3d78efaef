"""Transformers and models that read a layer's weight directly (issue 24, items 1-2).

``ProjectedAttention`` computes what ``nn.MultiheadAttention`` computes with called projections;
the SVD methods factorise them and the result runs under PyTorch's fast-path conditions (eval,
``batch_first=True``, no grad); the channel methods find ``nn.TransformerEncoderLayer``'s
feed-forward pair; a layer another module reads directly is left out with a reason, and a model
that breaks is refused with :class:`BrokenModelError` naming the layer.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from smoothviz.compress import (
    BudgetError,
    data_aware_svd_compress,
    interpolative_compress,
    load_compressed,
    prune_channels,
    save_compressed,
    svd_compress,
)
from smoothviz.compress.attention import ProjectedAttention, split_attention
from smoothviz.compress.chains import find_groups
from smoothviz.compress.forward_check import BrokenModelError, probe_model
from smoothviz.measure import count_params


class TokenClassifier(nn.Module):
    def __init__(self, d: int = 32, layers: int = 2) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(d, 4, dim_feedforward=2 * d, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers)
        self.head = nn.Linear(d, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).mean(1))


class ReadsWeight(nn.Module):
    """A block whose forward uses ``inner.weight`` itself (as Swin's attention does)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(64, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.inner.weight, self.inner.bias).relu()


def _tokens(n: int = 6, seed: int = 0, d: int = 32) -> torch.Tensor:
    return torch.randn(n, 5, d, generator=torch.Generator().manual_seed(seed))


@pytest.fixture()
def encoder():
    torch.manual_seed(0)
    return TokenClassifier().eval()


@pytest.mark.parametrize("batch_first", [True, False])
def test_projected_attention_equals_multihead_attention(batch_first):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).train(False)
    new = ProjectedAttention.from_attention(mha)
    x = torch.randn(3, 7, 16) if batch_first else torch.randn(7, 3, 16)
    causal = torch.triu(torch.ones(7, 7, dtype=torch.bool), 1)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[0, -2:] = True
    for kwargs in ({}, {"attn_mask": causal}, {"key_padding_mask": pad}):
        for need_weights in (True, False):
            want, w_want = mha(x, x, x, need_weights=need_weights, **kwargs)
            got, w_got = new(x, x, x, need_weights=need_weights, **kwargs)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
            if need_weights:
                torch.testing.assert_close(w_got, w_want, atol=1e-5, rtol=1e-5)
    assert count_params(new) == count_params(mha)
    assert mha.in_proj_weight is not None  # the source is untouched


def test_split_attention_keeps_the_function_under_the_fast_path(encoder):
    x = _tokens()
    split = split_attention(encoder)
    assert isinstance(split.encoder.layers[0].self_attn, ProjectedAttention)
    assert isinstance(encoder.encoder.layers[0].self_attn, nn.MultiheadAttention)
    with torch.no_grad():  # eval + batch_first + no grad: PyTorch's fused path for the original
        torch.testing.assert_close(split(x), encoder(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", ["svd", pytest.param("data_aware", marks=pytest.mark.slow)])
def test_svd_methods_factorise_attention_and_the_result_runs(encoder, method, tmp_path):
    calibration = _tokens(64, seed=1)
    state = {k: v.clone() for k, v in encoder.state_dict().items()}
    if method == "svd":
        small = svd_compress(encoder, param_reduction=0.3)
    else:
        small = data_aware_svd_compress(encoder, calibration, param_reduction=0.3)
    ranks = small.compression_info["ranks"]
    # Every projection is a candidate (layer 0's q_proj is the model's first layer, left out by
    # default as too small to save at a useful rank), and some are factorised.
    attn = [
        f"encoder.layers.{i}.self_attn.{p}_proj" for i in (0, 1) for p in ("q", "k", "v", "out")
    ]
    assert set(attn[1:]) <= set(ranks) and any(ranks[n] for n in attn[1:])
    assert abs(1 - count_params(small) / count_params(encoder) - 0.3) <= 0.01
    with torch.no_grad():
        for n in (1, 8):
            assert small.eval()(_tokens(n, seed=2)).shape == (n, 10)
    assert all(torch.equal(v, state[k]) for k, v in encoder.state_dict().items())
    path = save_compressed(small, tmp_path / "t.pt")
    loaded = load_compressed(path, base=TokenClassifier())
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(_tokens(3)), small(_tokens(3)))


def test_the_full_rank_split_reproduces_the_encoder(encoder):
    full = {
        n: min(m.weight.shape)
        for n, m in split_attention(encoder).named_modules()
        if isinstance(m, nn.Linear) and n != "head"
    }
    small = svd_compress(encoder, ranks=full)
    with torch.no_grad():
        torch.testing.assert_close(small(_tokens()), encoder(_tokens()), atol=1e-4, rtol=1e-4)


@pytest.mark.slow  # about 2 s idle: kept out of the inner loop
def test_encoder_feed_forward_pairs_are_channel_groups(encoder):
    search = find_groups(encoder)
    pairs = {
        (tuple(w.name for w in g.writers), tuple(r.name for r in g.readers)) for g in search.groups
    }
    for i in range(2):
        assert ((f"encoder.layers.{i}.linear1",), (f"encoder.layers.{i}.linear2",)) in pairs
    assert not any("not called" in why for why in search.skipped.values()), search.skipped
    calibration = _tokens(64, seed=1)
    for small in (
        prune_channels(encoder, calibration=calibration, param_reduction=0.2),
        interpolative_compress(encoder, calibration, param_reduction=0.2),
    ):
        assert small.encoder.layers[0].linear1.out_features < 64
        assert (
            small.encoder.layers[0].linear2.in_features
            == small.encoder.layers[0].linear1.out_features
        )
        with torch.no_grad():
            assert small.eval()(_tokens(8, seed=2)).shape == (8, 10)


@pytest.mark.slow  # about 2 s idle: kept out of the inner loop
def test_keeping_every_hidden_unit_reproduces_the_encoder(encoder):
    calibration = _tokens(64, seed=1)
    search = find_groups(encoder)
    keep = {g.name: g.channels for g in search.groups}
    same = interpolative_compress(encoder, calibration, keep=keep)
    with torch.no_grad():
        torch.testing.assert_close(same(_tokens()), encoder(_tokens()), atol=1e-4, rtol=1e-4)


def test_a_layer_whose_weight_is_read_directly_is_left_out_with_its_reason():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), ReadsWeight(), nn.Linear(64, 10)).eval()
    probe = probe_model(model, record_calls=True)
    assert "1.inner" in probe.not_called(["0", "1.inner"])
    small = svd_compress(model, param_reduction=0.2, layers="all")
    assert "1.inner" not in small.compression_info["ranks"]
    with pytest.raises(BudgetError, match=r"1\.inner.*not called as a module"):
        svd_compress(model, param_reduction=0.6, layers="all")
    with pytest.raises(ValueError, match=r"layers: \['1.inner'\].*not called as a module"):
        svd_compress(model, param_reduction=0.2, layers=["0", "1.inner"])


def test_a_model_that_breaks_is_refused_naming_the_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    probe = probe_model(model, torch.randn(4, 8))
    broken = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(12, 4))
    with pytest.raises(BrokenModelError, match=r"does not run: 2 \(Linear\).*Layers it changed"):
        probe.check(broken, method="test", changed=["2"])
    wrong = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 5))
    with pytest.raises(BrokenModelError, match="output changed"):
        probe.check(wrong, method="test", changed=["2"])
    probe.check(model, method="test", changed=[])  # the model itself passes

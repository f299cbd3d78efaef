"""Channel methods (issue 10): bias compensation, residual groups, importance, calibration checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from smoothviz.compress import (
    BudgetError,
    find_groups,
    interpolative_compress,
    prune_channels,
)
from smoothviz.compress.activations import group_statistics
from smoothviz.compress.chains import ChannelPlan
from smoothviz.compress.importance import IMPORTANCES, fisher_importance
from smoothviz.measure import count_params
from smoothviz.models import build_model


def _settle_batchnorm(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Give BatchNorm realistic, channel-dependent statistics (as after training)."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.uniform_(m.weight, 0.2, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.8)
            m.momentum = None  # cumulative average over the passes below
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(x)
    return model.eval()


class _TinyResNet(nn.Module):
    """A residual stream written by a stem and two blocks, read by both blocks and the head.

    All convs are 1x1, so a spatially constant input gives spatially constant activations.
    """

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, c, 1, bias=False)
        self.stem_bn = nn.BatchNorm2d(c)
        self.a1, self.a1_bn = nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c)
        self.a2, self.a2_bn = nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c)
        self.b1, self.b1_bn = nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c)
        self.b2, self.b2_bn = nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c)
        self.head = nn.Linear(c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem_bn(self.stem(x)))
        x = torch.relu(x + self.a2_bn(self.a2(torch.relu(self.a1_bn(self.a1(x))))))
        x = torch.relu(x + self.b2_bn(self.b2(torch.relu(self.b1_bn(self.b1(x))))))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _constant_batch(shape: tuple[int, ...]) -> torch.Tensor:
    one = torch.randn(shape[1:], generator=torch.Generator().manual_seed(3))
    if len(shape) == 4:  # the same value at every pixel too
        one = one.mean().expand(shape[1:]).clone()
    return one.expand(shape).clone()


def _models():
    mlp = nn.Sequential(
        nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(),
        nn.Linear(16, 12, bias=False), nn.BatchNorm1d(12), nn.ReLU(),
        nn.Linear(12, 3),
    )  # fmt: skip
    no_pad_cnn = nn.Sequential(
        nn.Conv2d(1, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
    )  # fmt: skip
    return {
        "mlp": (mlp, (20, 6)),
        "cnn": (no_pad_cnn, (20, 1, 10, 10)),
        "residual": (_TinyResNet(), (20, 1, 6, 6)),
    }


@pytest.mark.parametrize("name", ["mlp", "cnn", "residual"])
def test_bias_compensation_restores_the_output_on_a_constant_batch(name):
    model, shape = _models()[name]
    torch.manual_seed(0)
    model = _settle_batchnorm(model, torch.randn(*shape) * 2)
    const = _constant_batch(shape)
    ref = model(const)
    plain = prune_channels(model, const, amount=0.5, compensate=False, importance="l1")
    fixed = prune_channels(model, const, amount=0.5, compensate=True, importance="l1")
    assert plain.compression_info["kept"] == fixed.compression_info["kept"]
    assert count_params(fixed) == count_params(plain) < count_params(model)
    assert (plain(const) - ref).abs().max() > 1e-2  # the removed channels did matter
    torch.testing.assert_close(fixed(const), ref, atol=1e-4, rtol=1e-4)
    if name == "residual":
        assert any(g.residual for g in find_groups(model).groups)


def test_compensation_goes_into_batchnorm_without_new_parameters():
    model, shape = _models()["mlp"]
    model = _settle_batchnorm(model, torch.randn(*shape))
    calib = torch.randn(*shape)
    new = prune_channels(model, calib, amount=0.5, compensate=True)
    assert new[3].bias is None  # the reader had no bias: its BatchNorm took the shift
    assert not torch.equal(new[4].running_mean, model[4].running_mean)
    names = {n for n, _ in new.named_parameters()}
    assert names == {n for n, _ in model.named_parameters()}


def test_a_reader_without_bias_or_batchnorm_gets_a_counted_bias():
    model = nn.Sequential(nn.Linear(5, 10), nn.ReLU(), nn.Linear(10, 4, bias=False), nn.ReLU(),
                          nn.Linear(4, 2))  # fmt: skip
    calib = torch.randn(64, 5)
    search = find_groups(model)
    plan = ChannelPlan(model, search.groups, bias_for=["2"])
    new = prune_channels(model, calib, amount=0.5)
    assert new[2].bias is not None and new[2].bias.shape == (new[2].out_features,)
    kept = {g: len(v) for g, v in new.compression_info["kept"].items()}
    assert count_params(new) == plan.params(kept)


def test_residual_group_pruning_matches_the_closed_form():
    # Halving every group of the project's ResNet-18 of width 8 is exactly a ResNet-18 of width 4
    # (running means absorb the compensation; no parameter is added).
    torch.manual_seed(0)
    model = build_model("resnet18", 1, 10, width=8)
    model = _settle_batchnorm(model, torch.randn(16, 1, 28, 28))
    calib = torch.randn(32, 1, 28, 28)
    new = prune_channels(model, calib, amount=0.5)
    assert count_params(new) == count_params(build_model("resnet18", 1, 10, width=4))
    search = find_groups(model)
    assert sum(g.residual for g in search.groups) == 4  # one residual stream per stage
    plan = ChannelPlan(model, search.groups)
    kept = {g: len(v) for g, v in new.compression_info["kept"].items()}
    assert plan.params(kept) == count_params(new)
    assert new(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("target", [0.5, pytest.param(0.7, marks=pytest.mark.slow)])
def test_residual_groups_reach_high_reductions(target):
    torch.manual_seed(0)
    model = build_model("resnet18", 1, 10, width=8)
    model = _settle_batchnorm(model, torch.randn(16, 1, 28, 28))
    calib = torch.randn(32, 1, 28, 28)
    for residual in (True, False):
        new = prune_channels(model, calib, param_reduction=target, residual=residual)
        assert abs(1 - count_params(new) / count_params(model) - target) <= 0.01
        streams_cut = new.layer4[1].conv2.out_channels < 64
        assert streams_cut == residual
        assert ("layer4.1.conv2" in new.compression_info["skipped"]) != residual
    assert new(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize(  # the default importance in the inner loop, every one in the full suite
    "importance",
    [i if i == "fisher" else pytest.param(i, marks=pytest.mark.slow) for i in IMPORTANCES],
)
def test_zero_pruning_is_the_identity_with_every_option(importance):
    torch.manual_seed(0)
    model = build_model("resnet18", 1, 10, width=8)
    model = _settle_batchnorm(model, torch.randn(16, 1, 28, 28))
    x, calib = torch.randn(3, 1, 28, 28), torch.randn(16, 1, 28, 28)
    for compensate in (True, False):
        new = prune_channels(
            model, calib, param_reduction=0.0, importance=importance, compensate=compensate
        )
        torch.testing.assert_close(new(x), model(x))
        assert count_params(new) == count_params(model)


def test_bn_scale_importance_sees_the_batchnorm():
    # Two filters of equal L1 norm; BatchNorm scales the first by 10 and the second by 0.1:
    # "l1" cannot tell them apart (keeps the first in index order), "bn_scale" keeps the first.
    model = nn.Sequential(
        nn.Linear(4, 2, bias=False), nn.BatchNorm1d(2), nn.ReLU(), nn.Linear(2, 1)
    )
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 1, 0, 0], [0, 0, 1, 1]]))
        model[1].weight.copy_(torch.tensor([0.1, 10.0]))
    model.eval()
    by_l1 = prune_channels(model, amount=0.5, importance="l1", layers=["0"])
    by_bn = prune_channels(model, amount=0.5, importance="bn_scale", layers=["0"])
    assert by_l1.compression_info["kept"] == {"0": [0]}
    assert by_bn.compression_info["kept"] == {"0": [1]}


def test_activation_importance_keeps_the_channel_that_varies():
    # Channel 0 is constant on the data (its loss is fully compensated), channel 1 varies.
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
        model[0].bias.copy_(torch.tensor([5.0, 3.0]))
    calib = torch.randn(256, 2)
    new = prune_channels(model, calib, amount=0.5, importance="activation", layers=["0"])
    assert new.compression_info["kept"] == {"0": [1]}
    torch.testing.assert_close(new(calib), model(calib))  # the constant went into the bias


def test_grouped_convolutions_are_skipped_with_a_reason():
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2),
    )  # fmt: skip
    new = prune_channels(model, torch.randn(4, 1, 8, 8), amount=0.5)
    skipped = new.compression_info["skipped"]
    assert "grouped" in skipped["2"]
    assert "grouped" in skipped["0"]  # its channels feed the grouped conv
    assert new[4].out_channels == 4 and new[8].in_features == 4
    assert new(torch.randn(2, 1, 8, 8)).shape == (2, 2)
    with pytest.raises(BudgetError, match=r"2 \(grouped/depthwise"):
        prune_channels(model, param_reduction=0.9)


def test_budget_error_names_left_out_layers_and_the_layers_value():
    model = build_model("cnn", 1, 10, width=8)
    with pytest.raises(BudgetError) as info:
        prune_channels(model, param_reduction=0.8, layers=["3"])
    text = str(info.value)
    assert "0 (not in layers=)" in text and "19 (it reaches the model's output)" in text
    assert "layers='all'" in text
    with pytest.raises(BudgetError, match=r"layers='all'"):
        interpolative_compress(model, torch.randn(4, 1, 28, 28), param_reduction=0.8, layers=["3"])


def test_fisher_importance_estimates_the_kl_each_removal_causes():
    # Small perturbations, where the second-order estimate must match the measured KL divergence
    # between the original and the model with one hidden channel replaced by its mean.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    with torch.no_grad():
        model[2].weight.mul_(0.3)
    calib = torch.randn(4000, 4, generator=torch.Generator().manual_seed(1))
    search = find_groups(model, ["0"])
    stats = group_statistics(model, calib, search.groups)
    fisher = fisher_importance(model, calib, search.groups, stats, batch_size=1000)["0"]
    hidden = torch.relu(model[0](calib)).detach()
    log_p = model(calib).log_softmax(1).detach()
    measured = []
    for c in range(6):
        h = hidden.clone()
        h[:, c] = hidden[:, c].mean()
        log_q = model[2](h).log_softmax(1).detach()
        measured.append((log_p.exp() * (log_p - log_q)).sum(1).mean().item())
    measured = torch.tensor(measured, dtype=torch.float64)
    estimate = torch.from_numpy(fisher)
    assert torch.all((estimate / measured - 1).abs() < 0.15), (estimate, measured)
    assert prune_channels(model, calib, amount=0.5).compression_info["importance"] == "fisher"


def test_pruned_and_compensated_models_survive_save_and_load(tmp_path):
    from smoothviz.compress import load_compressed, save_compressed

    torch.manual_seed(0)
    resnet = _settle_batchnorm(build_model("resnet18", 1, 10, width=8), torch.randn(8, 1, 28, 28))
    biasless = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.ReLU(),
                             nn.Linear(10, 6, bias=False), nn.ReLU(), nn.Linear(6, 2))  # fmt: skip
    x = torch.randn(3, 1, 28, 28)
    for name, model in (("resnet", resnet), ("biasless", biasless)):
        small = prune_channels(model, torch.randn(16, 1, 28, 28), param_reduction=0.5)
        path = save_compressed(small, tmp_path / f"{name}.pt")
        back = load_compressed(path, base=model)
        torch.testing.assert_close(back(x), small(x))
        assert count_params(back) == count_params(small)

"""Evaluation, parameter/FLOP counting, latency and BatchNorm re-estimation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from smoothviz.compress import prune_magnitude
from smoothviz.measure import (
    bn_reestimate,
    count_flops,
    count_params,
    evaluate,
    measure_latency,
)
from smoothviz.models import build_model


def test_evaluate_matches_manual(mini_data):
    torch.manual_seed(0)
    model = build_model("cnn", 1, 10, width=4).eval()
    x, y = mini_data.x_test[:300], mini_data.y_test[:300]
    out = evaluate(model, (x, y), batch_size=128)
    with torch.no_grad():
        logits = model(x)
    assert out["accuracy"] == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert out["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    model.train()
    evaluate(model, mini_data, split="train", batch_size=1000)
    assert model.training  # mode restored


def test_evaluate_bad_arguments(mini_data):
    model = build_model("cnn", 1, 10, width=4)
    with pytest.raises(ValueError, match="split must be one of"):
        evaluate(model, mini_data, split="val")
    with pytest.raises(ValueError, match="batch_size must be"):
        evaluate(model, mini_data, batch_size=0)
    with pytest.raises(TypeError, match="data must be"):
        evaluate(model, [1, 2])
    with pytest.raises(ValueError, match="data: x has 3 channels .* model expects 1"):
        evaluate(model, (torch.randn(4, 3, 8, 8), torch.zeros(4, dtype=torch.long)))
    with pytest.raises(ValueError, match="data: x has 4 samples but y has 3"):
        evaluate(model, (torch.randn(4, 1, 8, 8), torch.zeros(3, dtype=torch.long)))
    with pytest.raises(TypeError, match="data: y must hold integer class labels"):
        evaluate(model, (torch.randn(4, 1, 8, 8), torch.zeros(4)))


def test_count_params_closed_form_and_nonzeros():
    model = build_model("cnn", 1, 10, width=4)
    w = 4
    convs = [(1, w), (w, 2 * w), (2 * w, 2 * w), (2 * w, 4 * w), (4 * w, 4 * w)]
    expected = sum(i * o * 9 + 2 * o for i, o in convs) + 4 * w * 10 + 10
    assert count_params(model) == expected
    pruned = prune_magnitude(model, amount=0.5)
    assert count_params(pruned) < expected
    assert count_params(pruned, nonzero=False) == expected


def test_count_flops_closed_form():
    lin = nn.Linear(20, 7)
    assert count_flops(lin, torch.randn(3, 20)) == 2 * 3 * 20 * 7
    conv = nn.Conv2d(3, 5, 3, padding=1)
    assert count_flops(conv, torch.randn(1, 3, 8, 8)) == 2 * 5 * 3 * 9 * 64


def test_latency_reports_median_and_device():
    model = build_model("cnn", 1, 10, width=4)
    out = measure_latency(model, torch.randn(4, 1, 28, 28), repeats=3, warmup=1)
    assert out["latency_ms"] > 0 and out["repeats"] == 3 and out["batch_size"] == 4
    assert out["device"].startswith("CPU")
    with pytest.raises(ValueError, match="repeats"):
        measure_latency(model, torch.randn(1, 1, 28, 28), repeats=0)


def test_bn_reestimate_is_forward_only_and_exact():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6 * 6, 2)
    ).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(40, 1, 8, 8)
    new = bn_reestimate(model, x, batch_size=40)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        h = model[0](x)
    torch.testing.assert_close(new[1].running_mean, h.mean((0, 2, 3)))
    torch.testing.assert_close(new[1].running_var, h.var((0, 2, 3), unbiased=True))
    for k in ("0.weight", "0.bias", "1.weight", "1.bias", "4.weight"):
        assert torch.equal(new.state_dict()[k], before[k])
    assert not new.training and new[1].momentum == model[1].momentum

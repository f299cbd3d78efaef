"""Each penalty against an independent computation, and the proximal step against soft-thresholding."""

import numpy as np
import pytest
import torch
from torch import nn

from smoothviz.regularizers import (
    Regularization,
    normalized_difference,
    nuclear_norm,
    smoothness_penalty,
    soft_threshold_singular_values,
)

torch.manual_seed(0)


def test_nuclear_norm_is_the_sum_of_singular_values_of_the_matrix_view():
    w = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    expected = np.linalg.svd(w.reshape(6, 36).numpy(), compute_uv=False).sum()
    assert float(nuclear_norm(w)) == pytest.approx(expected, rel=1e-10)


def test_nuclear_norm_gradient_is_u_vt():
    m = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    nuclear_norm(m).backward()
    u, _, vh = np.linalg.svd(m.detach().numpy(), full_matrices=False)
    np.testing.assert_allclose(m.grad.numpy(), u @ vh, atol=1e-10)


def test_smoothness_is_zero_on_weights_constant_along_both_channel_axes():
    w = torch.randn(1, 1, 3, 3).expand(8, 5, 3, 3).contiguous()
    assert float(smoothness_penalty(w, 1)) == 0.0
    assert float(smoothness_penalty(w, 2)) == 0.0
    # Linear in the channel index: the first difference is not zero, the second is.
    ramp = torch.arange(8.0)[:, None] + torch.arange(5.0)[None, :]
    assert float(smoothness_penalty(ramp, 1)) > 0
    assert float(smoothness_penalty(ramp, 2)) == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("order", [1, 2])
def test_smoothness_matches_an_explicit_loop(order):
    w = torch.randn(7, 6, 3, 3, dtype=torch.float64)
    gain = {1: 2.0, 2: 6.0}[order]
    coeffs = {1: [-1, 1], 2: [1, -2, 1]}[order]
    terms = []
    for axis in (0, 1):
        length = w.shape[axis]
        total = 0.0
        for i in range(length - order):
            d = sum(c * w.select(axis, i + j) for j, c in enumerate(coeffs))
            total += float((d**2).sum())
        terms.append(total / (gain * (length - order) / length))
    assert float(smoothness_penalty(w, order)) == pytest.approx(np.mean(terms), rel=1e-10)


@pytest.mark.parametrize("order", [1, 2])
def test_smoothness_gradient_matches_finite_differences(order):
    w = torch.randn(4, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: smoothness_penalty(t, order), (w,))


def test_normalised_difference_is_about_one_on_white_noise_and_zero_on_constant():
    w = torch.randn(256, 256, dtype=torch.float64)
    assert normalized_difference(w, 1, 0) == pytest.approx(1.0, abs=0.03)
    assert normalized_difference(w, 2, 1) == pytest.approx(1.0, abs=0.03)
    assert normalized_difference(torch.ones(10, 4), 1, 0) == 0.0
    # Equal to ||W||^2 on white noise: the penalty has weight decay's scale.
    assert float(smoothness_penalty(w, 1)) == pytest.approx(float(w.pow(2).sum()), rel=0.03)


def test_proximal_step_is_soft_thresholding_of_singular_values():
    m = torch.randn(6, 9, dtype=torch.float64)
    out = soft_threshold_singular_values(m, 0.8)
    u, s, vh = np.linalg.svd(m.numpy(), full_matrices=False)
    np.testing.assert_allclose(out.numpy(), (u * np.maximum(s - 0.8, 0)) @ vh, atol=1e-10)
    np.testing.assert_allclose(
        np.linalg.svd(out.numpy(), compute_uv=False), np.maximum(s - 0.8, 0), atol=1e-10
    )


def test_regularization_applies_the_proximal_step_every_k_steps_with_scaled_threshold():
    layer = nn.Linear(8, 6)
    before = layer.weight.detach().clone()
    reg = Regularization([("l", layer)], proximal=0.5, proximal_every=2)
    reg.proximal_step(step=0, lr=0.1)  # step 1 of every 2: nothing happens
    assert torch.equal(layer.weight, before)
    reg.proximal_step(step=1, lr=0.1)
    expected = soft_threshold_singular_values(before, 0.1 * 0.5 * 2)
    torch.testing.assert_close(layer.weight.detach(), expected, atol=1e-5, rtol=1e-5)


def test_amortised_nuclear_value_and_gradient_equal_the_exact_ones_at_a_refresh():
    torch.manual_seed(1)
    layers = [("a", nn.Linear(9, 7)), ("b", nn.Linear(9, 7)), ("c", nn.Conv2d(3, 5, 3))]
    exact = Regularization(layers, nuclear=1.0)
    amortised = Regularization(layers, nuclear=1.0, nuclear_every=5)
    v_exact = exact.penalty(0)[0]
    g_exact = torch.autograd.grad(v_exact, [m.weight for _, m in layers])
    v_amort = amortised.penalty(0)[0]
    g_amort = torch.autograd.grad(v_amort, [m.weight for _, m in layers])
    assert v_amort.item() == pytest.approx(v_exact.item(), rel=1e-5)
    expected = sum(nuclear_norm(m.weight).item() for _, m in layers)
    assert v_exact.item() == pytest.approx(expected, rel=1e-5)
    for a, b in zip(g_exact, g_amort):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_penalty_reports_each_active_term():
    layers = [("a", nn.Linear(9, 7))]
    reg = Regularization(layers, nuclear=0.1, second_order=0.2)
    total, values = reg.penalty(0)
    assert reg.terms == ["nuclear", "second_order"] and len(values) == 2
    expected = 0.1 * values[0].item() + 0.2 * values[1].item()
    assert total.item() == pytest.approx(expected, rel=1e-6)

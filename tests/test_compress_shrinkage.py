"""Calibration that cannot silently overfit (issue 24, item 3): Ledoit-Wolf shrinkage where a layer
saw fewer calibration rows than input dimensions, a warning naming it, and nothing changed elsewhere."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from smoothviz.compress import data_aware_svd_compress, interpolative_compress
from smoothviz.compress.activations import SourceStats
from smoothviz.compress.layer_inputs import InputStats
from smoothviz.compress.shrinkage import (
    FewRowsWarning,
    RowShortfall,
    sample_shrinkage,
    shrink,
    shrinkage_intensity,
)


def test_shrink_keeps_the_trace_and_moves_towards_a_multiple_of_the_identity():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    m = a @ a.T
    for alpha in (0.0, 0.3, 1.0):
        out = shrink(m, alpha)
        assert np.isclose(np.trace(out), np.trace(m))
    np.testing.assert_array_equal(shrink(m, 0.0), m)
    np.testing.assert_allclose(shrink(m, 1.0), np.trace(m) / 6 * np.eye(6))


def test_the_intensity_follows_how_much_the_inputs_disagree():
    rng = np.random.default_rng(0)
    scale = np.linspace(0.2, 3.0, 20)  # an anisotropic covariance worth estimating
    many = sample_shrinkage(rng.normal(size=(4000, 1, 20)) * scale)
    few = sample_shrinkage(rng.normal(size=(6, 1, 20)) * scale)
    assert 0.0 <= many < 0.05 < 0.5 < few <= 1.0
    # S already a multiple of I: nothing to shrink; one input says nothing about the next.
    assert shrinkage_intensity(trace=4.0, frobenius2=4.0, dims=4, samples=4, spread=9.0) == 0.0
    assert shrinkage_intensity(trace=4.0, frobenius2=8.0, dims=4, samples=1, spread=8.0) == 1.0


def test_layers_with_enough_rows_are_fitted_exactly_as_before():
    rows = torch.randn(40, 8, dtype=torch.float64)
    st = InputStats.empty(8)
    st.add(rows, images=40)
    cov, alpha = st.shrunk_covariance()
    assert alpha == 0.0 and st.shortfall("x") is None
    assert torch.equal(cov, st.covariance())  # the same numbers, bit for bit
    z = rows.numpy()
    src = SourceStats(40, z.mean(0), (z * z).sum(0), z.T @ z)
    gram, alpha = src.gram_for_fit(centered=True)
    assert alpha == 0.0
    np.testing.assert_array_equal(gram, z.T @ z - 40 * np.outer(z.mean(0), z.mean(0)))


def test_few_rows_are_shrunk_and_named():
    st = InputStats.empty(8, keep=True)
    st.add(torch.randn(5, 8, dtype=torch.float64), images=5)
    cov, alpha = st.shrunk_covariance()
    assert 0.0 < alpha <= 1.0
    low, shrunk = torch.linalg.eigvalsh(st.covariance())[0], torch.linalg.eigvalsh(cov)[0]
    assert low < 1e-5 and shrunk >= 0.99 * alpha * float(torch.trace(cov)) / 8  # no free direction
    gap = st.shortfall("layer")
    assert gap == RowShortfall("layer", 5, 8, 5, alpha) and gap.images_needed == 8


def test_data_aware_svd_warns_with_the_layer_its_rows_and_the_inputs_it_needs():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(96, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4)
    )
    calibration = torch.randn(16, 96)
    with pytest.warns(
        FewRowsWarning, match=r"0 \(16 rows from 16 inputs for 96 dimensions: at least 96"
    ):
        small = data_aware_svd_compress(model.eval(), calibration, param_reduction=0.3)
    few = small.compression_info["few_rows"]
    assert few["0"]["rows"] == 16 and few["0"]["dims"] == 96 and 0 < few["0"]["shrinkage"] <= 1


def test_enough_calibration_gives_no_warning():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 128), nn.ReLU(), nn.Linear(128, 4)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FewRowsWarning)
        small = interpolative_compress(model, torch.randn(256, 16), param_reduction=0.3)
    assert "few_rows" not in small.compression_info


@pytest.mark.slow  # one ID of mobilenet_v2 (about a minute on an idle 2-core CPU)
def test_mobilenet_v2s_last_group_from_64_inputs_stays_close_on_held_out_inputs():
    # The issue-24 case: the 1,280-channel group feeding the classifier is read after global
    # pooling, so 64 calibration inputs give it 64 rows.
    from smoothviz.measure import bn_reestimate
    from smoothviz.models import build_model

    torch.manual_seed(0)
    x = torch.randn(16, 3, 32, 32)
    model = build_model("torchvision:mobilenet_v2", in_channels=3, num_classes=10)
    model = bn_reestimate(model, x).eval()  # realistic activation scales
    gen = torch.Generator().manual_seed(1)
    calibration = torch.randn(64, 3, 32, 32, generator=gen)
    held_out = torch.randn(64, 3, 32, 32, generator=gen)
    with pytest.warns(FewRowsWarning, match="channel groups saw fewer calibration rows"):
        small = interpolative_compress(
            model, calibration, channels={"features.18.0": 512}, variant="one_shot"
        )
    assert small.features[18][0].out_channels == 512
    last = small.compression_info["few_rows"]["features.18.0"]
    assert (last["rows"], last["dims"]) == (64, 1280) and last["shrinkage"] > 0.3
    with torch.no_grad():
        want, got = model(held_out), small(held_out)
    # 0.51 measured; 1.74 with the Gram fitted exactly (the shrinkage switched off)
    assert float((got - want).norm() / want.norm()) < 0.75

"""VariantEvaluator: every compressed variant's accuracy and loss equal a plain evaluation, bit for
bit, while the model's unchanged prefix is not run again (a machine-independent cost check)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from smoothviz.measure import bn_reestimate, evaluate
from smoothviz.models import build_model
from smoothviz.sweep import compress
from smoothviz.variant_eval import VariantEvaluator


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model = build_model("resnet18", in_channels=1, num_classes=10, width=4)
    return bn_reestimate(model, torch.randn(96, 1, 28, 28)).eval()


@pytest.fixture(scope="module")
def split(mini_data):
    data = mini_data.subset(n_train=400, n_test=230, seed=3)  # 230: a ragged last batch of 500
    return data, data.x_train[:64], data.x_test, data.y_test


def _exact(got: dict, want: dict) -> None:
    assert got["accuracy"] == want["accuracy"]
    assert got["loss"] == want["loss"]  # the same float sums in the same order, not approx


@pytest.mark.parametrize(
    "method",
    [
        "svd",
        "prune_magnitude",
        # the data-aware methods take seconds per target on their own: the full lane checks them
        pytest.param("svd_data_aware", marks=pytest.mark.slow),
        pytest.param("prune_channels", marks=pytest.mark.slow),
        pytest.param("interpolative", marks=pytest.mark.slow),
    ],
)
def test_every_method_gives_exactly_the_plain_evaluation(resnet, split, method):
    _, calibration, x, y = split
    ev = VariantEvaluator(resnet, x, y, batch_size=100)
    _exact(ev.evaluate(), evaluate(resnet, (x, y), batch_size=100))
    cache: dict = {}
    for target in (0.3, 0.5, 0.3):  # back to an earlier target: layers swapped back to the model's
        small = compress(resnet, method, target, calibration=calibration, cache=cache)
        got = ev.evaluate(small, per_image=True)
        want = evaluate(small, (x, y), batch_size=100, per_image=True)
        _exact(got, want)
        assert torch.equal(got["correct"], want["correct"])
    assert ev.plain_runs == 0 and ev.incremental_runs == 4


def test_bn_reestimated_variants_reuse_the_reestimated_prefix_exactly(resnet, split):
    _, calibration, x, y = split
    bn_x = calibration
    ev = VariantEvaluator(bn_reestimate(resnet, bn_x, max_images=None), x, y, batch_size=100)
    cache: dict = {}
    for target in (0.2, 0.4):
        small = compress(resnet, "svd", target, calibration=calibration, cache=cache)
        re = bn_reestimate(small, bn_x, max_images=None)
        _exact(ev.evaluate(re), evaluate(re, (x, y), batch_size=100))
    assert ev.plain_runs == 0


def test_an_extra_target_does_not_run_the_unchanged_prefix_again(resnet, split):
    """The cost of a variant, counted in images through the model's first layer (the stem, which
    no SVD target changes): the model's own evaluation runs them once; no variant runs them."""
    _, calibration, x, y = split
    ev = VariantEvaluator(resnet, x, y, batch_size=100)
    seen = []
    hook = nn.Module.register_forward_hook  # counted on the evaluator's working copy below
    ev.evaluate()
    stem = ev._ev._run_modules["conv1"]  # the copy that runs (tests may look inside)
    handle = hook(stem, lambda m, i, o: seen.append(len(i[0])))
    try:
        cache: dict = {}
        for target in (0.3, 0.5, 0.7):
            small = compress(resnet, "svd", target, calibration=calibration, cache=cache)
            assert "conv1" not in small.compression_info["ranks"]
            ev.evaluate(small)
            assert ev.cache_info.last_start > 0  # resumed after the stem
    finally:
        handle.remove()
    assert sum(seen) == 0


def test_a_variant_of_another_shape_is_evaluated_plainly(resnet, split):
    _, _, x, y = split
    ev = VariantEvaluator(resnet, x, y, batch_size=100)
    other = build_model("resnet18", in_channels=1, num_classes=10, width=4).eval()
    other.layer1[0] = nn.Sequential(other.layer1[0])  # a replaced container, not a called layer
    _exact(ev.evaluate(other), evaluate(other, (x, y), batch_size=100))
    assert ev.plain_runs == 1 and not ev.fits(other)
    off = VariantEvaluator(resnet, x, y, batch_size=100, incremental=False)
    _exact(off.evaluate(), evaluate(resnet, (x, y), batch_size=100))
    assert off.plain_runs == 1 and off.cache_info is None

"""Widget callbacks, driven by setting ``.value`` as a browser would, move the readouts."""

from __future__ import annotations

import asyncio
import copy
import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from smoothviz.compress.serialize import load_compressed
from smoothviz.compress.svd import LayerFactors, SVDFactors, compress_from_factors, svd_factors
from smoothviz.config import TrainConfig
from smoothviz.explore.readout import wilson_halfwidth
from smoothviz.measure import count_flops, count_params, evaluate
from smoothviz.widgets import ALLOCATIONS, PRUNE_METHODS, PruneExplorer, RankExplorer


@pytest.fixture(scope="module")
def trained(mini_data):
    from smoothviz.training import train

    cfg = TrainConfig(model="cnn", width=8, epochs=1, train_subset=1024, batch_size=64, seed=0)
    return train(cfg, data=mini_data, use_cache=False, progress=False).model


def _pct(label) -> float:
    return float(re.search(r"([\d.]+) %", label.value).group(1))


def _params(label) -> int:
    return int(re.search(r"<b>([\d,]+)</b>", label.value).group(1).replace(",", ""))


def test_rank_explorer_readouts_follow_the_sliders(trained, mini_data):
    ex = RankExplorer(trained, mini_data, param_reduction=0.0, drag_subset=100, settle_seconds=None)
    assert ex.status.value == ""
    full_acc, full_params = _pct(ex.accuracy_label), _params(ex.params_label)
    assert "full test set" in ex.accuracy_label.value and ex.last["n_test"] == len(mini_data.y_test)
    ex.reduction.value = 0.6
    assert _params(ex.params_label) < full_params
    assert ex.last["param_reduction"] == pytest.approx(0.6, abs=0.011)
    assert _pct(ex.accuracy_label) != full_acc
    # A per-layer slider overrides the global split.
    before = _params(ex.params_label)
    name = next(iter(ex.rank_sliders))
    ex.rank_sliders[name].value = 1
    assert _params(ex.params_label) < before and ex.ranks[name] == 1
    # Another way to split the budget gives other ranks with about the same size.
    ranks = ex.ranks
    ex.method.value = list(ALLOCATIONS)[1]
    assert ex.ranks != ranks
    ex.layer_select.value = list(ex.rank_sliders)[-1]  # redraw only
    summary = ex.summary()
    assert summary.loc[0, "test_acc"] == pytest.approx(ex.last["test_acc"])
    assert ex.snapshot().data[:4] == b"\x89PNG"


def test_prune_explorer_readouts_follow_the_slider(trained, mini_data):
    ex = PruneExplorer(
        {"a": trained}, mini_data, param_reduction=0.0, drag_subset=100, settle_seconds=None
    )
    acc0, params0 = _pct(ex.accuracy_label), _params(ex.params_label)
    ex.reduction.value = 0.7
    assert _params(ex.params_label) < params0
    assert _pct(ex.accuracy_label) != acc0
    ex.method.value = list(PRUNE_METHODS)[1]
    assert ex.summary().loc[0, "method"] == list(PRUNE_METHODS)[1]


def test_prune_explorers_old_ratio_keyword_still_works_and_warns(trained, mini_data):
    with pytest.warns(DeprecationWarning, match="use param_reduction= instead"):
        ex = PruneExplorer(
            {"a": trained}, mini_data, ratio=0.3, drag_subset=50, settle_seconds=None
        )
    assert ex.reduction.value == 0.3 and ex.ratio is ex.reduction
    with pytest.raises(TypeError, match="not both"):
        PruneExplorer(trained, mini_data, ratio=0.3, param_reduction=0.3, settle_seconds=None)


def test_callback_errors_are_shown_in_the_widget(trained, mini_data, monkeypatch):
    ex = RankExplorer(trained, mini_data, drag_subset=100, settle_seconds=None)

    def broken():
        raise RuntimeError("boom <b>")

    monkeypatch.setattr(ex, "evaluator", broken)
    ex.rank_sliders[next(iter(ex.rank_sliders))].value = 2
    assert "RuntimeError: boom &lt;b&gt;" in ex.status.value
    with pytest.raises(RuntimeError, match="boom"):
        ex.summary()


@pytest.fixture()
def evaluations(monkeypatch) -> list[str]:
    """The input set ("drag" or "full") of every evaluation any explorer runs, in order."""
    from smoothviz.incremental import IncrementalEvaluator

    calls: list[str] = []
    original = IncrementalEvaluator.evaluate_steps

    def counted(self, key):
        calls.append(key)
        return original(self, key)

    monkeypatch.setattr(IncrementalEvaluator, "evaluate_steps", counted)
    return calls


def test_drag_uses_the_subset_then_the_full_set_once_the_slider_settles(
    trained, mini_data, evaluations
):
    async def scenario():
        ex = RankExplorer(trained, mini_data, drag_subset=100, settle_seconds=0.05)
        await asyncio.sleep(0.3)
        calls.clear()
        ex.reduction.value = 0.4
        assert ex.last["full"] is False and ex.last["n_test"] == 100
        assert "subset while moving" in ex.accuracy_label.value
        ex.reduction.value = 0.35  # still moving: the pending full evaluation waits again
        await asyncio.sleep(0.5)
        return ex

    calls = evaluations
    ex = asyncio.run(scenario())
    assert calls == ["drag", "drag", "full"]
    assert ex.last["full"] is True and ex.last["n_test"] == len(mini_data.y_test)
    assert "full test set" in ex.accuracy_label.value


@pytest.mark.parametrize("explorer", ["rank", "prune"])
def test_building_an_explorer_in_a_running_loop_measures_once_and_leaves_nothing_pending(
    trained, mini_data, evaluations, explorer
):
    """As in a papermill kernel: the first measurement is the full set, no timer is left."""

    async def scenario():
        cls = RankExplorer if explorer == "rank" else PruneExplorer
        ex = cls(trained, mini_data, drag_subset=100, settle_seconds=0.05)
        assert ex.pending is None
        assert ex.last["full"] is True and ex.last["n_test"] == len(mini_data.y_test)
        await asyncio.sleep(0.2)
        return ex

    asyncio.run(scenario())
    assert evaluations == ["full"]


def test_a_move_during_the_full_measurement_abandons_it(trained, mini_data, evaluations):
    async def scenario():
        ex = RankExplorer(trained, mini_data, drag_subset=100, settle_seconds=0.05)
        await asyncio.sleep(0.3)
        ex.reduction.value = 0.4
        assert ex.pending == "settle"
        ex.settle(stepwise=True)  # the slider settles: the full set is measured batch by batch ...
        await asyncio.sleep(0)  # ... one batch has run ...
        assert ex.pending == "full" and not ex.last["full"]
        ex.reduction.value = 0.3  # ... when the hand moves again
        assert ex.pending == "settle" and ex.last["n_test"] == 100
        await asyncio.sleep(0.5)
        return ex

    ex = asyncio.run(scenario())
    assert ex.last["full"] and ex.last["n_test"] == len(mini_data.y_test)
    full = compress_from_factors(trained, ex.factors, ex.ranks)
    assert ex.last["test_acc"] == evaluate(full, (mini_data.x_test, mini_data.y_test))["accuracy"]


def test_settle_measures_the_full_set_at_once(trained, mini_data, evaluations):
    async def scenario():
        ex = RankExplorer(trained, mini_data, drag_subset=100, settle_seconds=30)
        evaluations.clear()
        ex.reduction.value = 0.4
        assert ex.pending == "settle" and ex.last["n_test"] == 100
        ex.settle()  # e.g. before reading the readouts in a script: no wait for the timer
        assert ex.pending is None and ex.last["full"]
        assert "full test set" in ex.accuracy_label.value
        await asyncio.sleep(0.1)
        return ex

    ex = asyncio.run(scenario())
    assert evaluations == ["drag", "full"] and ex.last["n_test"] == len(mini_data.y_test)


def test_one_evaluation_per_user_move(trained, mini_data, evaluations):
    other = copy.deepcopy(trained)
    with torch.no_grad():
        next(other.parameters()).mul_(0.5)
    ex = RankExplorer({"a": trained, "b": other}, mini_data, drag_subset=100, settle_seconds=None)
    calls = evaluations
    calls.clear()
    ex.reduction.value = 0.4  # sets every rank slider programmatically
    assert calls == ["full"]
    ex.rank_sliders[list(ex.rank_sliders)[1]].value = 2
    assert calls == ["full"] * 2
    ex.method.value = list(ALLOCATIONS)[2]
    assert calls == ["full"] * 3
    ex.layer_select.value = list(ex.rank_sliders)[-1]  # only redraws
    assert calls == ["full"] * 3
    ex.model_select.value = "b"
    assert calls == ["full"] * 4 and ex.last["full"]
    pruner = PruneExplorer(trained, mini_data, drag_subset=100, settle_seconds=None)
    calls.clear()
    pruner.reduction.value = 0.3
    pruner.method.value = list(PRUNE_METHODS)[1]
    assert calls == ["full", "full"]


def test_incremental_rebuild_equals_a_full_rebuild(trained, mini_data):
    ex = RankExplorer(trained, mini_data, drag_subset=100, settle_seconds=None)
    swapped: list[list[str]] = []
    ev = ex.evaluator()
    swap = ev.swap
    ev.swap = lambda modules: swapped.append(sorted(modules)) or swap(modules)
    ex.reduction.value = 0.6
    name = list(ex.rank_sliders)[2]
    ex.rank_sliders[name].value = max(1, ex.rank_sliders[name].value - 1)
    assert swapped[-1] == [name]  # only the layer whose rank changed was rebuilt
    ex.method.value = list(ALLOCATIONS)[1]
    full = compress_from_factors(trained, ex.factors, ex.ranks)
    x, y = mini_data.x_test, mini_data.y_test
    with torch.no_grad():
        expected = full.eval()(x)
    torch.testing.assert_close(ev.logits("full"), expected, rtol=1e-4, atol=1e-5)
    plain = evaluate(full, (x, y))
    assert ex.last["test_acc"] == plain["accuracy"]
    assert ex.last["test_loss"] == pytest.approx(plain["loss"], rel=1e-5)
    assert ex.last["params"] == count_params(full) == count_params(ex.compressed_model())


def test_cached_prefix_evaluation_equals_the_plain_evaluation(trained, mini_data):
    ex = RankExplorer(trained, mini_data, drag_subset=100, settle_seconds=None)
    plain = RankExplorer(trained, mini_data, drag_subset=100, settle_seconds=None, cache_mb=0)
    last = list(ex.rank_sliders)[-1]
    ev = ex.evaluator()
    for value in (3, 2, 1):
        for explorer in (ex, plain):
            explorer.rank_sliders[last].value = value
        # only the tail after the moved layer ran
        assert ev.cache_info("full").last_start == ev.resume_point(last)
        assert ex.last == plain.last
        full = compress_from_factors(trained, ex.factors, ex.ranks)
        assert (
            ex.last["test_acc"] == evaluate(full, (mini_data.x_test, mini_data.y_test))["accuracy"]
        )


def _scaled(factors: SVDFactors) -> SVDFactors:
    """Other factors of the same layers (as a data-aware SVD gives): ``vh`` rows rescaled."""
    out = {}
    for name, f in factors.items():
        scale = torch.linspace(0.5, 1.5, f.max_rank, dtype=f.vh.dtype)
        out[name] = LayerFactors(name, f.u, f.s, f.vh * scale[:, None], f.weight_shape)
    return SVDFactors(out, factors.total_params)


def test_precomputed_factors_drop_in(trained, mini_data):
    own = _scaled(svd_factors(trained))
    for factors in (own, {"model": own}, lambda model: _scaled(svd_factors(model))):
        ex = RankExplorer(
            trained, mini_data, factors=factors, param_reduction=0.5, settle_seconds=None
        )
        full = compress_from_factors(trained, own, ex.ranks)
        assert (
            ex.last["test_acc"] == evaluate(full, (mini_data.x_test, mini_data.y_test))["accuracy"]
        )
        assert ex.last["params"] == count_params(full)
    default = RankExplorer(trained, mini_data, param_reduction=0.5, settle_seconds=None)
    assert default.last["test_loss"] != ex.last["test_loss"]  # the factors were really used
    with pytest.raises(TypeError, match="layers or factors"):
        RankExplorer(trained, mini_data, factors=own, layers="all")
    with pytest.raises(ValueError, match="factors: keys"):
        RankExplorer(trained, mini_data, factors={"other": own})
    wrong = SVDFactors({"0": next(iter(own.values()))}, own.total_params)
    with pytest.raises(ValueError, match="does not match the factors"):
        RankExplorer(trained, mini_data, factors=wrong)
    with pytest.raises(ValueError, match="one set of factors fits one model"):
        RankExplorer({"a": trained, "b": trained}, mini_data, factors=own)


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=float)


def test_the_live_figure_matches_a_fresh_drawing(trained, mini_data):
    ex = RankExplorer(trained, mini_data, drag_subset=100, settle_seconds=None)
    first = ex.image.value
    ex.reduction.value = 0.8
    live = ex.image.value
    assert live[:4] == b"\x89PNG" and live != first  # the figure follows the slider
    fig = ex.figure()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    fresh = _pixels(buf.getvalue())
    got = _pixels(live)
    assert got.shape == fresh.shape
    assert np.abs(got - fresh).mean() < 2.0  # the same picture, up to anti-aliasing
    assert ex.snapshot().data == live


def test_bad_arguments_are_named(trained, mini_data):
    with pytest.raises(ValueError, match="drag_subset"):
        RankExplorer(trained, mini_data, drag_subset=0)
    with pytest.raises(TypeError, match="data"):
        PruneExplorer(trained, "not data")


def test_a_drag_reads_as_an_estimate_with_its_interval_until_the_full_set_lands(trained, mini_data):
    async def scenario():
        ex = RankExplorer(trained, mini_data, drag_subset=100, settle_seconds=0.05)
        ex.reduction.value = 0.4
        drag = (ex.accuracy_label.value, ex._live[2]["title"].get_text(), dict(ex.last))
        await asyncio.sleep(0.6)
        return ex, drag

    ex, (label, title, last) = asyncio.run(scenario())
    assert not last["full"] and last["n_test"] == 100
    half = 100 * wilson_halfwidth(last["test_acc"], 100)
    assert 4 < half < 11  # 100 images: a binomial interval of several points
    assert "estimate" in label and f"± {half:.1f}" in label and "95 % binomial" in label
    assert f"full test set ({len(mini_data.y_test):,} images) follows" in label
    assert "estimate" in title and f"± {half:.1f}" in title
    # The full set has landed: no estimate left, in the readout or the figure.
    assert ex.last["full"] and "estimate" not in ex.accuracy_label.value
    assert "full test set" in ex.accuracy_label.value
    assert "estimate" not in ex._live[2]["title"].get_text()
    assert ex.full_seconds() is not None  # the next drag says how long the full set takes


def test_wilson_interval():
    assert wilson_halfwidth(0.5, 100) == pytest.approx(0.0962, abs=1e-4)
    assert wilson_halfwidth(1.0, 500) > 0  # never collapses at the ends
    assert wilson_halfwidth(0.9, 10_000) < wilson_halfwidth(0.9, 500)


def test_flops_beside_parameters_equal_count_flops_of_the_compressed_model(trained, mini_data):
    x = mini_data.x_test[:1]
    ex = RankExplorer(trained, mini_data, param_reduction=0.5, settle_seconds=None)
    for reduction in (0.0, 0.5, 0.8):
        ex.reduction.value = reduction
        assert ex.last["flops"] == count_flops(ex.compressed_model(), x)
        assert ex.last["total_flops"] == count_flops(trained, x)
    name = list(ex.rank_sliders)[1]
    ex.rank_sliders[name].value = 1
    assert ex.last["flops"] == count_flops(ex.compressed_model(), x)
    assert "FLOPs per image: <b>" in ex.params_label.value
    pruner = PruneExplorer(trained, mini_data, param_reduction=0.5, settle_seconds=None)
    assert pruner.last["flops"] == pruner.last["total_flops"]  # zeros still run dense
    assert "zeroed weights still run in dense kernels" in pruner.params_label.value
    pruner.method.value = list(PRUNE_METHODS)[1]  # channels: a smaller network
    assert pruner.last["flops"] == count_flops(pruner.compressed_model(), x)
    assert pruner.last["flops"] < pruner.last["total_flops"]


def test_sliders_step_finely_and_rank_sliders_show_their_maximum(trained, mini_data):
    ex = RankExplorer(trained, mini_data, settle_seconds=None)
    assert ex.reduction.step == 0.005 and ex.reduction.readout_format == ".1%"
    for name, slider in ex.rank_sliders.items():
        assert ex.rank_max_labels[name].value == f"/ {slider.max}"
    pruner = PruneExplorer(trained, mini_data, settle_seconds=None)
    assert pruner.reduction.step == 0.005


def test_settings_is_a_dict_and_save_writes_a_model_that_loads_back(trained, mini_data, tmp_path):
    arch = {"name": "cnn", "in_channels": 1, "num_classes": 10, "width": 8, "image_size": 28}
    ex = RankExplorer(trained, mini_data, settle_seconds=None, arch=arch, save_dir=tmp_path / "s")
    ex.reduction.value = 0.6 - 0.1 + 1e-17  # a float off by rounding, as slider steps give
    settings = ex.settings()
    assert settings["target_reduction"] == 0.5 and isinstance(settings["ranks"], dict)
    assert settings["ranks"] == ex.ranks and settings["allocation"] == "energy"
    path = ex.save(tmp_path / "choice.pt")
    record = json.loads((tmp_path / "choice.settings.json").read_text())
    assert record["settings"] == settings and record["model_file"] == "choice.pt"
    assert record["measurement"]["params"] == ex.last["params"]
    loaded = load_compressed(path)  # arch recorded: no base model needed
    assert count_params(loaded) == ex.last["params"]
    x = mini_data.x_test[:64]
    torch.testing.assert_close(loaded(x), ex.compressed_model().eval()(x))
    # The Save button does the same into save_dir, and shows where.
    ex.save_button.click()
    saved = list((tmp_path / "s").glob("*.pt"))
    assert len(saved) == 1 and str(saved[0].resolve()) in ex.saved_label.value
    assert count_params(load_compressed(saved[0])) == ex.last["params"]
    # Without arch, loading needs the uncompressed model.
    pruner = PruneExplorer(trained, mini_data, settle_seconds=None, save_dir=tmp_path / "p")
    pruner.save_button.click()
    (pt,) = (tmp_path / "p").glob("*.pt")
    assert pt.name == "model-prune_magnitude-50.0pct.pt"
    assert count_params(load_compressed(pt, base=trained)) == pruner.last["params"]
    assert pruner.settings() == {
        "model": "model",
        "method": list(PRUNE_METHODS)[0],
        "pruner": "prune_magnitude",
        "target_reduction": 0.5,
    }


def test_a_failed_save_is_shown_in_the_status_line(trained, mini_data, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    ex = PruneExplorer(trained, mini_data, settle_seconds=None, save_dir=blocker)
    ex.save_button.click()
    assert "Error" in ex.status.value and ex.saved_label.value == ""

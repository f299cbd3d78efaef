"""Widget callbacks, driven by setting ``.value`` as a browser would, move the readouts."""

from __future__ import annotations

import asyncio
import re

import pytest

from smoothviz.config import TrainConfig
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
    ex = PruneExplorer({"a": trained}, mini_data, ratio=0.0, drag_subset=100, settle_seconds=None)
    acc0, params0 = _pct(ex.accuracy_label), _params(ex.params_label)
    ex.ratio.value = 0.7
    assert _params(ex.params_label) < params0
    assert _pct(ex.accuracy_label) != acc0
    ex.method.value = list(PRUNE_METHODS)[1]
    assert ex.summary().loc[0, "method"] == list(PRUNE_METHODS)[1]


def test_callback_errors_are_shown_in_the_widget(trained, mini_data, monkeypatch):
    ex = RankExplorer(trained, mini_data, drag_subset=100, settle_seconds=None)

    def broken():
        raise RuntimeError("boom <b>")

    monkeypatch.setattr(ex, "compressed_model", broken)
    ex.rank_sliders[next(iter(ex.rank_sliders))].value = 2
    assert "RuntimeError: boom &lt;b&gt;" in ex.status.value
    with pytest.raises(RuntimeError, match="boom"):
        ex.summary()


def test_drag_uses_the_subset_then_the_full_set_once_the_slider_settles(trained, mini_data):
    async def scenario():
        ex = RankExplorer(trained, mini_data, drag_subset=100, settle_seconds=0.05)
        ex.reduction.value = 0.5
        assert ex.last["full"] is False and ex.last["n_test"] == 100
        assert "subset while moving" in ex.accuracy_label.value
        await asyncio.sleep(0.5)
        return ex

    ex = asyncio.run(scenario())
    assert ex.last["full"] is True and ex.last["n_test"] == len(mini_data.y_test)
    assert "full test set" in ex.accuracy_label.value


def test_bad_arguments_are_named(trained, mini_data):
    with pytest.raises(ValueError, match="drag_subset"):
        RankExplorer(trained, mini_data, drag_subset=0)
    with pytest.raises(TypeError, match="data"):
        PruneExplorer(trained, "not data")

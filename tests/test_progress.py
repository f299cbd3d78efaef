"""Progress bars: shown in a live notebook's kernel, silent in a papermill batch run unless asked."""

from __future__ import annotations

import pytest

from smoothviz.progress import ENV, progress_bar, progress_enabled


@pytest.fixture()
def batch(monkeypatch):
    """A kernel as papermill starts it: no Jupyter server, so no JPY_SESSION_NAME."""
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    monkeypatch.delenv(ENV, raising=False)
    return monkeypatch


def test_silent_in_a_batch_run_shown_in_a_live_notebook(batch):
    assert progress_enabled() is False
    batch.setenv("JPY_SESSION_NAME", "/home/me/05_explore.ipynb")  # what jupyter_server sets
    assert progress_enabled() is True


def test_asking_wins(batch):
    batch.setenv(ENV, "1")
    assert progress_enabled() is True
    batch.setenv("JPY_SESSION_NAME", "nb.ipynb")
    batch.setenv(ENV, "0")
    assert progress_enabled() is False
    assert progress_enabled(True) is True and progress_enabled(False) is False
    with pytest.raises(TypeError, match="progress must be None, True or False"):
        progress_enabled("yes")


def test_a_disabled_bar_prints_nothing_an_asked_one_counts(batch, capsys):
    with progress_bar(10, "work") as bar:
        bar.update(4)
        assert bar.disable
    assert capsys.readouterr().err == ""
    batch.setenv(ENV, "1")
    with progress_bar(3, "work", delay=0) as bar:
        bar.update(3)
        assert not bar.disable and not bar.leave and bar.n == 3
    assert "work" in capsys.readouterr().err  # a text bar outside a notebook


def test_the_notebooks_slow_steps_follow_the_live_notebook_rule(batch, monkeypatch):
    """04's sweep and 02-05's trainings pass progress=None: a bar in a live notebook, none in
    papermill's batch run (the sweep used to run with progress=False everywhere)."""
    import smoothviz.sweep as sweep_module
    from smoothviz.notebook_params import TradeoffParams

    assert TradeoffParams().sweep_options()["progress"] is None
    seen = []
    real = sweep_module.progress_bar

    def spy(total, desc, *, progress=None, **kwargs):
        bar = real(total, desc, progress=progress, **kwargs)
        seen.append(not bar.disable)
        return bar

    monkeypatch.setattr(sweep_module, "progress_bar", spy)
    from smoothviz.data import load_dataset
    from smoothviz.models import build_model

    data = load_dataset("fashion-mnist-mini").subset(n_train=64, n_test=32, seed=0)
    model = build_model("cnn", in_channels=1, num_classes=10, width=4, image_size=28).eval()
    options = TradeoffParams(bn_reestimate=False).sweep_options() | {"latency_repeats": 1}
    sweep_module.sweep({"m": model}, ["svd"], [0.5], data, **options)
    batch.setenv("JPY_SESSION_NAME", "/home/me/04_tradeoff.ipynb")
    sweep_module.sweep({"m": model}, ["svd"], [0.5], data, **options)
    assert seen == [False, True]

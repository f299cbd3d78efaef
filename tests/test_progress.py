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
